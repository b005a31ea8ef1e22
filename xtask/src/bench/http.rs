//! Entry 3, HTTP capture overhead: nginx serves a small static file to wrk over loopback keep-alive
//! connections, alone and while `profiler-agent record --all --spans` captures every exchange,
//! then once more with the kernel's BPF run-time statistics on (see [`bpf_stats`]), and once with
//! empty programs on the same tracepoints ([`EmptyPrograms`]: what tracing the syscalls costs
//! before the capture does anything). Start at
//! [`run`]; [`captured_run`] runs a load under one agent ([`Capture`]) and is shared with the gRPC
//! entry, [`Nginx`] is the server.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    bpf_stats::{self, ProgramStats, Source, StatsEnabled},
    spread, wait_with_usage, Usage,
};

/// wrk's load: one thread (nginx has one worker), enough connections to keep both busy.
const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 16;
/// Sampling frequency of the agent while it captures (the deployment default).
pub(super) const AGENT_FREQUENCY_HZ: u64 = 19;
/// How long the agent may take to load and attach before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One wrk run.
struct WrkResult {
    /// Responses wrk completed (in-flight requests at the end are not counted).
    requests: u64,
    requests_per_s: f64,
}

/// What the agent captured in one run.
pub(super) struct CaptureEnd {
    pub(super) usage: Usage,
    pub(super) server_spans: u64,
    pub(super) client_spans: u64,
    /// Server spans [`Capture::stop`]'s `ok` accepted.
    pub(super) server_spans_ok: u64,
    /// Client spans carrying it.
    pub(super) client_spans_ok: u64,
    /// The kernel's `records lost` counter (ring buffer full).
    pub(super) records_lost: u64,
}

/// One run of a load generator (`L` is what it reports) while the agent captures.
pub(super) struct CapturedRun<L> {
    pub(super) load: L,
    pub(super) end: CaptureEnd,
    /// Agent CPU while the load ran, % of one core.
    pub(super) agent_cpu_during_load: f64,
    /// The agent's peak RSS until the load ended (before it symbolizes and writes the profile).
    pub(super) agent_peak_rss_kib_during_load: u64,
    /// Per HTTP program, what the kernel accounted while the load ran (when statistics were
    /// on).
    pub(super) programs: BTreeMap<String, ProgramStats>,
}

