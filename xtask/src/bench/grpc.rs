//! Entry 5, gRPC capture overhead: the real Python grpcio server of the tests
//! (`tests/fixtures/grpc/greeter_server.py`) answers unary `demo.Greeter/SayHello` calls that
//! h2load sends over cleartext HTTP/2 (a gRPC request is a POST with `content-type:
//! application/grpc` and a length-prefixed message), alone and while `profiler-agent record
//! --all --spans` captures both ends, then once more with the kernel's BPF run-time statistics
//! on. Start at [`run`]; the agent is driven by the HTTP entry's [`captured_run`], the load by
//! [`Load`].

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::http::{captured_run, cpu_time, program_table, row, stats_source, AGENT_FREQUENCY_HZ};

/// h2load's load: one thread, 4 connections with 8 calls in flight on each. The server is
/// saturated from about 8 calls in flight on (more connections or streams do not raise its
/// rate); several connections exercise the agent's per-connection state.
const CONNECTIONS: u32 = 4;
const STREAMS_PER_CONNECTION: u32 = 8;
/// Calls h2load may have started but not counted when it stops (the server may still answer
/// them, so they can add server spans).
const IN_FLIGHT: u64 = (CONNECTIONS * STREAMS_PER_CONNECTION) as u64;
/// The one message every call sends: gRPC's 5-byte prefix (not compressed, length 5), `bench`.
const MESSAGE: &[u8] = b"\x00\x00\x00\x00\x05bench";
/// The method called.
const PATH: &str = "/demo.Greeter/SayHello";
/// An unmeasured run first, so the server's thread pool and h2load's first connections are not
/// in the first repeat.
const WARM_UP_SECONDS: u64 = 1;

/// One h2load run.
struct LoadResult {
    /// Calls answered with HTTP status 2xx (h2load does not read grpc-status: the spans do).
    succeeded: u64,
    requests_per_s: f64,
    /// The server's CPU while h2load ran, % of one core.
    server_cpu: f64,
    /// h2load's CPU, % of one core.
    h2load_cpu: f64,
}

