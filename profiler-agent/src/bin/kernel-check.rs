//! `kernel-check`: proves on the running kernel that the CPU sampler's programs load, attach and
//! produce data, through the agent's own loading code and its embedded eBPF object.
//!
//! `cargo xtask kernel-matrix` builds it statically and runs it as the only program of small
//! QEMU guests booting older kernels (`xtask/src/kernel_matrix.rs`); as root it also runs on
//! any host. It prints one machine-readable line per program, every error in full (a verifier
//! rejection includes the verifier log), and a final verdict:
//!
//! ```text
//! KCHECK-KERNEL 6.1.0-56-amd64
//! KCHECK program=on_cpu_sample loaded=yes attached=yes data=yes samples=812 ...
//! KCHECK-ERROR-BEGIN program=on_process_fork
//! <the error, verifier log included>
//! KCHECK-ERROR-END
//! KCHECK-RESULT PASS            (or: KCHECK-RESULT FAIL <reason>)
//! ```
//!
//! Three checks run, each with its own sampler at [`FREQUENCY_HZ`]:
//! 1. pid filter: sample only this process while it burns CPU in [`kernel_check_hot_loop`];
//!    the hot function must come back symbolized, with `main` on its (frame-pointer) stack.
//! 2. follow children: the same filter with `follow_children`, which attaches the
//!    `sched_process_fork`/`sched_process_exit` tracepoints; a child process (this binary with
//!    [`CHILD_ARG`]) and a thread it starts burn CPU, and their samples must arrive.
//! 3. HTTP capture: attaches the capture's syscall tracepoint programs, then a child process
//!    (this binary with [`HTTP_CHILD_ARG`]; the capture ignores the agent's own pid) runs a
//!    loopback HTTP/1.1 server and client. Its exchanges must come back from both ends, the
//!    first with the trace context of its `traceparent`, and samples of the server thread must
//!    carry the span of the request it was serving. Then it makes one gRPC-shaped HTTP/2 call
//!    (h2c, the request written with `writev` from several buffers). Three lines report it:
//!    `http_exchange` (the HTTP/1.1 records), `http_span_link` (the samples) and
//!    `http2_exchange` (the call's server and client spans, assembled from the kernel's chunks).
//!
//! The tracepoint programs change only kernel maps, which the agent does not read back, so
//! their run counts come from the kernel's BPF statistics ([`BpfStats`]).

use std::{
    collections::{HashMap, HashSet},
    fmt, fs,
    hint::black_box,
    io::{IoSlice, IoSliceMut, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, ensure, Context, Result};
use profiler_agent::{
    capture::{
        assemble::Clock,
        h2::H2Assembler,
        span::{AttrValue, Resource, Span, SpanKind},
    },
    collect::{hex, Collector},
    ebpf::{HttpEvent, HttpEvents, HttpRecord, KernelStats, Sampler, SamplerError, SamplerOptions},
    profile::Profile,
    symbolize::Symbolizer,
};
use profiler_common::{
    http_event, http_flags, http_role, HttpExchange, Stat, HTTP_PROGRAMS, PROG_H2_CONTINUE,
    PROG_ON_CPU_SAMPLE, PROG_ON_PROCESS_EXIT, PROG_ON_PROCESS_FORK,
};

/// Samples per second per CPU: high, so a short burn gives hundreds of samples.
const FREQUENCY_HZ: u64 = 999;
/// CPU time this process burns under the pid-filter check.
const OWN_BURN: Duration = Duration::from_millis(500);
/// CPU time the child's main thread burns; its extra thread burns half of it.
const CHILD_BURN: Duration = Duration::from_millis(600);
/// First argument that turns this binary into the child fixture of the follow-children check.
const CHILD_ARG: &str = "--child-fixture";
/// How often the follow-children check drains while the child runs: the collector must read
/// the child's mappings while it is alive.
const CHILD_DRAIN_INTERVAL: Duration = Duration::from_millis(200);
/// Name of the hot function as the symbolizer reports it (a suffix of the demangled path).
const HOT_FUNCTION: &str = "kernel_check_hot_loop";
/// First argument that turns this binary into the HTTP fixture of the HTTP capture check.
const HTTP_CHILD_ARG: &str = "--http-fixture";
/// Requests the HTTP fixture's client sends on one keep-alive connection.
const HTTP_REQUESTS: usize = 3;
/// Path of every request of the HTTP fixture.
const HTTP_PATH: &str = "/check";
/// CPU time the HTTP fixture's server burns per request, between reading it and answering:
/// the time its samples carry the request's span.
const REQUEST_BURN: Duration = Duration::from_millis(300);
/// Trace id and parent id of the `traceparent` header on the first request (the W3C
/// specification's example).
const TRACEPARENT_TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const TRACEPARENT_PARENT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
/// How often the HTTP check reads the capture's ring buffer: records arrive without a wake-up.
const HTTP_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long the HTTP fixture may run (it takes about a second) before it is killed.
const HTTP_FIXTURE_TIMEOUT: Duration = Duration::from_secs(60);
/// Socket read timeout inside the HTTP fixture: a missing answer fails instead of hanging.
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Names of the HTTP check's report lines (checks over all of the capture's programs).
const HTTP_EXCHANGE_CHECK: &str = "http_exchange";
const HTTP_SPAN_LINK_CHECK: &str = "http_span_link";
const HTTP2_CHECK: &str = "http2_exchange";
/// The gRPC method of the HTTP/2 call (`:path`).
const GRPC_PATH: &str = "/kcheck.Check/Ping";
/// Bytes of the HTTP/2 call's response message: several times what one record holds.
const H2_RESPONSE_MESSAGE: usize = 200 * 1024;
/// Longest program name the kernel keeps (`BPF_OBJ_NAME_LEN` minus the NUL).
const KERNEL_PROG_NAME_LEN: usize = 15;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_ARG) {
        child_fixture();
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some(HTTP_CHILD_ARG) {
        return match http_fixture() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // The parent reads stdout and puts it into its report.
                println!("error={error:#}");
                ExitCode::FAILURE
            }
        };
    }
    if !args.is_empty() {
        eprintln!("usage: kernel-check (as root; prints KCHECK lines and a KCHECK-RESULT)");
        return ExitCode::from(2);
    }
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("KCHECK-KERNEL {}", kernel.trim());
    // What the agent's start-up report turns off on this kernel, and why.
    for feature in profiler_agent::features::probe().features {
        if !feature.on {
            println!(
                "KCHECK-NOTE feature `{}` off: {}",
                feature.name, feature.why
            );
        }
    }
    // The guests boot without tracefs: the agent must mount it itself (its fallback).
    let tracefs_was_mounted = std::path::Path::new("/sys/kernel/tracing/events").is_dir();

    let stats = BpfStats::enable();
    if let Err(error) = &stats {
        println!("KCHECK-NOTE tracepoint run counts unavailable: {error:#}");
    }
    let stats = stats.ok();
    let mut failures = Vec::new();
    for report in check_pid_filter(stats.as_ref())
        .into_iter()
        .chain(check_follow_children(stats.as_ref()))
        .chain(check_http_capture(stats.as_ref()))
    {
        report.print();
        // A program never tried is not a failure of its own: the one before it failed.
        if report.loaded == Step::NotTried {
            continue;
        }
        if let Some(reason) = report.failure() {
            failures.push(format!("{}: {reason}", report.program));
        }
    }
    if !tracefs_was_mounted && std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        println!("KCHECK-NOTE tracefs was not mounted: the agent mounted it (fallback works)");
    }
    if failures.is_empty() {
        println!("KCHECK-RESULT PASS");
        ExitCode::SUCCESS
    } else {
        println!("KCHECK-RESULT FAIL {}", failures.join("; "));
        ExitCode::FAILURE
    }
}