/// Whether a line of the spans file is a successful HTTP exchange: nginx answers nothing but 200
/// here.
fn http_ok(span: &str) -> bool {
    span.contains(r#""http.response.status_code":200"#)
}

/// Runs the entry and returns its section of BENCHMARKS.md (without the heading).
pub fn run(agent: &Path, bench_dir: &Path, seconds: u64, repeats: usize) -> Result<String> {
    let source = install_tools()?;
    let dir = bench_dir.join("http");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nginx = Nginx::start(&dir)?;

    let mut ratios = Vec::new();
    let mut stats_ratios = Vec::new();
    let mut alone_rps = Vec::new();
    let mut captured_rps = Vec::new();
    let mut cpu_life = Vec::new();
    let mut cpu_load = Vec::new();
    let mut rss_mib = Vec::new();
    let mut load_rss_mib = Vec::new();
    let mut ns_per_request = Vec::new();
    let mut ns_per_run = Vec::new();
    let mut runs_per_request = Vec::new();
    let mut captured_runs = Vec::new();
    let mut empty_ratios = Vec::new();
    for repeat in 1..=repeats {
        let alone = run_wrk(&nginx.url, seconds)?;
        let empty = {
            let _programs = EmptyPrograms::attach(&dir)?;
            run_wrk(&nginx.url, seconds)?
        };
        empty_ratios.push(empty.requests_per_s / alone.requests_per_s);
        let wrk = || run_wrk(&nginx.url, seconds);
        let captured = captured_run(agent, &dir, seconds, None, http_ok, wrk)?;
        let with_stats = captured_run(agent, &dir, seconds, Some(source), http_ok, wrk)?;
        let ratio = captured.load.requests_per_s / alone.requests_per_s;
        let stats_ratio = with_stats.load.requests_per_s / alone.requests_per_s;
        let run_time_ns: u64 = with_stats.programs.values().map(|p| p.run_time_ns).sum();
        let run_cnt: u64 = with_stats.programs.values().map(|p| p.run_cnt).sum();
        let requests = with_stats.load.requests.max(1) as f64;
        let usage = &captured.end.usage;
        eprintln!(
            "http, repeat {repeat}: {:.0} req/s alone, {:.0} with empty programs, {:.0} captured \
             (ratio {ratio:.4}), {:.0} with BPF statistics; eBPF {:.0} ns per request ({:.1} runs of {:.0} ns); agent CPU \
             {:.1} % of a core under load; records lost {} and {}",
            alone.requests_per_s,
            empty.requests_per_s,
            captured.load.requests_per_s,
            with_stats.load.requests_per_s,
            run_time_ns as f64 / requests,
            run_cnt as f64 / requests,
            run_time_ns as f64 / run_cnt.max(1) as f64,
            captured.agent_cpu_during_load,
            captured.end.records_lost,
            with_stats.end.records_lost,
        );
        ratios.push(ratio);
        stats_ratios.push(stats_ratio);
        alone_rps.push(alone.requests_per_s);
        captured_rps.push(captured.load.requests_per_s);
        cpu_life.push(usage.cpu.as_secs_f64() / usage.wall.as_secs_f64() * 100.0);
        cpu_load.push(captured.agent_cpu_during_load);
        rss_mib.push(usage.max_rss_kib as f64 / 1024.0);
        load_rss_mib.push(captured.agent_peak_rss_kib_during_load as f64 / 1024.0);
        ns_per_request.push(run_time_ns as f64 / requests);
        ns_per_run.push(run_time_ns as f64 / run_cnt.max(1) as f64);
        runs_per_request.push(run_cnt as f64 / requests);
        captured_runs.push((repeat, "off", captured));
        captured_runs.push((repeat, "on", with_stats));
    }
    drop(nginx);

    let mut section = format!(
        "nginx (one worker, `access_log off`, `sendfile on`) serves a {STATIC_FILE_BYTES}-byte \
         static file on 127.0.0.1 to `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}` over keep-alive \
         connections: {seconds} s alone, {seconds} s while `profiler-agent record --all -F \
         {AGENT_FREQUENCY_HZ} --spans FILE` captures every HTTP exchange on the machine \
         (nginx's server side and wrk's client side), then {seconds} s more with the kernel's \
         BPF run-time statistics on (`kernel.bpf_stats_enabled=1`, which costs time itself, so \
         the throughput ratio comes from the run without them); {repeats} repeats. nginx and wrk \
         each keep a core busy, so this is the highest rate the box sustains and whatever CPU \
         the capture takes shows in the throughput. The agent starts before wrk (wrk begins once \
         the capture is attached) and stops with SIGINT after it.\n\n\
         eBPF time per request is the run time the kernel accounted to the seven HTTP programs \
         while wrk ran (read with {}), divided by the requests wrk completed: every syscall of \
         nginx and wrk passes through them. It covers the program bodies only; the syscall \
         tracepoints' own path (the slow syscall entry and exit, building each tracepoint \
         record) is not in it but is in the throughput ratio. Agent CPU under load is its CPU \
         time while wrk ran; over its whole life includes loading and symbolizing the profile \
         at the end (where the peak RSS is reached too).\n\n\
         Empty programs: bpftrace attaches a program that does nothing to each of the {} \
         syscall tracepoints the capture uses, and wrk runs {seconds} s more. That ratio is the \
         floor of any capture built on these tracepoints: once one syscall tracepoint has a \
         program, every syscall of every task takes the kernel's slow path and each traced one \
         builds a tracepoint record and runs a program.\n\n\
         Command: `cargo xtask bench --seconds {seconds} --repeats {repeats}`\n\n\
         | measure | min | median | max | target |\n|---|---|---|---|---|\n",
        source.describe(),
        http_tracepoints().len(),
    );
    section += &row("requests/s, captured / alone", &ratios, 3, "", ">= 0.97");
    section += &row(
        "requests/s, empty programs on the same tracepoints / alone",
        &empty_ratios,
        3,
        "",
        "",
    );
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
        "eBPF run time per request (all HTTP programs)",
        &ns_per_request,
        0,
        " ns",
        "< 500 ns",
    );
    section += &row(
        "HTTP program runs per request",
        &runs_per_request,
        1,
        "",
        "",
    );
    section += &row("eBPF run time per program run", &ns_per_run, 0, " ns", "");
    section += &row(
        "agent CPU under load, % of one core",
        &cpu_load,
        1,
        " %",
        "",
    );
    section += &row(
        "agent CPU over its whole life, % of one core",
        &cpu_life,
        1,
        " %",
        "",
    );
    section += &row(
        "agent peak RSS while capturing (until wrk ends)",
        &load_rss_mib,
        1,
        " MiB",
        "",
    );
    section += &row(
        "agent peak RSS over its whole life",
        &rss_mib,
        1,
        " MiB",
        "",
    );

    section += &program_table(
        captured_runs
            .iter()
            .filter(|(_, stats, _)| *stats == "on")
            .map(|(_, _, run)| (&run.programs, run.load.requests)),
    );

    section += "\nEvery captured run: wrk counts completed responses only, so spans may exceed it \
                by the requests in flight when wrk stops (at most one per connection). Records \
                lost is the kernel's count of exchanges dropped because the ring buffer was \
                full.\n\n\
                | repeat | BPF statistics | requests completed (wrk) | server spans (status \
                200) | client spans | server spans - requests | records lost |\n\
                |---|---|---|---|---|---|---|\n";
    for (repeat, stats, run) in &captured_runs {
        let end = &run.end;
        let _ = writeln!(
            section,
            "| {repeat} | {stats} | {} | {} ({}) | {} | {} | {} |",
            run.load.requests,
            end.server_spans,
            end.server_spans_ok,
            end.client_spans,
            end.server_spans as i64 - run.load.requests as i64,
            end.records_lost,
        );
    }
    Ok(section)
}

