//! Entry 5, gRPC capture overhead: the real Python grpcio server of the tests
//! (`tests/fixtures/grpc/greeter_server.py`) answers unary `demo.Greeter/SayHello` calls that
//! h2load sends over cleartext HTTP/2 (a gRPC request is a POST with `content-type:
//! application/grpc` and a length-prefixed message), alone and while `profiler-agent record
//! --all --spans` captures both ends. Reuses the HTTP entry's agent driver ([`Capture`]).

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::http::{row, Capture, AGENT_FREQUENCY_HZ};

/// h2load's load: one thread, 4 connections with 8 calls in flight on each.
const CONNECTIONS: u32 = 4;
const STREAMS_PER_CONNECTION: u32 = 8;
/// The one message every call sends: gRPC's 5-byte prefix (not compressed, length 5), `bench`.
const MESSAGE: &[u8] = b"\x00\x00\x00\x00\x05bench";
/// The method called.
const PATH: &str = "/demo.Greeter/SayHello";

/// One h2load run.
struct LoadResult {
    /// Calls that completed with a 2xx status.
    succeeded: u64,
    calls_per_s: f64,
}

/// Runs the entry and returns its section of BENCHMARKS.md (without the heading).
pub fn run(
    root: &Path,
    agent: &Path,
    bench_dir: &Path,
    seconds: u64,
    repeats: usize,
) -> Result<String> {
    let imports = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !imports {
        bail!("python3 cannot import grpc: pip install grpcio (or run `cargo xtask test` once)");
    }
    if Command::new("h2load").arg("--version").output().is_err() {
        bail!("h2load is missing: apt-get install nghttp2-client");
    }
    let dir = bench_dir.join("grpc");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let body = dir.join("message.bin");
    fs::write(&body, MESSAGE).context("writing the gRPC message")?;
    let server = Server::start(root)?;
    let url = format!("http://127.0.0.1:{}{PATH}", server.port);

    let (mut ratios, mut alone_cps, mut captured_cps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_load, mut span_ratio, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    for repeat in 1..=repeats {
        let alone = run_load(&url, &body, seconds)?;
        let capture = Capture::start(agent, &dir, seconds)?;
        let cpu_before = capture.cpu_time()?;
        let started = Instant::now();
        let captured = run_load(&url, &body, seconds)?;
        let wall = started.elapsed();
        let cpu = (capture.cpu_time()? - cpu_before).as_secs_f64() / wall.as_secs_f64() * 100.0;
        let end = capture.stop()?;
        let ratio = captured.calls_per_s / alone.calls_per_s;
        // Both ends are captured: the server's spans and h2load's.
        let spans_per_call = end.server_spans as f64 / captured.succeeded.max(1) as f64;
        eprintln!(
            "grpc, repeat {repeat}: {:.0} calls/s alone, {:.0} captured (ratio {ratio:.4}); agent \
             CPU {cpu:.1} % of a core; {} server and {} client spans for {} calls; records lost {}",
            alone.calls_per_s,
            captured.calls_per_s,
            end.server_spans,
            end.client_spans,
            captured.succeeded,
            end.records_lost,
        );
        ratios.push(ratio);
        alone_cps.push(alone.calls_per_s);
        captured_cps.push(captured.calls_per_s);
        cpu_load.push(cpu);
        span_ratio.push(spans_per_call);
        lost.push(end.records_lost as f64);
    }
    drop(server);

    let mut section = format!(
        "The Python grpcio server of the tests (`tests/fixtures/grpc/greeter_server.py`, 8 \
         worker threads) answers unary `demo.Greeter/SayHello` calls that `h2load -t1 \
         -c{CONNECTIONS} -m{STREAMS_PER_CONNECTION}` sends over cleartext HTTP/2 (POST with \
         `content-type: application/grpc`, a 10-byte message): {seconds} s alone, then {seconds} \
         s while `profiler-agent record --all -F {AGENT_FREQUENCY_HZ} --spans FILE` captures \
         both ends (the server's SERVER spans, h2load's CLIENT spans), {repeats} repeats. The \
         server is CPU-bound in Python, so the ratio shows what the capture takes from it on \
         this 2-core machine.\n\nCommand: `cargo xtask bench --seconds {seconds} --repeats \
         {repeats}`\n\n| measure | min | median | max | target |\n|---|---|---|---|---|\n"
    );
    section += &row("calls/s alone", &alone_cps, 0, "", "");
    section += &row("calls/s captured", &captured_cps, 0, "", "");
    section += &row("throughput, captured / alone", &ratios, 4, "", ">= 0.97");
    section += &row(
        "agent CPU under load, % of one core",
        &cpu_load,
        1,
        " %",
        "",
    );
    section += &row(
        "server spans per completed call",
        &span_ratio,
        4,
        "",
        "1 (+ calls in flight at the end)",
    );
    section += &row("records lost", &lost, 0, "", "0");
    let _ = writeln!(section);
    Ok(section)
}

/// Runs h2load against `url` and reads its summary; fails on failed or errored calls.
fn run_load(url: &str, body: &Path, seconds: u64) -> Result<LoadResult> {
    let output = Command::new("h2load")
        .args(["-t", "1", "-c", &CONNECTIONS.to_string()])
        .args(["-m", &STREAMS_PER_CONNECTION.to_string()])
        .args(["-D", &seconds.to_string()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg(url)
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed ({}):\n{text}", output.status);
    }
    parse_h2load(&text)
}

/// `finished in 3.01s, 2971.00 req/s, ...` and `requests: ... 8913 succeeded, 0 failed, 0
/// errored, ...`.
fn parse_h2load(text: &str) -> Result<LoadResult> {
    let calls_per_s = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .with_context(|| format!("no `req/s` in h2load's output:\n{text}"))?;
    let requests = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .with_context(|| format!("no `requests:` line in h2load's output:\n{text}"))?;
    let count = |label: &str| -> Result<u64> {
        requests
            .split(", ")
            .find_map(|part| part.strip_suffix(label)?.parse().ok())
            .with_context(|| format!("no `{label}` in h2load's line: {requests}"))
    };
    let (failed, errored) = (count(" failed")?, count(" errored")?);
    if failed + errored > 0 {
        bail!("h2load saw {failed} failed and {errored} errored calls:\n{text}");
    }
    Ok(LoadResult {
        succeeded: count(" succeeded")?,
        calls_per_s,
    })
}

/// The grpcio server, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(root: &Path) -> Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let mut child = Command::new("python3")
            .arg(root.join("tests/fixtures/grpc/greeter_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the grpcio server")?;
        let stdout = child.stdout.take().context("the server has no stdout")?;
        let mut line = String::new();
        let server = Server { child, port };
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the server's output")?;
        if line.trim() != "ready" {
            bail!("the grpcio server did not start: {line:?}");
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_summary_is_read() {
        let text = "finished in 3.01s, 2971.00 req/s, 209.02KB/s\nrequests: 8913 total, 8945 \
                    started, 8913 done, 8913 succeeded, 0 failed, 0 errored, 0 timeout\n";
        let result = parse_h2load(text).expect("parses");
        assert_eq!(result.succeeded, 8913);
        assert!((result.calls_per_s - 2971.0).abs() < 1e-9);
        let failing = text.replace("0 failed", "3 failed");
        assert!(parse_h2load(&failing).is_err());
    }
}