/// The function whose samples every check looks for. Never inlined, so it has its own frame and
/// symbol; the loop body is opaque to the optimizer.
#[inline(never)]
fn kernel_check_hot_loop(rounds: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15_u64);
    for i in 0..rounds {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        x ^= x >> 29;
    }
    black_box(x)
}

/// Runs the hot loop until `duration` of wall time has passed (the guests have idle CPUs, so
/// that is CPU time too).
#[inline(never)]
fn burn(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut sum = 0u64;
    while start.elapsed() < duration {
        sum = sum.wrapping_add(kernel_check_hot_loop(100_000));
    }
    sum
}

/// The child of the follow-children check: burns CPU on its main thread and on a second thread
/// that ends first (its exit is what `on_process_exit` handles).
fn child_fixture() {
    let worker = thread::spawn(|| burn(CHILD_BURN / 2));
    let mut sum = burn(CHILD_BURN);
    sum = sum.wrapping_add(worker.join().unwrap_or(0));
    black_box(sum);
}

/// Whether a step happened, failed, or was never reached because an earlier one failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Yes,
    No,
    NotTried,
    /// Could not be observed (only for data: the kernel keeps no run counts).
    Unknown,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Yes => "yes",
            Step::No => "no",
            Step::NotTried => "not-tried",
            Step::Unknown => "unknown",
        })
    }
}

/// What one check found out about one program.
struct ProgramReport {
    program: &'static str,
    loaded: Step,
    attached: Step,
    data: Step,
    /// `key=value` details, in print order.
    details: Vec<(&'static str, String)>,
    /// Why the program failed, when it did (a missing detail or the error).
    failure: Option<String>,
    /// The full error (with the verifier log), when loading or attaching failed.
    error: Option<String>,
}

impl ProgramReport {
    fn new(program: &'static str) -> Self {
        ProgramReport {
            program,
            loaded: Step::NotTried,
            attached: Step::NotTried,
            data: Step::NotTried,
            details: Vec::new(),
            failure: None,
            error: None,
        }
    }

    /// Loaded and attached (the sampler started).
    fn running(program: &'static str) -> Self {
        ProgramReport {
            loaded: Step::Yes,
            attached: Step::Yes,
            ..Self::new(program)
        }
    }

    fn detail(&mut self, key: &'static str, value: impl ToString) {
        self.details.push((key, value.to_string()));
    }

    /// Records a detail that must hold for the program to pass.
    fn require(&mut self, key: &'static str, ok: bool) {
        self.detail(key, if ok { "yes" } else { "no" });
        if !ok && self.failure.is_none() {
            self.failure = Some(format!("{key}=no"));
        }
    }

    fn failure(&self) -> Option<&str> {
        if let Some(reason) = &self.failure {
            return Some(reason);
        }
        if self.loaded != Step::Yes {
            Some("not loaded")
        } else if self.attached != Step::Yes {
            Some("not attached")
        } else if !matches!(self.data, Step::Yes | Step::Unknown) {
            Some("no data")
        } else {
            None
        }
    }

