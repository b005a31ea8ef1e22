//! `cargo xtask bench`: benchmarks measured as ratios within one run, written to BENCHMARKS.md.
//!
//! Entry 1, profiling overhead: a CPU-bound fixture's throughput alone vs while the agent
//! records the whole machine, alternated over repeats; the agent's CPU time per second of
//! recording and its peak RSS (from wait4's rusage, so symbolization and encoding count too).
//! Entry 2, server store: `cargo bench -p profiler-server --bench store` (bytes per sample,
//! ingest rate, flame-graph query latency over 1 h x 100 processes at 19 Hz).
//! Entry 3, HTTP capture overhead: nginx + wrk throughput with `--spans` capture on vs off, the
//! kernel's eBPF run time per request, spans vs requests and lost records ([`http`]).
//! Entry 4, against peers: our agent, `perf record` + `perf script` + inferno's collapser, and
//! bpftrace on the same workload for the same window: CPU and peak RSS from start to a folded
//! file, and the agreement of their top-10 functions ([`peers`]).
//! Entry 5, gRPC capture overhead: h2load's unary gRPC calls over h2c to the tests' grpcio
//! server with `--spans` capture on vs off, the server's and the agent's CPU per request, the
//! kernel's eBPF run time per request, spans with grpc-status 0 vs calls and lost records
//! ([`grpc`]).
//! Entry 6, symbolization: frames per second of the agent's symbolizer on a large binary with
//! DWARF, cold, warm and with the file warm but new addresses, against GNU addr2line and
//! llvm-addr2line on the same addresses, with their agreement and peak RSS ([`symbolize`]).
//! Entry 7, the continuous agent: `profiler-agent run` uploading to a real server while the
//! fixture of entry 1 runs: CPU and wake-ups per second after start-up, start-up CPU, peak RSS
//! ([`continuous`]).
//!
//! `--only ENTRY` (repeatable) runs some entries and prints their sections instead of
//! rewriting BENCHMARKS.md ([`Entry`]).

mod bpf_stats;
mod continuous;
mod folded;
mod grpc;
mod http;
mod peers;
mod symbolize;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::run_checked;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds the workload runs in each measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Alternating (unprofiled, profiled) pairs per frequency; repeats of every other entry.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Sampling frequencies to measure (repeatable).
    #[arg(long = "frequency", default_values_t = [99u64, 19])]
    frequencies: Vec<u64>,
    /// Seconds each tool profiles in the comparison with perf and bpftrace (entry 4).
    #[arg(long, default_value_t = 30)]
    peers_seconds: u64,
    /// Addresses in each of the two sets the symbolization entry (6) resolves.
    #[arg(long, default_value_t = 4000)]
    symbolize_addresses: usize,
    /// Run only this entry (repeatable). The document then holds the selected sections only
    /// and goes to stdout, or to --output when it is given: BENCHMARKS.md keeps the other
    /// entries' results.
    #[arg(long, value_enum, value_name = "ENTRY")]
    only: Vec<Entry>,
    /// Where to write the results [default: BENCHMARKS.md, or stdout with --only].
    #[arg(long)]
    output: Option<PathBuf>,
    /// A quick run (2 s, 3 s for entry 4, 1 repeat, 99 Hz, 200 addresses for entry 6) that
    /// checks every step of the harness; writes nothing.
    #[arg(long)]
    smoke: bool,
}

/// An entry of the benchmark, in BENCHMARKS.md's order (as `--only` names it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, clap::ValueEnum)]
pub enum Entry {
    /// 1. Profiling overhead on a CPU-bound workload.
    Overhead,
    /// 2. The server's store.
    Store,
    /// 3. HTTP capture overhead.
    Http,
    /// 4. Against perf and bpftrace.
    Peers,
    /// 5. gRPC capture overhead.
    Grpc,
    /// 6. Symbolization frames per second against addr2line.
    Symbolize,
    /// 7. The continuous agent (`run`) after start-up.
    Continuous,
}

impl Entry {
    const ALL: [Entry; 7] = [
        Entry::Overhead,
        Entry::Store,
        Entry::Http,
        Entry::Peers,
        Entry::Grpc,
        Entry::Symbolize,
        Entry::Continuous,
    ];