/// One table row: min / median / max with `precision` decimals.
pub(super) fn row(
    name: &str,
    values: &[f64],
    precision: usize,
    unit: &str,
    target: &str,
) -> String {
    let (min, median, max) = spread(values);
    format!(
        "| {name} | {min:.precision$}{unit} | {median:.precision$}{unit} | \
         {max:.precision$}{unit} | {target} |\n"
    )
}

/// The per-program table: runs, run time per run and per request, summed over `runs` (each the
/// programs' statistics of a run with statistics on and the requests completed meanwhile).
pub(super) fn program_table<'a>(
    runs: impl IntoIterator<Item = (&'a BTreeMap<String, ProgramStats>, u64)>,
) -> String {
    let mut table = String::from(
        "\nPer program, summed over the runs with statistics on:\n\n\
         | program | runs per request | ns per run | ns per request |\n|---|---|---|---|\n",
    );
    let mut requests = 0;
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (programs, completed) in runs {
        requests += completed;
        for (name, program) in programs {
            let total = totals.entry(name).or_default();
            total.0 += program.run_time_ns;
            total.1 += program.run_cnt;
        }
    }
    for name in bpf_stats::http_program_names() {
        let (run_time_ns, run_cnt) = totals.get(name).copied().unwrap_or_default();
        let _ = writeln!(
            table,
            "| {name} | {:.2} | {:.0} | {:.1} |",
            run_cnt as f64 / requests.max(1) as f64,
            run_time_ns as f64 / run_cnt.max(1) as f64,
            run_time_ns as f64 / requests.max(1) as f64,
        );
    }
    table
}