    fn print(&self) {
        let mut line = format!(
            "KCHECK program={} loaded={} attached={} data={}",
            self.program, self.loaded, self.attached, self.data
        );
        for (key, value) in &self.details {
            line.push_str(&format!(" {key}={value}"));
        }
        println!("{line}");
        if let Some(error) = &self.error {
            println!("KCHECK-ERROR-BEGIN program={}", self.program);
            println!("{}", error.trim_end());
            println!("KCHECK-ERROR-END");
        }
    }
}

/// Reports for `programs` (in the order `Sampler::start` loads and attaches them) when the
/// sampler could not start.
fn start_failed(programs: &[&'static str], error: &SamplerError) -> Vec<ProgramReport> {
    let message = error.to_string();
    let mut reports: Vec<ProgramReport> = programs
        .iter()
        .map(|&name| ProgramReport::new(name))
        .collect();
    // The program the error is about; the ones before it succeeded, the ones after it were
    // never tried. Errors before any program (the object, maps, tracefs) blame the first.
    let (failed, loaded) = match error {
        SamplerError::Program { name, .. } => {
            // aya's load error reads "the BPF_PROG_LOAD syscall returned ... Verifier output:".
            let loaded = !message.contains("BPF_PROG_LOAD");
            (programs.iter().position(|p| p == name).unwrap_or(0), loaded)
        }
        SamplerError::Attach { name, .. } => {
            (programs.iter().position(|p| p == name).unwrap_or(0), true)
        }
        SamplerError::Missing { name } => {
            (programs.iter().position(|p| p == name).unwrap_or(0), false)
        }
        SamplerError::PerfEvent { .. } => (
            programs
                .iter()
                .position(|&p| p == PROG_ON_CPU_SAMPLE)
                .unwrap_or(0),
            true,
        ),
        _ => (0, false),
    };
    for report in &mut reports[..failed] {
        report.loaded = Step::Yes;
        report.attached = Step::Yes;
        // Nothing ran to show data: the failure is the later program's, not theirs.
        report.data = Step::Unknown;
    }
    let report = &mut reports[failed];
    report.loaded = if loaded { Step::Yes } else { Step::No };
    report.attached = if loaded { Step::No } else { Step::NotTried };
    report.failure = Some(short_reason(&message));
    report.error = Some(message);
    reports
}

/// One line for the verdict: a verifier rejection as the syscall's error and the verifier's
/// last word (`invalid func unknown#181`), anything else as its first line.
fn short_reason(message: &str) -> String {
    let Some((head, log)) = message.split_once("Verifier output:") else {
        return message.lines().next().unwrap_or("failed").to_string();
    };
    let errno = head
        .split_once("returned ")
        .map_or(head, |(_, rest)| rest)
        .trim()
        .trim_end_matches('.');
    // The log ends with statistics; the line before them says why.
    let verdict = log
        .lines()
        .map(str::trim)
        .rfind(|line| {
            !line.is_empty()
                && !line.starts_with("verification time")
                && !line.starts_with("stack depth")
                && !line.starts_with("processed ")
        })
        .unwrap_or("no verifier output");
    format!("BPF_PROG_LOAD failed ({errno}): {verdict}")
}

/// A report for a failure after the sampler started (draining, reading stats).
fn check_failed(program: &'static str, error: &SamplerError) -> ProgramReport {
    let mut report = ProgramReport::running(program);
    report.data = Step::No;
    report.failure = Some(error.to_string());
    report.error = Some(error.to_string());
    report
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn symbolize(collector: &Collector, start_unix_ns: u64, elapsed: Duration) -> Profile {
    let period_ns = 1_000_000_000 / FREQUENCY_HZ;
    let (profile, _) = Symbolizer::new().symbolize(
        collector,
        start_unix_ns,
        elapsed.as_nanos() as u64,
        period_ns,
    );
    profile
}

/// Function names on a sample's stack, leaf first (inlined functions included).
fn functions<'a>(profile: &'a Profile, stack: &'a [usize]) -> impl Iterator<Item = &'a str> {
    stack.iter().flat_map(|&location| {
        profile.locations[location]
            .lines
            .iter()
            .map(|line| line.function.as_str())
    })
}

/// Whether the leaf frame is the hot function (the symbolizer returns demangled paths such as
/// `kernel_check::kernel_check_hot_loop`).
fn leaf_is_hot(profile: &Profile, stack: &[usize]) -> bool {
    stack
        .iter()
        .find(|&&location| !profile.locations[location].kernel)
        .is_some_and(|&location| {
            profile.locations[location]
                .lines
                .iter()
                .any(|line| line.function.ends_with(HOT_FUNCTION))
        })
}

/// Check 1: `on_cpu_sample` with a pid filter holding only this process.
fn check_pid_filter(bpf_stats: Option<&BpfStats>) -> Vec<ProgramReport> {
    let own_pid = std::process::id();
    let options = SamplerOptions {
        frequency_hz: FREQUENCY_HZ,
        pids: Some(vec![own_pid]),
        follow_children: false,
        http_capture: false,
    };
    let loading = Instant::now();
    let mut sampler = match Sampler::start(&options) {
        Ok(sampler) => sampler,
        Err(error) => return start_failed(&[PROG_ON_CPU_SAMPLE], &error),
    };
    let start_ms = loading.elapsed().as_millis();
    let start_unix_ns = unix_now_ns();
    let start = Instant::now();
    black_box(burn(OWN_BURN));
    let mut collector = Collector::default();
    let drained = sampler.drain().and_then(|first| {
        collector.absorb(first);
        // Samples counted after the flip are in the other slot.
        sampler.drain()
    });
    match drained {
        Ok(second) => collector.absorb(second),
        Err(error) => return vec![check_failed(PROG_ON_CPU_SAMPLE, &error)],
    }
    let stats = match sampler.stats() {
        Ok(stats) => stats,
        Err(error) => return vec![check_failed(PROG_ON_CPU_SAMPLE, &error)],
    };
    let runs = bpf_stats.and_then(|s| s.run_counts().ok());
    drop(sampler);
    let symbolizing = Instant::now();
    let profile = symbolize(&collector, start_unix_ns, start.elapsed());
    let symbolize_ms = symbolizing.elapsed().as_millis();

    let mut report = ProgramReport::running(PROG_ON_CPU_SAMPLE);
    // Where the guest's time goes (the CPU is emulated there).
    report.detail("start_ms", start_ms);
    report.detail("symbolize_ms", symbolize_ms);
    let own = |pid: u32| pid == own_pid;
    let own_samples: u64 = profile
        .samples
        .iter()
        .filter(|s| own(s.pid))
        .map(|s| s.count)
        .sum();
    let other_samples = profile.total_samples() - own_samples;
    let hot: Vec<_> = profile
        .samples
        .iter()
        .filter(|s| own(s.pid) && leaf_is_hot(&profile, &s.stack))
        .collect();
    let hot_samples: u64 = hot.iter().map(|s| s.count).sum();
    let unwound = hot
        .iter()
        .any(|s| functions(&profile, &s.stack).any(|f| f.ends_with("kernel_check::main")));
    report.data = if own_samples > 0 { Step::Yes } else { Step::No };
    report.detail("samples", own_samples);
    if let Some(runs) = runs {
        let count = runs.get(PROG_ON_CPU_SAMPLE).copied().unwrap_or(0);
        report.detail("runs", count);
    }
    report.detail("hot_samples", hot_samples);
    report.detail("kernel_samples_counted", stats.get(Stat::Samples));
    report.detail("filtered_out", stats.get(Stat::FilteredOut));
    report.detail(
        "user_stacks_failed",
        stats.get(Stat::UserStackCaptureFailed),
    );
    report.detail("stacks_map_full", stats.get(Stat::UserStackMapFull));
    report.require("symbolized_hot_function", hot_samples > 0);
    report.require("unwound_to_main", unwound);
    // The pid filter keeps every other process out.
    report.detail("other_pid_samples", other_samples);
    report.require("pid_filter_held", other_samples == 0);
    vec![report]
}

/// Check 2: the pid filter with `follow_children`: a child started after the sampler, and its
/// thread, must be sampled; the fork and exit tracepoints must run.
fn check_follow_children(bpf_stats: Option<&BpfStats>) -> Vec<ProgramReport> {
    // The order Sampler::start loads and attaches them.
    let programs = [
        PROG_ON_PROCESS_FORK,
        PROG_ON_PROCESS_EXIT,
        PROG_ON_CPU_SAMPLE,
    ];
    let options = SamplerOptions {
        frequency_hz: FREQUENCY_HZ,
        pids: Some(vec![std::process::id()]),
        follow_children: true,
        http_capture: false,
    };
    let loading = Instant::now();
    let mut sampler = match Sampler::start(&options) {
        Ok(sampler) => sampler,
        Err(error) => {
            // on_cpu_sample has its own check: report it here only if it failed here.
            let mut reports = start_failed(&programs, &error);
            reports.retain(|r| r.program != PROG_ON_CPU_SAMPLE || r.loaded != Step::NotTried);
            return reports;
        }
    };
    let start_ms = loading.elapsed().as_millis();
    let mut fork = ProgramReport::running(PROG_ON_PROCESS_FORK);
    let mut exit = ProgramReport::running(PROG_ON_PROCESS_EXIT);
    let start_unix_ns = unix_now_ns();
    let start = Instant::now();
    let mut collector = Collector::default();
    let run = run_child(&mut sampler, &mut collector);
    let stats = sampler.stats();
    // Read while the sampler still holds the programs open.
    let runs = bpf_stats.map(BpfStats::run_counts);
    drop(sampler);
    let child_pid = match run {
        Ok(pid) => pid,
        Err(error) => {
            fork.data = Step::No;
            fork.failure = Some(format!("{error:#}"));
            fork.error = Some(format!("{error:#}"));
            return vec![fork, exit];
        }
    };
    let symbolizing = Instant::now();
    let profile = symbolize(&collector, start_unix_ns, start.elapsed());
    fork.detail("start_ms", start_ms);
    fork.detail("symbolize_ms", symbolizing.elapsed().as_millis());

    let child_samples: u64 = profile
        .samples
        .iter()
        .filter(|s| s.pid == child_pid)
        .map(|s| s.count)
        .sum();
    let thread_samples: u64 = profile
        .samples
        .iter()
        .filter(|s| s.pid == child_pid && s.tid != child_pid)
        .map(|s| s.count)
        .sum();
    let child_hot = profile
        .samples
        .iter()
        .any(|s| s.pid == child_pid && leaf_is_hot(&profile, &s.stack));
    let followed = stats.as_ref().map_or(0, |s| s.get(Stat::ChildrenFollowed));
    fork.data = if child_samples > 0 && followed > 0 {
        Step::Yes
    } else {
        Step::No
    };
    fork.detail("children_followed", followed);
    fork.detail("child_samples", child_samples);
    fork.detail("child_thread_samples", thread_samples);
    if let Err(error) = &stats {
        fork.detail("stats_error", format!("{error:?}").replace(' ', "_"));
    }
    fork.require("child_thread_sampled", thread_samples > 0);
    fork.require("symbolized_hot_function", child_hot);

    // on_process_exit only deletes pid-filter entries: its run count is the evidence it ran.
    match runs {
        Some(Ok(runs)) => {
            let count = |name: &str| runs.get(name).copied().unwrap_or(0);
            fork.detail("runs", count(PROG_ON_PROCESS_FORK));
            exit.detail("runs", count(PROG_ON_PROCESS_EXIT));
            exit.data = if count(PROG_ON_PROCESS_EXIT) > 0 {
                Step::Yes
            } else {
                Step::No
            };
        }
        Some(Err(error)) => {
            exit.data = Step::Unknown;
            println!("KCHECK-NOTE cannot read BPF run counts: {error:#}");
        }
        None => exit.data = Step::Unknown,
    }
    vec![fork, exit]
}

/// Starts the child fixture, drains while it runs, and returns its pid.
fn run_child(sampler: &mut Sampler, collector: &mut Collector) -> Result<u32> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = Command::new(&exe)
        .arg(CHILD_ARG)
        .spawn()
        .with_context(|| format!("cannot start the child fixture {}", exe.display()))?;
    let status = loop {
        thread::sleep(CHILD_DRAIN_INTERVAL);
        collector.absorb(sampler.drain().context("draining while the child runs")?);
        if let Some(status) = child.try_wait().context("waiting for the child fixture")? {
            break status;
        }
    };
    collector.absorb(sampler.drain().context("draining after the child exited")?);
    if !status.success() {
        bail!("the child fixture failed: {status}");
    }
    Ok(child.id())
}

/// Check 3: the HTTP capture. Attaches its programs next to a sampler whose pid filter holds
/// only the HTTP fixture, runs the fixture, and checks its records and span-labelled samples.
fn check_http_capture(bpf_stats: Option<&BpfStats>) -> Vec<ProgramReport> {
    // Every other process stays out, this one included: it is the agent, which the capture
    // ignores anyway. The fixture joins the filter once it runs.
    let options = SamplerOptions {
        frequency_hz: FREQUENCY_HZ,
        pids: Some(Vec::new()),
        follow_children: false,
        http_capture: true,
    };
    let mut sampler = match Sampler::start(&options) {
        Ok(sampler) => sampler,
        Err(error) => return start_failed(&[PROG_ON_CPU_SAMPLE], &error),
    };
    let programs: Vec<&'static str> = HTTP_PROGRAMS
        .iter()
        .map(|&(name, _)| name)
        .chain([PROG_H2_CONTINUE])
        .collect();
    let attaching = Instant::now();
    let mut events = match sampler.start_http_capture() {
        Ok(events) => events,
        Err(error) => {
            let mut reports = start_failed(&programs, &error);
            reports.push(ProgramReport::new(HTTP_EXCHANGE_CHECK));
            reports.push(ProgramReport::new(HTTP_SPAN_LINK_CHECK));
            reports.push(ProgramReport::new(HTTP2_CHECK));
            return reports;
        }
    };
    let attach_ms = attaching.elapsed().as_millis();
    let mut captured = Captured::default();
    let mut collector = Collector::default();
    let run = run_http_fixture(&mut sampler, &mut events, &mut captured, &mut collector);
    let stats = sampler.stats();
    // Read while the sampler still holds the programs open.
    let runs = bpf_stats.map(BpfStats::programs);
    drop(sampler);

    let mut reports: Vec<ProgramReport> = programs
        .iter()
        .map(|&name| ProgramReport::running(name))
        .collect();
    // Each program must have run: the fixture makes every syscall they are attached to. If the
    // fixture failed, that failure is reported (on http_exchange), not its consequences here.
    match &runs {
        Some(Ok(runs)) => {
            for report in &mut reports {
                let stats = program_stats(runs, report.program);
                report.data = match (stats.runs > 0, run.is_ok()) {
                    (true, _) => Step::Yes,
                    (false, true) => Step::No,
                    (false, false) => Step::Unknown,
                };
                report.detail("runs", stats.runs);
                // The verifier's work, against its limit of 1 million: what loading costs.
                if stats.verified_insns > 0 {
                    report.detail("verified_insns", stats.verified_insns);
                }
            }
        }
        Some(Err(error)) => {
            println!("KCHECK-NOTE cannot read BPF run counts: {error:#}");
            reports.iter_mut().for_each(|r| r.data = Step::Unknown);
        }
        None => reports.iter_mut().for_each(|r| r.data = Step::Unknown),
    }
    if let Some(first) = reports.first_mut() {
        first.detail("attach_ms", attach_ms);
    }

    let mut exchange = ProgramReport::running(HTTP_EXCHANGE_CHECK);
    let mut span_link = ProgramReport::running(HTTP_SPAN_LINK_CHECK);
    let fixture = match run.and_then(|fixture| Ok((fixture, stats?))) {
        Ok(fixture) => fixture,
        Err(error) => {
            exchange.data = Step::No;
            exchange.failure = Some(format!("{error:#}").lines().next().unwrap_or("").into());
            exchange.error = Some(format!("{error:#}"));
            reports.push(exchange);
            return reports;
        }
    };
    let (fixture, stats) = fixture;
    let server_spans =
        check_http_records(&mut exchange, &fixture, &captured.records, &events, &stats);
    check_span_link(&mut span_link, &fixture, &server_spans, &collector, &stats);
    let mut http2 = ProgramReport::running(HTTP2_CHECK);
    check_http2(&mut http2, &captured, &stats);
    // Tail calls are not runs in the kernel's statistics: the records it sent tell it ran.
    if let Some(report) = reports.iter_mut().find(|r| r.program == PROG_H2_CONTINUE) {
        report.data = if captured.h2_continued > 0 {
            Step::Yes
        } else {
            Step::No
        };
        report.detail("records", captured.h2_continued);
    }
    reports.push(exchange);
    reports.push(span_link);
    reports.push(http2);
    reports
}

/// What the HTTP check read from the ring buffer: the HTTP/1.x records, and the spans the
/// agent's HTTP/2 assembler made of the chunks.
#[derive(Default)]
struct Captured {
    records: Vec<HttpRecord>,
    h2: H2Assembler,
    h2_chunks: u64,
    /// Chunks that continue the previous one's syscall (same thread, fd, direction and times):
    /// sent by the continuation program, which the kernel's run statistics do not see (a tail
    /// call is not a run).
    h2_continued: u64,
    h2_last_syscall: Option<(u32, u32, u32, u64, u64)>,
    h2_spans: Vec<Span>,
}

impl Captured {
    fn read(&mut self, events: &mut HttpEvents) {
        let clock = Clock { offset_ns: 0 };
        let mut resource = |_: u32, comm: &str| {
            std::sync::Arc::new(Resource {
                service_name: comm.to_string(),
                attributes: Vec::new(),
            })
        };
        events.for_each(|event| match event {
            HttpEvent::Exchange(exchange, request) => self.records.push(HttpRecord {
                exchange: Box::new(*exchange),
                request: request.to_vec(),
            }),
            HttpEvent::H2(chunk, data) => {
                self.h2_chunks += 1;
                let syscall = (
                    chunk.tid,
                    chunk.fd,
                    chunk.write,
                    chunk.enter_ns,
                    chunk.exit_ns,
                );
                if self.h2_last_syscall.replace(syscall) == Some(syscall) {
                    self.h2_continued += 1;
                }
                self.h2
                    .push(chunk, data, clock, &mut resource, &mut self.h2_spans);
            }
        });
    }
}

/// The fixture's HTTP/2 call came back as one server and one client span with its method and
/// status.
fn check_http2(report: &mut ProgramReport, captured: &Captured, stats: &KernelStats) {
    let calls = |kind: SpanKind| {
        captured
            .h2_spans
            .iter()
            .filter(|span| span.kind == kind && span.name == GRPC_PATH[1..])
            .filter(|span| {
                let status = span
                    .attributes
                    .iter()
                    .find(|(name, _)| name == "rpc.grpc.status_code");
                matches!(status, Some((_, AttrValue::Int(0))))
            })
            .count()
    };
    let (server, client) = (calls(SpanKind::Server), calls(SpanKind::Client));
    report.detail("h2_connections", stats.get(Stat::Http2Connections));
    report.detail("h2_chunks", captured.h2_chunks);
    report.detail("h2_continued", captured.h2_continued);
    report.detail("spans", captured.h2_spans.len());
    report.detail("server_calls", server);
    report.detail("client_calls", client);
    report.detail(
        "connections_lost",
        captured.h2.stats.lost_connections.values().sum::<u64>(),
    );
    report.data = if captured.h2_chunks > 0 {
        Step::Yes
    } else {
        Step::No
    };
    report.require("server_call_ok", server == 1);
    report.require("client_call_ok", client == 1);
    report.require(
        "no_connection_lost",
        captured.h2.stats.lost_connections.is_empty(),
    );
}

/// The kernel's statistics of `program`, which it knows by the first [`KERNEL_PROG_NAME_LEN`]
/// bytes of its name.
fn program_stats(programs: &HashMap<String, ProgramStats>, program: &str) -> ProgramStats {
    let name = &program[..program.len().min(KERNEL_PROG_NAME_LEN)];
    programs.get(name).copied().unwrap_or_default()
}

/// What the HTTP fixture reported about itself.
struct HttpFixture {
    pid: u32,
    /// Thread id of its server thread.
    server_tid: u32,
}

/// Starts the HTTP fixture, adds it to the pid filter, lets it run while reading the ring
/// buffer and draining the sampler, and returns what it reported.
fn run_http_fixture(
    sampler: &mut Sampler,
    events: &mut HttpEvents,
    captured: &mut Captured,
    collector: &mut Collector,
) -> Result<HttpFixture> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = Command::new(&exe)
        .arg(HTTP_CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start the HTTP fixture {}", exe.display()))?;
    let run = drive_http_fixture(&mut child, sampler, events, captured, collector);
    if run.is_err() {
        // Never leave it behind (it may wait for its go, or for a response).
        let _ = child.kill();
        let _ = child.wait();
    }
    run
}

fn drive_http_fixture(
    child: &mut Child,
    sampler: &mut Sampler,
    events: &mut HttpEvents,
    captured: &mut Captured,
    collector: &mut Collector,
) -> Result<HttpFixture> {
    let pid = child.id();
    sampler
        .add_pid(pid)
        .context("cannot add the HTTP fixture to the pid filter")?;
    // The fixture waits for this line, so all its traffic happens inside the filter.
    let mut go = child
        .stdin
        .take()
        .context("the HTTP fixture has no stdin")?;
    go.write_all(b"go\n")
        .context("cannot tell the HTTP fixture to start")?;
    drop(go);
    let start = Instant::now();
    let mut drained_at = Instant::now();
    let status = loop {
        thread::sleep(HTTP_POLL_INTERVAL);
        captured.read(events);
        if drained_at.elapsed() >= CHILD_DRAIN_INTERVAL {
            collector.absorb(
                sampler
                    .drain()
                    .context("draining while the HTTP fixture runs")?,
            );
            drained_at = Instant::now();
        }
        if let Some(status) = child.try_wait().context("waiting for the HTTP fixture")? {
            break status;
        }
        if start.elapsed() > HTTP_FIXTURE_TIMEOUT {
            bail!(
                "the HTTP fixture did not finish within {} s",
                HTTP_FIXTURE_TIMEOUT.as_secs()
            );
        }
    };
    captured.read(events);
    collector.absorb(
        sampler
            .drain()
            .context("draining after the HTTP fixture exited")?,
    );
    let mut output = String::new();
    child
        .stdout
        .take()
        .context("the HTTP fixture has no stdout")?
        .read_to_string(&mut output)
        .context("cannot read the HTTP fixture's output")?;
    if !status.success() {
        bail!("the HTTP fixture failed ({status}): {}", output.trim());
    }
    let server_tid = output
        .lines()
        .find_map(|line| line.strip_prefix("server_tid="))
        .and_then(|tid| tid.trim().parse().ok())
        .with_context(|| format!("the HTTP fixture reported no server thread: {output:?}"))?;
    Ok(HttpFixture { pid, server_tid })
}

/// Checks the records of the fixture's exchanges; returns the server exchanges' trace context
/// (trace id, span id), in request order.
fn check_http_records(
    report: &mut ProgramReport,
    fixture: &HttpFixture,
    records: &[HttpRecord],
    events: &HttpEvents,
    stats: &KernelStats,
) -> Vec<([u8; 16], [u8; 8])> {
    let exchanges: Vec<&HttpRecord> = records
        .iter()
        .filter(|r| r.exchange.kind == http_event::EXCHANGE)
        .collect();
    let of_role = |role: u32| -> Vec<&HttpRecord> {
        exchanges
            .iter()
            .copied()
            .filter(|r| r.exchange.role == role && r.exchange.pid == fixture.pid)
            .collect()
    };
    let mut servers = of_role(http_role::SERVER);
    servers.sort_by_key(|r| r.exchange.request_start_ns);
    let clients = of_role(http_role::CLIENT);
    let answered = |r: &HttpRecord| {
        status_code(&r.exchange) == Some(200) && request_path(&r.request) == Some(HTTP_PATH)
    };
    let server_ok = servers.iter().filter(|r| answered(r)).count();
    let client_ok = clients.iter().filter(|r| answered(r)).count();
    report.data = if exchanges.is_empty() {
        Step::No
    } else {
        Step::Yes
    };
    report.detail("records", records.len());
    report.detail("exchange_records", exchanges.len());
    report.detail("server_exchanges", servers.len());
    report.detail("client_exchanges", clients.len());
    report.require(
        "server_exchanges_ok",
        servers.len() == HTTP_REQUESTS && server_ok == HTTP_REQUESTS,
    );
    report.require(
        "client_exchanges_ok",
        clients.len() == HTTP_REQUESTS && client_ok == HTTP_REQUESTS,
    );
    report.require(
        "server_thread_seen",
        servers.iter().all(|r| r.exchange.tid == fixture.server_tid),
    );
    // The first request carried the traceparent: its server span continues that trace.
    let first = servers.first().map(|r| &r.exchange);
    report.detail(
        "first_trace_id",
        first.map_or_else(|| "none".to_string(), |x| hex(&x.trace_id)),
    );
    report.require(
        "traceparent_trace_id",
        first.is_some_and(|x| x.trace_id == TRACEPARENT_TRACE_ID),
    );
    report.require(
        "traceparent_parent_id",
        first.is_some_and(|x| {
            x.parent_span_id == TRACEPARENT_PARENT_ID && x.flags & http_flags::TRACEPARENT != 0
        }),
    );
    report.detail("http_requests", stats.get(Stat::HttpRequests));
    report.detail("http_responses", stats.get(Stat::HttpResponses));
    report.detail("http_traceparents", stats.get(Stat::HttpTraceparents));
    report.detail("http_events_lost", stats.get(Stat::HttpEventsLost));
    report.detail("http_conns_full", stats.get(Stat::HttpConnsFull));
    report.detail("http_args_full", stats.get(Stat::HttpArgsFull));
    report.detail("http_unrecognized", stats.get(Stat::HttpUnrecognized));
    report.detail("malformed_records", events.malformed);
    report.require("no_events_lost", stats.get(Stat::HttpEventsLost) == 0);
    servers
        .iter()
        .map(|r| (r.exchange.trace_id, r.exchange.span_id))
        .collect()
}

/// Checks that samples of the server thread carry the span of the request it was serving.
fn check_span_link(
    report: &mut ProgramReport,
    fixture: &HttpFixture,
    server_spans: &[([u8; 16], [u8; 8])],
    collector: &Collector,
    stats: &KernelStats,
) {
    let mut server_samples = 0;
    let mut linked = 0;
    let mut foreign = 0;
    let mut spans_sampled = HashSet::new();
    for (sample, &count) in &collector.samples {
        if sample.pid != fixture.pid {
            continue;
        }
        let server = sample.tid == fixture.server_tid;
        if server {
            server_samples += count;
        }
        let Some(span) = sample.span else {
            continue;
        };
        if server && server_spans.contains(&(span.trace_id, span.span_id)) {
            linked += count;
            spans_sampled.insert(span.span_id);
        } else {
            foreign += count;
        }
    }
    report.data = if server_samples > 0 {
        Step::Yes
    } else {
        Step::No
    };
    report.detail("server_thread_samples", server_samples);
    report.detail("span_samples", linked);
    report.detail(
        "spans_sampled",
        format!("{}/{}", spans_sampled.len(), server_spans.len()),
    );
    // Samples labelled with a span no server exchange has (or on another thread).
    report.detail("unmatched_span_samples", foreign);
    report.detail("kernel_samples_in_span", stats.get(Stat::SamplesInSpan));
    report.require("span_linked", linked > 0);
}

/// The status code of the response's status line (`HTTP/1.1 200 OK`).
fn status_code(exchange: &HttpExchange) -> Option<u16> {
    let len = (exchange.response_len as usize).min(exchange.response.len());
    let line = std::str::from_utf8(exchange.response.get(..len)?).ok()?;
    line.strip_prefix("HTTP/1.")?
        .get(2..5)
        .and_then(|code| code.parse().ok())
}

/// The path of the request line (`GET /check HTTP/1.1`).
fn request_path(request: &[u8]) -> Option<&str> {
    let line = request.split(|&b| b == b'\r').next()?;
    std::str::from_utf8(line).ok()?.split(' ').nth(1)
}

/// The HTTP fixture: a server thread and a client on one keep-alive loopback connection. Prints
/// `server_tid=<tid>`, waits for a line on stdin (the parent adds it to the pid filter first),
/// then sends [`HTTP_REQUESTS`] requests, the first with a `traceparent`; the server burns
/// [`REQUEST_BURN`] of CPU on each before it answers.
fn http_fixture() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let (tid_sender, tid) = mpsc::channel();
    let server = thread::Builder::new()
        .name("kcheck-server".to_string())
        .spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            let _ = tid_sender.send(unsafe { libc::gettid() });
            serve(&listener)
        })
        .context("cannot start the server thread")?;
    let tid = tid.recv().context("the server thread ended at once")?;
    println!("server_tid={tid}");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .context("cannot read the go line")?;
    ensure!(go.trim() == "go", "expected `go` on stdin, got {go:?}");

    other_data_syscalls()?;
    // On failure, return at once: the server thread may still wait in accept (exiting ends it).
    request_all(address)?;
    call_h2(address)?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
}