    /// The section heading in BENCHMARKS.md.
    fn heading(self) -> &'static str {
        match self {
            Entry::Overhead => "1. Profiling overhead",
            Entry::Store => "2. Server store",
            Entry::Http => "3. HTTP capture overhead",
            Entry::Peers => "4. Against peers",
            Entry::Grpc => "5. gRPC capture overhead",
            Entry::Symbolize => "6. Symbolization",
            Entry::Continuous => "7. Continuous agent",
        }
    }

    /// Whether the entry runs `profiler-agent` (built once for all of them).
    fn needs_agent(self) -> bool {
        !matches!(self, Entry::Store | Entry::Symbolize)
    }
}

/// Resource use of a finished child process.
struct Usage {
    cpu: Duration,
    wall: Duration,
    max_rss_kib: u64,
}

/// min / median / max of a series.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    (sorted[0], median, sorted[sorted.len() - 1])
}

/// The order entries run in (BENCHMARKS.md lists them in [`Entry`]'s order).
const RUN_ORDER: [Entry; 7] = [
    Entry::Overhead,
    Entry::Continuous,
    Entry::Http,
    Entry::Grpc,
    Entry::Peers,
    Entry::Store,
    Entry::Symbolize,
];

pub fn run(root: &Path, mut args: BenchArgs) -> Result<()> {
    if args.smoke {
        args.seconds = 2;
        args.repeats = 1;
        args.frequencies = vec![99];
        args.peers_seconds = 3;
        args.symbolize_addresses = 200;
    }
    let selected = |entry: &Entry| args.only.is_empty() || args.only.contains(entry);
    let agent = root.join("target/release/profiler-agent");
    if RUN_ORDER
        .iter()
        .filter(|e| selected(e))
        .any(|e| e.needs_agent())
    {
        run_checked(crate::cargo().current_dir(root).args([
            "build",
            "--release",
            "-p",
            "profiler-agent",
            "--bin",
            "profiler-agent",
        ]))?;
    }
    let bench_dir = root.join("target/bench");
    fs::create_dir_all(&bench_dir).context("creating target/bench")?;

    let mut sections = BTreeMap::new();
    for entry in RUN_ORDER.into_iter().filter(selected) {
        let body = match entry {
            Entry::Overhead => overhead(root, &agent, &bench_dir, &args)?,
            Entry::Store => store_section(root, args.smoke)?,
            Entry::Http => http::run(&agent, &bench_dir, args.seconds, args.repeats)?,
            Entry::Peers => peers::run(
                root,
                &agent,
                &bench_dir,
                args.peers_seconds,
                args.repeats,
                args.smoke,
            )?,
            Entry::Grpc => grpc::run(root, &agent, &bench_dir, args.seconds, args.repeats)?,
            Entry::Symbolize => {
                symbolize::run(root, &bench_dir, args.repeats, args.symbolize_addresses)?
            }
            Entry::Continuous => {
                run_checked(crate::cargo().current_dir(root).args([
                    "build",
                    "--release",
                    "-p",
                    "profiler-server",
                ]))?;
                continuous::run(
                    &root.join("target/release/profiler-server"),
                    &agent,
                    &build_workload(root, &bench_dir)?,
                    &bench_dir,
                    &args.frequencies,
                    // Three upload intervals at the default 10 s.
                    args.seconds * 3,
                    args.repeats,
                )?
            }
        };
        sections.insert(entry, format!("## {}\n\n{body}", entry.heading()));
    }
    let sections: Vec<String> = sections.into_values().collect();
    if args.smoke {
        eprintln!("smoke run passed:\n\n{}", sections.join("\n"));
        return Ok(());
    }
    let only = if args.only.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = Entry::ALL
            .iter()
            .filter(|e| args.only.contains(e))
            .filter_map(|e| {
                Some(
                    clap::ValueEnum::to_possible_value(e)?
                        .get_name()
                        .to_string(),
                )
            })
            .collect();
        format!("- entries: {} (`--only`)\n", names.join(", "))
    };
    let document = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (as root). Every comparison is a ratio \
         taken within one run.\n\n- machine: {}\n- commit: {}\n- date: {}\n{only}\n{}",
        machine(),
        command_output("git", &["rev-parse", "--short", "HEAD"]),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sections.join("\n"),
    );
    let output = match (&args.output, args.only.is_empty()) {
        (Some(path), _) => root.join(path),
        (None, true) => root.join("BENCHMARKS.md"),
        (None, false) => {
            print!("{document}");
            return Ok(());
        }
    };
    fs::write(&output, document).with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

