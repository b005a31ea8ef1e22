//! profiler-server: ingest (pprof, OTLP), embedded store, query API and web UI.
//!
//! Not built yet: this crate holds the server's place in the workspace. Until it lands, the
//! agent writes profiles to files (`profiler-agent record`).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "profiler-server is not available in this version yet; record profiles to files with \
         `profiler-agent record` (see README.md)"
    );
    ExitCode::FAILURE
}