/// Serves [`HTTP_REQUESTS`] requests on the first connection, then the HTTP/2 call on the
/// second.
fn serve(listener: &TcpListener) -> Result<()> {
    serve_http1(listener)?;
    serve_h2(listener)
}

fn serve_http1(listener: &TcpListener) -> Result<()> {
    let (mut stream, _) = listener.accept().context("accept failed")?;
    stream
        .set_read_timeout(Some(HTTP_IO_TIMEOUT))
        .context("cannot set a read timeout")?;
    let mut buf = [0u8; 2048];
    for index in 0..HTTP_REQUESTS {
        let mut len = 0;
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            ensure!(
                len < buf.len(),
                "request {index} is larger than {} bytes",
                buf.len()
            );
            let n = stream
                .read(&mut buf[len..])
                .with_context(|| format!("reading request {index}"))?;
            ensure!(
                n > 0,
                "the client closed the connection before request {index}"
            );
            len += n;
        }
        black_box(handle_request());
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok",
            )
            .with_context(|| format!("writing response {index}"))?;
    }
    Ok(())
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK header block of literal fields without indexing (short names and values).
fn h2_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// The HTTP/2 call's request, as the buffers of one `writev`: preface, SETTINGS, HEADERS and
/// DATA (a gRPC message) ending the stream.
fn h2_request() -> [Vec<u8>; 4] {
    const HEADERS: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let fields = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", GRPC_PATH),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        h2_frame(4, 0, 0, &[]),
        h2_frame(HEADERS, END_HEADERS, 1, &h2_block(&fields)),
        h2_frame(0, END_STREAM, 1, &[0, 0, 0, 0, 4, b'p', b'i', b'n', b'g']),
    ]
}