/// Entry 1: a CPU-bound fixture's throughput alone vs while the agent records the whole
/// machine, per frequency; returns its section (without the heading).
fn overhead(root: &Path, agent: &Path, bench_dir: &Path, args: &BenchArgs) -> Result<String> {
    let workload = build_workload(root, bench_dir)?;

    let mut report = String::new();
    for &hz in &args.frequencies {
        let mut ratios = Vec::new();
        let mut cpu_per_second = Vec::new();
        let mut fixed_cpu = Vec::new();
        let mut rss_mib = Vec::new();
        for repeat in 0..args.repeats {
            let alone = run_workload(&workload, args.seconds)?;
            let profile = bench_dir.join("profile.pb.gz");
            let recorder = start_recorder(agent, hz, args.seconds + 2, &profile)?;
            // Let the agent load and attach before the workload starts.
            thread::sleep(Duration::from_secs(1));
            let profiled = run_workload(&workload, args.seconds)?;
            let usage = recorder.finish(&profile)?;
            // The same agent for 2 s without the workload: its fixed cost (loading, the kernel
            // symbol table, symbolization of what else runs).
            let short = start_recorder(agent, hz, 2, &profile)?.finish(&profile)?;
            fixed_cpu.push(short.cpu.as_secs_f64());
            let ratio = profiled / alone;
            eprintln!(
                "{hz} Hz, repeat {}: throughput ratio {ratio:.4}, agent CPU {:.3} s over {:.1} s, \
                 peak RSS {:.1} MiB",
                repeat + 1,
                usage.cpu.as_secs_f64(),
                usage.wall.as_secs_f64(),
                usage.max_rss_kib as f64 / 1024.0
            );
            ratios.push(ratio);
            cpu_per_second.push(usage.cpu.as_secs_f64() / usage.wall.as_secs_f64() * 100.0);
            rss_mib.push(usage.max_rss_kib as f64 / 1024.0);
        }
        let row = |name: &str, values: &[f64], unit: &str, target: &str| {
            let (min, median, max) = spread(values);
            format!("| {name} | {min:.3}{unit} | {median:.3}{unit} | {max:.3}{unit} | {target} |\n")
        };
        let _ = writeln!(report, "\n### {hz} Hz\n");
        report.push_str("| measure | min | median | max | target |\n|---|---|---|---|---|\n");
        report.push_str(&row(
            "workload throughput, profiled / alone",
            &ratios,
            "",
            "> 0.99",
        ));
        let cpu_target = if hz <= 19 { "< 0.2 %" } else { "< 1 %" };
        report.push_str(&row(
            "agent CPU over its whole life, % of one core",
            &cpu_per_second,
            " %",
            cpu_target,
        ));
        report.push_str(&row(
            "CPU of a 2 s recording without the workload (the fixed cost)",
            &fixed_cpu,
            " s",
            "",
        ));
        report.push_str(&row("agent peak RSS", &rss_mib, " MiB", "< 40 MiB"));
    }
    Ok(format!(
        "A single-threaded CPU-bound C fixture (`tests/fixtures/throughput.c`) runs {} s alone, \
         then {} s while `profiler-agent record --all` samples every CPU; pairs alternate, {} \
         repeats per frequency. Agent CPU and peak RSS come from the kernel's rusage of the \
         agent process over its whole life (load, sampling, symbolization, encoding), divided \
         by its wall time. A 2 s recording of the same agent without the workload shows the \
         fixed part of that cost (loading, reading the kernel symbol table, symbolizing what \
         else runs).\n\nBefore/after (issue 6): until commit 2df55bb the release binaries \
         carried DWARF (`debug = 1`, ~47 MB); when samples landed in the agent's own binary it \
         loaded those line tables to name them, and its peak RSS reached 64 MiB here and 71-75 \
         MiB in entry 4 (target 40 MiB). The release profile now keeps the symbol table only \
         (`strip = \"debuginfo\"`): function names stay, the binary shrinks from 55 to 8 MB, \
         and the rows below and entry 4 show the peak RSS since.\n\nCommand: `cargo xtask \
         bench --seconds {} --repeats {}`\n{report}",
        args.seconds, args.seconds, args.repeats, args.seconds, args.repeats,
    ))
}

