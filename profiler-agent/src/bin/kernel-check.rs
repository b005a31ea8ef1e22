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
//! Two checks run, each with its own sampler at [`FREQUENCY_HZ`]:
//! 1. pid filter: sample only this process while it burns CPU in [`kernel_check_hot_loop`];
//!    the hot function must come back symbolized, with `main` on its (frame-pointer) stack.
//! 2. follow children: the same filter with `follow_children`, which attaches the
//!    `sched_process_fork`/`sched_process_exit` tracepoints; a child process (this binary with
//!    [`CHILD_ARG`]) and a thread it starts burn CPU, and their samples must arrive.
//!
//! The tracepoint programs change only the pid filter, which the agent does not read back, so
//! their run counts come from the kernel's BPF statistics ([`BpfStats`]).

use std::{
    collections::HashMap,
    fmt, fs,
    hint::black_box,
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, ExitCode},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use profiler_agent::{
    collect::Collector,
    ebpf::{Sampler, SamplerError, SamplerOptions},
    profile::Profile,
    symbolize::Symbolizer,
};
use profiler_common::{Stat, PROG_ON_CPU_SAMPLE, PROG_ON_PROCESS_EXIT, PROG_ON_PROCESS_FORK};

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_ARG) {
        child_fixture();
        return ExitCode::SUCCESS;
    }
    if !args.is_empty() {
        eprintln!("usage: kernel-check (as root; prints KCHECK lines and a KCHECK-RESULT)");
        return ExitCode::from(2);
    }
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("KCHECK-KERNEL {}", kernel.trim());

    let stats = BpfStats::enable();
    if let Err(error) = &stats {
        println!("KCHECK-NOTE tracepoint run counts unavailable: {error:#}");
    }
    let stats = stats.ok();
    let mut failures = Vec::new();
    for report in check_pid_filter(stats.as_ref())
        .into_iter()
        .chain(check_follow_children(stats.as_ref()))
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
/// Large enough for every field up to `run_cnt` (the kernel copies what both sides know).
const PROG_INFO_LEN: usize = 208;

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
        let mut runs = HashMap::new();
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
            *runs.entry(name).or_default() += u64::from_ne_bytes(run_cnt);
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::short_reason;

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