/// Whether a line of the spans file is a `SayHello` call that ended with grpc-status 0 (OK).
/// The name keeps other gRPC traffic on the machine out of the count.
fn call_ok(span: &str) -> bool {
    span.contains(r#""name":"demo.Greeter/SayHello""#)
        && span.contains(r#""rpc.grpc.status_code":0"#)
}

/// Runs the entry and returns its section of BENCHMARKS.md (without the heading).
pub fn run(
    root: &Path,
    agent: &Path,
    bench_dir: &Path,
    seconds: u64,
    repeats: usize,
) -> Result<String> {
    check_tools()?;
    let source = stats_source();
    let dir = bench_dir.join("grpc");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let body = dir.join("message.bin");
    fs::write(&body, MESSAGE).context("writing the gRPC message")?;
    let server = Server::start(root)?;
    let load = Load {
        url: format!("http://127.0.0.1:{}{PATH}", server.port),
        body,
        server_pid: server.child.id(),
    };
    load.run(WARM_UP_SECONDS)?;

    let (mut ratios, mut stats_ratios) = (Vec::new(), Vec::new());
    let (mut alone_rps, mut captured_rps) = (Vec::new(), Vec::new());
    let (mut server_alone, mut server_captured) = (Vec::new(), Vec::new());
    let (mut server_cost_ratio, mut h2load_cpu) = (Vec::new(), Vec::new());
    let (mut cpu_load, mut agent_us_per_request, mut load_rss_mib) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut ns_per_request, mut runs_per_request) = (Vec::new(), Vec::new());
    let mut captured_runs = Vec::new();
    for repeat in 1..=repeats {
        let alone = load.run(seconds)?;
        let captured = captured_run(agent, &dir, seconds, None, call_ok, || load.run(seconds))?;
        let with_stats = captured_run(agent, &dir, seconds, Some(source), call_ok, || {
            load.run(seconds)
        })?;
        let ratio = captured.load.requests_per_s / alone.requests_per_s;
        let stats_ratio = with_stats.load.requests_per_s / alone.requests_per_s;
        // Server CPU per request: the capture's cost in the server's own syscalls shows here
        // even while idle CPU keeps the throughput up.
        let server_cost = (captured.load.server_cpu / captured.load.requests_per_s)
            / (alone.server_cpu / alone.requests_per_s);
        let run_time_ns: u64 = with_stats.programs.values().map(|p| p.run_time_ns).sum();
        let run_cnt: u64 = with_stats.programs.values().map(|p| p.run_cnt).sum();
        let requests = with_stats.load.succeeded.max(1) as f64;
        let agent_us = captured.agent_cpu_during_load / 100.0 / captured.load.requests_per_s * 1e6;
        eprintln!(
            "grpc, repeat {repeat}: {:.0} req/s alone, {:.0} captured (ratio {ratio:.4}), {:.0} \
             with BPF statistics; server CPU {:.0} % alone, {:.0} % captured; h2load CPU {:.0} \
             %; agent CPU {:.1} % of a core ({agent_us:.1} us per request); eBPF {:.0} ns per \
             request; records lost {} and {}",
            alone.requests_per_s,
            captured.load.requests_per_s,
            with_stats.load.requests_per_s,
            alone.server_cpu,
            captured.load.server_cpu,
            alone.h2load_cpu,
            captured.agent_cpu_during_load,
            run_time_ns as f64 / requests,
            captured.end.records_lost,
            with_stats.end.records_lost,
        );
        ratios.push(ratio);
        stats_ratios.push(stats_ratio);
        alone_rps.push(alone.requests_per_s);
        captured_rps.push(captured.load.requests_per_s);
        server_alone.push(alone.server_cpu);
        server_captured.push(captured.load.server_cpu);
        server_cost_ratio.push(server_cost);
        h2load_cpu.push(alone.h2load_cpu);
        cpu_load.push(captured.agent_cpu_during_load);
        agent_us_per_request.push(agent_us);
        load_rss_mib.push(captured.agent_peak_rss_kib_during_load as f64 / 1024.0);
        ns_per_request.push(run_time_ns as f64 / requests);
        runs_per_request.push(run_cnt as f64 / requests);
        captured_runs.push((repeat, "off", captured));
        captured_runs.push((repeat, "on", with_stats));
    }
    drop(server);
    for (repeat, stats, run) in &captured_runs {
        let extra = run.end.server_spans_ok as i64 - run.load.succeeded as i64;
        if !(0..=IN_FLIGHT as i64).contains(&extra) {
            eprintln!(
                "warning: grpc, repeat {repeat} (BPF statistics {stats}): {} server spans with \
                 grpc-status 0 for {} calls h2load completed (expected 0 to {IN_FLIGHT} more)",
                run.end.server_spans_ok, run.load.succeeded,
            );
        }
    }

    let mut section = format!(
        "The Python grpcio server of the tests (`tests/fixtures/grpc/greeter_server.py`, 8 \
         worker threads) answers unary `demo.Greeter/SayHello` calls (a {}-byte message, the \
         reply `hello bench`, grpc-status 0) that `h2load -t1 -c{CONNECTIONS} \
         -m{STREAMS_PER_CONNECTION} -H 'content-type: application/grpc' -H 'te: trailers' -d \
         message.bin` sends over cleartext HTTP/2 on 127.0.0.1: {seconds} s alone, {seconds} s \
         while `profiler-agent record --all -F {AGENT_FREQUENCY_HZ} --spans FILE` captures both \
         ends (the server's SERVER spans, h2load's CLIENT spans), then {seconds} s more with the \
         kernel's BPF run-time statistics on (the throughput ratio comes from the run without \
         them); {repeats} repeats, after a {WARM_UP_SECONDS} s warm-up. A request is one unary \
         call. Machine: {}.\n\n\
         Unlike entry 3 this load does not fill the machine. The server is the bottleneck: its \
         handlers run under Python's GIL, so it saturates at the CPU shown below (more \
         connections or streams do not raise its rate), and h2load needs little, so part of a \
         core stays idle and the agent's own CPU comes out of that rather than out of the \
         throughput. The ratio therefore shows what the capture adds to the server's own work \
         (the eBPF programs run in its syscalls) within the run-to-run noise of a Python server \
         (see the spread of requests/s alone; identical 5 s runs without the agent differed by \
         up to 10 % while this entry was written), not the agent's CPU: the agent's CPU per \
         request and the eBPF run time per request are the direct costs, and server CPU per \
         request captured / alone shows the in-syscall part.\n\n\
         Command: `cargo xtask bench --seconds {seconds} --repeats {repeats}`\n\n\
         | measure | min | median | max | target |\n|---|---|---|---|---|\n",
        MESSAGE.len(),
        super::machine(),
    );
    section += &row("requests/s, captured / alone", &ratios, 3, "", ">= 0.97");
    section += &row("requests/s alone", &alone_rps, 0, "", "");
    section += &row("requests/s captured", &captured_rps, 0, "", "");
    section += &row(
        "requests/s with BPF statistics on / alone",
        &stats_ratios,
        3,
        "",
        "",
    );
    section += &row(
        "server CPU alone, % of one core",
        &server_alone,
        0,
        " %",
        "",
    );
    section += &row(
        "server CPU captured, % of one core",
        &server_captured,
        0,
        " %",
        "",
    );
    section += &row(
        "server CPU per request, captured / alone",
        &server_cost_ratio,
        3,
        "",
        "",
    );
    section += &row("h2load CPU, % of one core", &h2load_cpu, 0, " %", "");
    section += &row(
        "agent CPU under load, % of one core",
        &cpu_load,
        1,
        " %",
        "",
    );
    section += &row(
        "agent CPU per request (a server and a client span)",
        &agent_us_per_request,
        1,
        " us",
        "",
    );
    section += &row(
        "eBPF run time per request (all HTTP programs)",
        &ns_per_request,
        0,
        " ns",
        "",
    );
    section += &row(
        "HTTP program runs per request",
        &runs_per_request,
        1,
        "",
        "",
    );
    section += &row(
        "agent peak RSS while capturing (until h2load ends)",
        &load_rss_mib,
        1,
        " MiB",
        "",
    );
    section += &program_table(
        captured_runs
            .iter()
            .filter(|(_, stats, _)| *stats == "on")
            .map(|(_, _, run)| (&run.programs, run.load.succeeded)),
    );

    let _ = write!(
        section,
        "\nEvery captured run: h2load counts calls answered with HTTP 2xx, which a gRPC server \
         sends for failed calls too, so the spans check the calls succeeded: `SayHello` spans \
         with grpc-status 0. h2load stops with up to {IN_FLIGHT} calls in flight (-c x -m) that \
         it does not count; the server may still answer them, so its spans may exceed the \
         count by that much, and those it cannot answer once h2load has closed the connection \
         end with an error status (14, UNAVAILABLE, when this was written), counted under all \
         spans only. All spans counts every span of that kind the agent wrote (other traffic \
         on the machine included). Records lost is the kernel's count of records \
         dropped because the ring buffer was full.\n\n\
         | repeat | BPF statistics | calls completed (h2load) | server spans, grpc-status 0 \
         (all) | client spans, grpc-status 0 (all) | server spans OK - calls | records lost \
         |\n|---|---|---|---|---|---|---|\n"
    );
    for (repeat, stats, run) in &captured_runs {
        let end = &run.end;
        let _ = writeln!(
            section,
            "| {repeat} | {stats} | {} | {} ({}) | {} ({}) | {} | {} |",
            run.load.succeeded,
            end.server_spans_ok,
            end.server_spans,
            end.client_spans_ok,
            end.client_spans,
            end.server_spans_ok as i64 - run.load.succeeded as i64,
            end.records_lost,
        );
    }
    Ok(section)
}

/// Installs grpcio (the tests' pinned version) and h2load when missing.
fn check_tools() -> Result<()> {
    let imports = || {
        Command::new("python3")
            .args(["-c", "import grpc"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !imports() {
        crate::pip_install(&[crate::python_requirement("grpc")])?;
        if !imports() {
            bail!("python3 still cannot import grpc after installing grpcio");
        }
    }
    if Command::new("h2load").arg("--version").output().is_err() {
        crate::apt_install(&["nghttp2-client"])?;
    }
    Ok(())
}

/// h2load's calls to the server.
struct Load {
    url: String,
    /// The file holding the message every call sends.
    body: PathBuf,
    server_pid: u32,
}

impl Load {
    /// Runs h2load for `seconds` and reads its summary; fails on failed or errored calls.
    fn run(&self, seconds: u64) -> Result<LoadResult> {
        let server_before = cpu_time(self.server_pid)?;
        let children_before = children_cpu_time()?;
        let started = Instant::now();
        let output = Command::new("h2load")
            .args(["-t", "1", "-c", &CONNECTIONS.to_string()])
            .args(["-m", &STREAMS_PER_CONNECTION.to_string()])
            .args(["-D", &seconds.to_string()])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&self.body)
            .arg(&self.url)
            .output()
            .context("running h2load")?;
        let wall = started.elapsed().as_secs_f64();
        // h2load is the only child xtask waits for meanwhile.
        let h2load = children_cpu_time()? - children_before;
        let server = cpu_time(self.server_pid)? - server_before;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "h2load failed ({}):\n{text}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let (succeeded, requests_per_s) =
            parse_h2load(&text).with_context(|| format!("reading h2load's summary:\n{text}"))?;
        Ok(LoadResult {
            succeeded,
            requests_per_s,
            server_cpu: server.as_secs_f64() / wall * 100.0,
            h2load_cpu: h2load.as_secs_f64() / wall * 100.0,
        })
    }
}

/// CPU time of the children xtask has waited for so far (getrusage(RUSAGE_CHILDREN)).
fn children_cpu_time() -> Result<Duration> {
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes into a local we own.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage(RUSAGE_CHILDREN)");
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

/// Calls completed with a 2xx status and requests per second, from `finished in 3.01s, 2971.00
/// req/s, ...` and `requests: ... 8913 succeeded, 0 failed, 0 errored, ...`; fails on failed or
/// errored calls.
fn parse_h2load(text: &str) -> Result<(u64, f64)> {
    let requests_per_s = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .context("no `req/s` in h2load's `finished in` line")?;
    let requests = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .context("no `requests:` line")?;
    let count = |label: &str| -> Result<u64> {
        requests
            .split(", ")
            .find_map(|part| part.strip_suffix(label)?.parse().ok())
            .with_context(|| format!("no `{label}` in h2load's line: {requests}"))
    };
    let (failed, errored) = (count(" failed")?, count(" errored")?);
    if failed + errored > 0 {
        bail!("h2load saw {failed} failed and {errored} errored calls");
    }
    let succeeded = count(" succeeded")?;
    if succeeded == 0 {
        bail!("h2load completed no call");
    }
    Ok((succeeded, requests_per_s))
}

/// The grpcio server, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(root: &Path) -> Result<Server> {
        let port = super::free_port()?;
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
            bail!("the grpcio server did not start (it printed {line:?}; its errors are above)");
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: the server stops with 1 s of grace and exits.
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
        let (succeeded, requests_per_s) = parse_h2load(text).expect("parses");
        assert_eq!(succeeded, 8913);
        assert!((requests_per_s - 2971.0).abs() < 1e-9);
        let failing = text.replace("0 failed", "3 failed");
        assert!(parse_h2load(&failing).is_err());
    }

    #[test]
    fn only_ok_say_hello_spans_count() {
        let span = |name: &str, code: u32| {
            format!(r#"{{"kind":"server","name":"{name}","attributes":{{"#)
                + &format!(r#""rpc.grpc.status_code":{code},"rpc.system":"grpc"}}}}"#)
        };
        assert!(call_ok(&span("demo.Greeter/SayHello", 0)));
        assert!(!call_ok(&span("demo.Greeter/SayHello", 5)));
        assert!(!call_ok(&span("demo.Greeter/Fail", 0)));
    }
}