/// Installs nginx, wrk and bpftool when missing; returns where program statistics come from.
fn install_tools() -> Result<Source> {
    // Spawning is the test: `wrk -v` exits 1 after printing its version.
    let runs = |program: &str| {
        Command::new(program)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let missing: Vec<&str> = [("nginx", "nginx"), ("wrk", "wrk"), ("bpftrace", "bpftrace")]
        .into_iter()
        .filter(|(program, _)| !runs(program))
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        crate::apt_install(&missing)?;
    }
    Ok(stats_source())
}

/// Installs bpftool when missing; returns where program statistics come from.
pub(super) fn stats_source() -> Source {
    if !bpf_stats::have_bpftool() {
        if let Err(error) = crate::apt_install(&["bpftool"]) {
            eprintln!("note: cannot install bpftool ({error:#}); reading fdinfo instead");
        }
    }
    if bpf_stats::have_bpftool() {
        Source::Bpftool
    } else {
        Source::Fdinfo
    }
}

/// Size of the file nginx serves (the order of a small JSON answer or nginx's welcome page).
const STATIC_FILE_BYTES: usize = 512;

/// A private nginx on a free loopback port, stopped on drop.
struct Nginx {
    child: Child,
    url: String,
}

impl Nginx {
    fn start(dir: &Path) -> Result<Nginx> {
        let www = dir.join("www");
        fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        fs::write(www.join("index.html"), "x".repeat(STATIC_FILE_BYTES))
            .context("writing nginx's static file")?;
        let port = super::free_port()?;
        let dir_text = dir.display();
        let config = format!(
            "# Written by `cargo xtask bench`.\n\
             worker_processes 1;\n\
             pid \"{dir_text}/nginx.pid\";\n\
             error_log \"{dir_text}/error.log\";\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    sendfile on;\n    server {{\n        \
             listen 127.0.0.1:{port};\n        root \"{dir_text}/www\";\n    }}\n}}\n"
        );
        let config_path = dir.join("nginx.conf");
        fs::write(&config_path, config).context("writing nginx.conf")?;
        let error_log = dir.join("error.log");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("nginx.stderr")).context("creating nginx.stderr")?)
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}/index.html"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = nginx.child.try_wait().context("waiting for nginx")?;
            if exited.is_some() || Instant::now() > deadline {
                let log = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
                bail!(
                    "nginx did not start listening on 127.0.0.1:{port} ({}):\n{}{}",
                    exited.map_or("still not listening after 10 s".into(), |s| s.to_string()),
                    log("nginx.stderr"),
                    log("error.log")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown; the worker exits with the master.
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The syscall tracepoints the HTTP capture attaches to.
fn http_tracepoints() -> Vec<&'static str> {
    profiler_common::HTTP_PROGRAMS
        .iter()
        .flat_map(|(_, tracepoints)| tracepoints.iter().copied())
        .collect()
}

/// bpftrace holding a program that does nothing on every tracepoint of [`http_tracepoints`];
/// detached (SIGINT) on drop.
struct EmptyPrograms {
    child: Child,
}

impl EmptyPrograms {
    fn attach(dir: &Path) -> Result<EmptyPrograms> {
        let probes: Vec<String> = http_tracepoints()
            .iter()
            .map(|name| format!("tracepoint:syscalls:{name}"))
            .collect();
        let log = dir.join("bpftrace-empty.log");
        let mut child = Command::new("bpftrace")
            .arg("-e")
            .arg(format!("{} {{ }}", probes.join(", ")))
            .stdout(Stdio::piped())
            .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .context("starting bpftrace")?;
        // bpftrace prints "Attaching N probes..." before attaching them, then nothing: give it
        // a moment after the line.
        let stdout = child.stdout.take().context("bpftrace's stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .context("reading bpftrace's output")?;
        let programs = EmptyPrograms { child };
        if !line.starts_with("Attaching") {
            bail!(
                "bpftrace did not attach its empty programs: {line}{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_secs(2));
        Ok(programs)
    }
}

impl Drop for EmptyPrograms {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Runs wrk against `url` and reads its summary; fails on socket errors or non-2xx answers.
fn run_wrk(url: &str, seconds: u64) -> Result<WrkResult> {
    let output = Command::new("wrk")
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}):\n{text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's summary:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<WrkResult> {
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        bail!("wrk saw errors: {}", line.trim());
    }
    // "  52515 requests in 3.01s, 12.02MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())
        .context("no `N requests in` line")?;
    let requests_per_s = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:")?.trim().parse().ok())
        .context("no `Requests/sec:` line")?;
    if requests == 0 {
        bail!("wrk completed no request");
    }
    Ok(WrkResult {
        requests,
        requests_per_s,
    })
}

/// Runs `load` (which runs for about `seconds`) while the agent captures; with `stats`, BPF
/// statistics are on and the HTTP programs' run time while the load ran is read from `stats`.
/// `ok` tells a successful span from its line in the spans file (see [`Capture::stop`]).
pub(super) fn captured_run<L>(
    agent: &Path,
    dir: &Path,
    seconds: u64,
    stats: Option<Source>,
    ok: fn(&str) -> bool,
    load: impl FnOnce() -> Result<L>,
) -> Result<CapturedRun<L>> {
    let capture = Capture::start(agent, dir, seconds)?;
    let enabled = stats.map(|_| StatsEnabled::enable()).transpose()?;
    let before = match stats {
        Some(source) => bpf_stats::http_programs(capture.pid(), source)?,
        None => BTreeMap::new(),
    };
    let cpu_before = capture.cpu_time()?;
    let load_started = Instant::now();
    let load = load()?;
    let load_wall = load_started.elapsed();
    let cpu_after = capture.cpu_time()?;
    let agent_peak_rss_kib_during_load = capture.peak_rss_kib()?;
    let after = match stats {
        Some(source) => bpf_stats::http_programs(capture.pid(), source)?,
        None => BTreeMap::new(),
    };
    drop(enabled);
    let end = capture.stop(ok)?;
    let programs = after
        .into_iter()
        .map(|(name, later)| {
            let earlier = before.get(&name);
            let delta = ProgramStats {
                name: name.clone(),
                run_time_ns: later
                    .run_time_ns
                    .saturating_sub(earlier.map_or(0, |e| e.run_time_ns)),
                run_cnt: later
                    .run_cnt
                    .saturating_sub(earlier.map_or(0, |e| e.run_cnt)),
            };
            (name, delta)
        })
        .collect();
    Ok(CapturedRun {
        agent_cpu_during_load: (cpu_after - cpu_before).as_secs_f64() / load_wall.as_secs_f64()
            * 100.0,
        agent_peak_rss_kib_during_load,
        load,
        end,
        programs,
    })
}

/// CPU time the process `pid` used so far (all its threads), from /proc/<pid>/stat.
pub(super) fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which ends with the last ')': state is field 3,
    // utime and stime fields 14 and 15 (proc(5)).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {} in {path}: {stat}", index + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_s = u64::try_from(ticks_per_s)
        .ok()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK) failed")?;
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / ticks_per_s as f64))
}