/// Builds the CPU-bound fixture of entries 1 and 7 into `bench_dir`; returns its path.
fn build_workload(root: &Path, bench_dir: &Path) -> Result<PathBuf> {
    let workload = bench_dir.join("throughput");
    run_checked(
        Command::new("gcc")
            .args(["-O2", "-fno-omit-frame-pointer", "-o"])
            .arg(&workload)
            .arg(root.join("tests/fixtures/throughput.c")),
    )?;
    Ok(workload)
}

/// Entry 2: the server's store benchmark; returns its section (without the heading).
fn store_section(root: &Path, smoke: bool) -> Result<String> {
    let store = store_bench(root, smoke)?;
    Ok(format!(
        "One hour of a realistic node (100 processes x 2 threads at 19 Hz, ~300 stacks each, \
         one profile per 10 s) ingested through the `Store` trait into SQLite, then flame-graph \
         queries. Targets: >= 1 M samples/s ingest per core, queries < 100 ms, <= 10 bytes per \
         sample.\n\nCommand: `cargo bench -p profiler-server --bench store` (run by `cargo \
         xtask bench`)\n\n```\n{store}```\n"
    ))
}

/// A running `profiler-agent record --all`.
struct Recorder {
    child: std::process::Child,
    started: Instant,
}

fn start_recorder(agent: &Path, hz: u64, seconds: u64, output: &Path) -> Result<Recorder> {
    reset_peak_rss()?;
    let child = Command::new(agent)
        .args(["record", "--all", "--quiet", "--frequency"])
        .arg(hz.to_string())
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--output")
        .arg(output)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    Ok(Recorder {
        child,
        started: Instant::now(),
    })
}

impl Recorder {
    /// Waits for the agent, checks that it wrote `output`, and returns its resource use.
    fn finish(mut self, output: &Path) -> Result<Usage> {
        let usage = wait_with_usage(self.child.id(), self.started)?;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).ok();
        }
        if !fs::metadata(output).is_ok_and(|m| m.len() > 0) {
            bail!("the agent wrote no profile:\n{stderr}");
        }
        Ok(usage)
    }
}

/// Runs the server's store benchmark and returns what it printed.
fn store_bench(root: &Path, smoke: bool) -> Result<String> {
    let mut command = crate::cargo();
    command
        .current_dir(root)
        .args(["bench", "-q", "-p", "profiler-server", "--bench", "store"]);
    if smoke {
        command.args(["--", "--smoke"]);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running the store benchmark")?;
    if !output.status.success() {
        bail!("the store benchmark failed: {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs the workload and returns its units per second.
fn run_workload(workload: &Path, seconds: u64) -> Result<f64> {
    let output = Command::new(workload)
        .arg(seconds.to_string())
        .output()
        .context("running the workload")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("workload printed `{text}`"))
}

fn wait_with_usage(pid: u32, started: Instant) -> Result<Usage> {
    wait_for(pid, started, "the agent")
}

/// Waits for the child `pid` (named `what` in errors), failing unless it exited with 0, and
/// returns its rusage (which includes the children it waited for).
fn wait_for(pid: u32, started: Instant, what: &str) -> Result<Usage> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into locals we own.
    let ret = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("waiting for {what}"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{what} failed (wait status {status})");
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Usage {
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        wall: started.elapsed(),
        max_rss_kib: usage.ru_maxrss as u64,
    })
}

/// A loopback port free right now (for a server the bench starts).
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free port")
        .map(|address| address.port())
}

/// Creates (or truncates) the file at `path`, e.g. for a child's log.
fn create_file(path: &Path) -> Result<fs::File> {
    fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// Resets xtask's peak RSS (VmHWM) to its current RSS; call it right before spawning a child
/// whose peak RSS (`ru_maxrss`) is measured. `Command` spawns with vfork (posix_spawn): the child
/// runs in xtask's memory until it execs, and exec keeps that memory's peak as the child's
/// starting `maxrss` (`exec_mmap` in fs/exec.c), so without the reset a child's peak is at least
/// the most xtask ever held. After it, the floor is xtask's current RSS (a few MiB).
fn reset_peak_rss() -> Result<()> {
    // Writing 5 to clear_refs resets the peak RSS to the current RSS (proc(5)).
    fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM in /proc/self/clear_refs")
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn machine() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    format!(
        "{cpus} CPUs, {memory}, kernel {}",
        command_output("uname", &["-r"])
    )
}
