//! `profiler-server`: parses the command line, sets up logging, runs [`Server`] until SIGINT
//! or SIGTERM, then shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use profiler_server::{Config, Server};

/// Stores CPU profiles, traces and RED metrics, and serves the query API and web UI.
///
/// HTTP (API, pprof and Pyroscope ingest, UI) and OTLP/gRPC (traces, metrics, profiles) run
/// on one runtime; data lives in DATA_DIR/profiler.sqlite3. The API is in docs/api.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory of the on-disk store (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Address of the HTTP API, HTTP ingest and web UI.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4040")]
    listen: SocketAddr,

    /// Address of the OTLP/gRPC receiver (traces, metrics, profiles).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4317")]
    otlp_listen: SocketAddr,

    /// Delete data older than this, e.g. `7d`, `36h`, `90m`.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    retention: Duration,

    /// How often the retention job runs (it also runs at start).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    retention_interval: Duration,

    /// Require `Authorization: Bearer TOKEN` on /api and /ingest (health checks and UI files
    /// stay open).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PROFILER_AUTH_TOKEN",
        hide_env_values = true
    )]
    auth_token: Option<String>,

    /// Largest request body (HTTP) or message (gRPC) accepted, e.g. `16MiB`, `1048576`.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    max_body_bytes: usize,
}

/// Parses a byte size: a number with an optional `B`, `KiB`, `MiB`, `GiB` (or `K`/`M`/`G`,
/// `KB`/`MB`/`GB` as powers of 1000) suffix.
fn parse_bytes(input: &str) -> Result<usize, String> {
    let s = input.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{input:?} is not a size like 16MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{input:?} is out of range"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("profiler-server")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::start(Config {
            data_dir: args.data_dir,
            listen: args.listen,
            otlp_listen: args.otlp_listen,
            retention: args.retention,
            retention_interval: args.retention_interval,
            auth_token: args.auth_token,
            max_body_bytes: args.max_body_bytes,
        })
        .await?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        server.shutdown().await
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2 KiB"), Ok(2048));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("5TiB").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