/// The HTTP/2 call's response: HEADERS, a [`H2_RESPONSE_MESSAGE`]-byte gRPC message in 16 KiB
/// DATA frames, trailers with `grpc-status: 0`. Written with one `write` and read with large
/// `read`s, it takes several records per syscall, so frame headers arrive only if the kernel's
/// continuation program sends them.
fn h2_response() -> Vec<u8> {
    const HEADERS: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let mut response = h2_frame(
        HEADERS,
        END_HEADERS,
        1,
        &h2_block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    let mut message = vec![0u8];
    message.extend_from_slice(&(H2_RESPONSE_MESSAGE as u32).to_be_bytes());
    message.extend((0..H2_RESPONSE_MESSAGE).map(|i| b'a' + (i % 26) as u8));
    for payload in message.chunks(16 * 1024) {
        response.extend(h2_frame(0, 0, 1, payload));
    }
    response.extend(h2_frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &h2_block(&[("grpc-status", "0")]),
    ));
    response
}

/// Serves the HTTP/2 call: reads the whole request, writes the whole response.
fn serve_h2(listener: &TcpListener) -> Result<()> {
    let (mut stream, _) = listener.accept().context("accept failed (HTTP/2)")?;
    stream
        .set_read_timeout(Some(HTTP_IO_TIMEOUT))
        .context("cannot set a read timeout")?;
    let expected: usize = h2_request().iter().map(Vec::len).sum();
    let mut request = vec![0u8; expected];
    stream
        .read_exact(&mut request)
        .context("reading the HTTP/2 request")?;
    stream
        .write_all(&h2_response())
        .context("writing the HTTP/2 response")
}