/// The peak RSS of the process `pid` so far (VmHWM in /proc/<pid>/status).
pub(super) fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no VmHWM in {path}"))
}

/// A running `profiler-agent record --all --spans`, killed on drop unless stopped.
struct Capture {
    child: Child,
    started: Instant,
    stopped: bool,
    log: PathBuf,
    spans: PathBuf,
    profile: PathBuf,
}

impl Capture {
    /// Starts the agent and returns once its capture is attached: the agent creates the spans
    /// file right after attaching the HTTP programs and turning them on.
    fn start(agent: &Path, dir: &Path, seconds: u64) -> Result<Capture> {
        let spans = dir.join("spans.jsonl");
        let profile = dir.join("p.pb.gz");
        for file in [&spans, &profile] {
            if file.exists() {
                fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
            }
        }
        let log = dir.join("agent.log");
        // The child starts from xtask's own peak RSS (vfork): reset it so the agent's is its own.
        super::reset_peak_rss()?;
        let child = Command::new(agent)
            .args(["record", "--all", "--quiet", "-F"])
            .arg(AGENT_FREQUENCY_HZ.to_string())
            // A backstop only: the bench stops the agent with SIGINT once the load is done.
            .arg("-d")
            .arg((seconds + 120).to_string())
            .arg("--spans")
            .arg(&spans)
            .arg("-o")
            .arg(&profile)
            .stdout(Stdio::null())
            .stderr(File::create(&log).context("creating agent.log")?)
            .spawn()
            .context("starting the agent")?;
        let mut capture = Capture {
            child,
            started: Instant::now(),
            stopped: false,
            log,
            spans,
            profile,
        };
        while !capture.spans.exists() {
            if let Some(status) = capture.child.try_wait().context("waiting for the agent")? {
                capture.stopped = true;
                bail!(
                    "the agent exited before capturing ({status}):\n{}",
                    capture.log_text()
                );
            }
            if capture.started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the agent did not attach its HTTP capture within {} s:\n{}",
                    READY_TIMEOUT.as_secs(),
                    capture.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(capture)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time the agent used so far (all its threads).
    fn cpu_time(&self) -> Result<Duration> {
        cpu_time(self.pid())
    }

    /// The agent's peak RSS so far (VmHWM in /proc/<pid>/status).
    fn peak_rss_kib(&self) -> Result<u64> {
        peak_rss_kib(self.pid())
    }

    /// Stops the agent with SIGINT and reads what it captured; `ok` tells a successful span
    /// from its line in the spans file (e.g. [`http_ok`]).
    fn stop(mut self, ok: fn(&str) -> bool) -> Result<CaptureEnd> {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) };
        self.stopped = true;
        let usage = wait_with_usage(self.pid(), self.started)
            .with_context(|| format!("agent log:\n{}", self.log_text()))?;
        let log = self.log_text();
        if !fs::metadata(&self.profile).is_ok_and(|m| m.len() > 0) {
            bail!("the agent wrote no profile:\n{log}");
        }
        let http_line = log
            .lines()
            .find(|l| l.starts_with("http: "))
            .with_context(|| format!("the agent printed no `http:` summary:\n{log}"))?;
        let records_lost = http_line
            .split_once(" records lost")
            .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
            .with_context(|| format!("no `N records lost` in the agent's line: {http_line}"))?;
        let spans = fs::read_to_string(&self.spans)
            .with_context(|| format!("reading {}", self.spans.display()))?;
        let (mut server_spans, mut client_spans) = (0, 0);
        let (mut server_spans_ok, mut client_spans_ok) = (0, 0);
        for line in spans.lines() {
            if line.contains(r#""kind":"server""#) {
                server_spans += 1;
                server_spans_ok += u64::from(ok(line));
            } else if line.contains(r#""kind":"client""#) {
                client_spans += 1;
                client_spans_ok += u64::from(ok(line));
            }
        }
        if server_spans == 0 || client_spans == 0 {
            bail!(
                "the spans file {} has {server_spans} server and {client_spans} client spans \
                 after the load ran; the agent said:\n{log}",
                self.spans.display()
            );
        }
        Ok(CaptureEnd {
            usage,
            server_spans,
            client_spans,
            server_spans_ok,
            client_spans_ok,
            records_lost,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary_is_read() {
        let text = "Running 3s test @ http://127.0.0.1:1/index.html\n  1 threads and 16 \
                    connections\n  52515 requests in 3.01s, 12.02MB read\nRequests/sec:  \
                    17464.08\nTransfer/sec:      4.00MB\n";
        let result = parse_wrk(text).expect("parses");
        assert_eq!(result.requests, 52515);
        assert!((result.requests_per_s - 17464.08).abs() < 1e-9);
        let errors = format!("{text}  Socket errors: connect 0, read 3, write 0, timeout 0\n");
        assert!(parse_wrk(&errors).is_err());
    }
}