/// The client side of the HTTP/2 call.
fn call_h2(address: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, HTTP_IO_TIMEOUT)
        .with_context(|| format!("cannot connect to the server on {address} (HTTP/2)"))?;
    stream
        .set_read_timeout(Some(HTTP_IO_TIMEOUT))
        .context("cannot set a read timeout")?;
    let buffers = h2_request();
    let slices: Vec<IoSlice<'_>> = buffers.iter().map(|b| IoSlice::new(b)).collect();
    let total: usize = buffers.iter().map(Vec::len).sum();
    let written = stream
        .write_vectored(&slices)
        .context("writing the HTTP/2 request")?;
    ensure!(
        written == total,
        "writev wrote {written} of {total} request bytes"
    );
    let mut response = vec![0u8; h2_response().len()];
    stream
        .read_exact(&mut response)
        .context("reading the HTTP/2 response")
}

/// What the server does for a request: burn CPU (its samples carry the request's span).
#[inline(never)]
fn handle_request() -> u64 {
    burn(REQUEST_BURN)
}

/// The client: [`HTTP_REQUESTS`] requests on one connection, each answered before the next.
fn request_all(address: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, HTTP_IO_TIMEOUT)
        .with_context(|| format!("cannot connect to the server on {address}"))?;
    stream
        .set_read_timeout(Some(HTTP_IO_TIMEOUT))
        .context("cannot set a read timeout")?;
    for index in 0..HTTP_REQUESTS {
        let traceparent = if index == 0 {
            format!(
                "traceparent: 00-{}-{}-01\r\n",
                hex(&TRACEPARENT_TRACE_ID),
                hex(&TRACEPARENT_PARENT_ID)
            )
        } else {
            String::new()
        };
        let request = format!(
            "GET {HTTP_PATH} HTTP/1.1\r\nHost: {address}\r\n{traceparent}Accept: */*\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .with_context(|| format!("writing request {index}"))?;
        read_response(&mut stream).with_context(|| format!("reading response {index}"))?;
    }
    Ok(())
}

/// Reads one `200` response with a `Content-Length` body.
fn read_response(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 1024];
    let mut len = 0;
    loop {
        let text = String::from_utf8_lossy(&buf[..len]);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            ensure!(
                head.starts_with("HTTP/1.1 200 "),
                "unexpected response {head:?}"
            );
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("Content-Length: "))
                .and_then(|value| value.trim().parse().ok())
                .context("the response has no Content-Length")?;
            if body.len() >= length {
                return Ok(());
            }
        }
        ensure!(
            len < buf.len(),
            "the response is larger than {} bytes",
            buf.len()
        );
        let n = stream.read(&mut buf[len..]).context("read failed")?;
        ensure!(n > 0, "the server closed the connection");
        len += n;
    }
}

/// Makes the data syscalls the exchange does not (`writev`/`readv`, `sendmsg`/`recvmsg`,
/// `sendfile`) on a socket pair, so each HTTP program runs at least once.
fn other_data_syscalls() -> Result<()> {
    let (mut a, mut b) = UnixStream::pair().context("cannot create a socket pair")?;
    let mut buf = [0u8; 64];
    a.write_vectored(&[IoSlice::new(b"writev")])
        .context("writev failed")?;
    b.read_vectored(&mut [IoSliceMut::new(&mut buf)])
        .context("readv failed")?;

    // std has no stable sendmsg/recvmsg.
    let mut data = *b"sendmsg";
    message_syscall("sendmsg", &mut data, |message| {
        // SAFETY: `message` points to one iovec over `data`, both alive for the call.
        unsafe { libc::sendmsg(a.as_raw_fd(), message, 0) }
    })?;
    message_syscall("recvmsg", &mut buf, |message| {
        // SAFETY: as above, with the iovec over `buf`, which the kernel writes.
        unsafe { libc::recvmsg(b.as_raw_fd(), message, 0) }
    })?;

    let file = fs::File::open("/proc/self/exe").context("cannot open /proc/self/exe")?;
    // SAFETY: both fds are open for the call; a null offset uses (and moves) the file position.
    let sent = unsafe { libc::sendfile(a.as_raw_fd(), file.as_raw_fd(), std::ptr::null_mut(), 16) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("sendfile failed");
    }
    Ok(())
}

/// Calls `syscall` with a `msghdr` whose one iovec covers `data`.
fn message_syscall(
    name: &str,
    data: &mut [u8],
    syscall: impl FnOnce(&mut libc::msghdr) -> isize,
) -> Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid: no address, no control data, no iovecs.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if syscall(&mut message) < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("{name} failed"));
    }
    Ok(())
}

/// The kernel's per-program statistics (`run_cnt` of `bpf_prog_info`), enabled with
/// `BPF_ENABLE_STATS` for as long as this value lives (kernels >= 5.8).
///
/// Raw `bpf(2)` calls, not aya: only `profiler_agent::ebpf` may use aya, and this is test
/// instrumentation the agent itself does not need.
struct BpfStats {
    /// Statistics stay enabled until this is closed.
    _enabled: OwnedFd,
}

/// `enum bpf_cmd` values and `struct bpf_prog_info` offsets from `include/uapi/linux/bpf.h`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const PROG_INFO_NAME: usize = 64;
const PROG_INFO_RUN_CNT: usize = 200;
/// `verified_insns` (kernels >= 5.16; older ones leave it zero).
const PROG_INFO_VERIFIED_INSNS: usize = 216;
/// Large enough for every field up to `verified_insns` (the kernel copies what both sides know).
const PROG_INFO_LEN: usize = 224;

/// Calls `bpf(cmd, attr)` with a zero-padded `union bpf_attr`.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 18]) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable buffer of the size passed; the kernel reads and writes
    // only within it (and within the buffers it points to, which the callers own).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let mut attr = [0u64; 18];
        attr[0] = u64::from(BPF_STATS_RUN_TIME);
        let fd = bpf(BPF_ENABLE_STATS, &mut attr).context("BPF_ENABLE_STATS failed")?;
        let fd = i32::try_from(fd).context("BPF_ENABLE_STATS returned an invalid fd")?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(BpfStats { _enabled: fd })
    }

    /// Run counts of the programs this process holds open, by name.
    fn run_counts(&self) -> Result<HashMap<String, u64>> {
        let programs = self.programs()?;
        Ok(programs
            .into_iter()
            .map(|(name, p)| (name, p.runs))
            .collect())
    }

    /// What the kernel reports about the programs this process holds open, by name.
    fn programs(&self) -> Result<HashMap<String, ProgramStats>> {
        let mut programs: HashMap<String, ProgramStats> = HashMap::new();
        for entry in fs::read_dir("/proc/self/fd").context("cannot list /proc/self/fd")? {
            let entry = entry.context("cannot list /proc/self/fd")?;
            let is_prog = fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-prog");
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !is_prog {
                continue;
            }
            let mut info = [0u8; PROG_INFO_LEN];
            let mut attr = [0u64; 18];
            attr[0] = u64::from(fd) | ((PROG_INFO_LEN as u64) << 32);
            attr[1] = info.as_mut_ptr() as u64;
            bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
                .with_context(|| format!("BPF_OBJ_GET_INFO_BY_FD failed on fd {fd}"))?;
            let name = &info[PROG_INFO_NAME..PROG_INFO_NAME + 16];
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = String::from_utf8_lossy(&name[..len]).into_owned();
            let mut run_cnt = [0u8; 8];
            run_cnt.copy_from_slice(&info[PROG_INFO_RUN_CNT..PROG_INFO_RUN_CNT + 8]);
            let mut verified_insns = [0u8; 4];
            verified_insns
                .copy_from_slice(&info[PROG_INFO_VERIFIED_INSNS..PROG_INFO_VERIFIED_INSNS + 4]);
            let program = programs.entry(name).or_default();
            program.runs += u64::from_ne_bytes(run_cnt);
            program.verified_insns = program
                .verified_insns
                .max(u32::from_ne_bytes(verified_insns));
        }
        Ok(programs)
    }
}

/// What the kernel reports about one loaded program.
#[derive(Clone, Copy, Debug, Default)]
struct ProgramStats {
    /// Times it ran while statistics were enabled.
    runs: u64,
    /// Instructions the verifier processed to accept it (the limit is 1 million); 0 on kernels
    /// before 5.16, which do not report it.
    verified_insns: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blames_the_program_that_failed_to_start() {
        let programs: Vec<&'static str> = HTTP_PROGRAMS.iter().map(|&(name, _)| name).collect();
        let error = SamplerError::Missing {
            name: "on_read_exit".to_string(),
        };
        let reports = start_failed(&programs, &error);
        let failed = programs
            .iter()
            .position(|&p| p == "on_read_exit")
            .expect("on_read_exit is an HTTP program");
        for report in &reports[..failed] {
            assert_eq!(
                (report.loaded, report.attached, report.data),
                (Step::Yes, Step::Yes, Step::Unknown)
            );
            assert_eq!(report.failure(), None, "{}", report.program);
        }
        let report = &reports[failed];
        assert_eq!(report.loaded, Step::No);
        assert!(report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("on_read_exit")));
        assert!(report.failure().is_some());
        for report in &reports[failed + 1..] {
            assert_eq!(report.loaded, Step::NotTried, "{}", report.program);
        }
    }

    #[test]
    fn reads_status_codes_and_paths() {
        // SAFETY: all-zero is a valid HttpExchange (integers and byte arrays).
        let mut exchange: HttpExchange = unsafe { std::mem::zeroed() };
        let status = b"HTTP/1.1 200 OK\r\nContent-Le";
        exchange.response[..status.len()].copy_from_slice(status);
        exchange.response_len = status.len() as u32;
        assert_eq!(status_code(&exchange), Some(200));
        exchange.response_len = 11;
        assert_eq!(status_code(&exchange), None, "cut inside the code");
        assert_eq!(
            request_path(b"GET /check HTTP/1.1\r\nHost: x\r\n"),
            Some("/check")
        );
        assert_eq!(request_path(b"GET"), None);
    }

    #[test]
    fn names_the_verifier_verdict() {
        // As 5.10 rejected a program calling bpf_loop (5.17+).
        let message = "eBPF program `on_process_fork`: the BPF_PROG_LOAD syscall returned \
                       Invalid argument (os error 22). Verifier output: arg#0 type is not a struct\n\
                       6: (85) call unknown#181\n\
                       invalid func unknown#181\n\
                       verification time 326 usec\n\
                       stack depth 0\n\
                       processed 7 insns (limit 1000000) max_states_per_insn 0\n";
        assert_eq!(
            short_reason(message),
            "BPF_PROG_LOAD failed (Invalid argument (os error 22)): invalid func unknown#181"
        );
        assert_eq!(
            short_reason("perf_event_open failed on cpu 1: no such device\nmore"),
            "perf_event_open failed on cpu 1: no such device"
        );
    }
}
