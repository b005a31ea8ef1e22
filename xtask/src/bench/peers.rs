//! Entry 4, against peers: the same workload (the `burn3` fixture) profiled over the whole machine
//! for the same window by our agent, by `perf record -g` + `perf script` + `inferno-collapse-perf`,
//! and by bpftrace, one tool at a time in an order that rotates over repeats. For each
//! tool: the CPU time and peak RSS it spends from start to a symbolized folded-stack file, and how
//! the share of burn3's samples it gives each of perf's top-10 functions compares with perf's.
//! Start at [`run`]; [`run_tool`] runs one pipeline, [`super::folded`] reads the results and
//! [`report`] writes the section.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    create_file,
    folded::{self, Shares},
    reset_peak_rss, wait_for,
};
use crate::run_checked;

mod report;

use report::mib;

/// Samples per second on each CPU, for every tool.
const SAMPLE_FREQUENCY_HZ: u64 = 99;
/// The workload's comm: shares are taken within its samples.
const WORKLOAD_COMM: &str = "burn3";
/// burn3's own functions (`main` and what it calls), compared on their own as well.
const WORKLOAD_FUNCTIONS: [&str; 4] = ["main", "burn_alpha", "burn_beta", "burn_gamma"];
/// How many of perf's top functions are compared.
const TOP: usize = 10;
/// Target: each of perf's top functions within this many percentage points in the other tool.
const AGREEMENT_POINTS: f64 = 2.0;
/// Target: our whole pipeline below this fraction of the perf pipeline's CPU.
const PERF_CPU_RATIO: f64 = 0.1;
/// inferno's version in the workspace's `[workspace.dependencies]`: its `inferno-collapse-perf`
/// is installed into the tools cache (a release build, as users run it).
const INFERNO_VERSION: &str = "0.12.8";
/// bpftrace's default map size (`BPFTRACE_MAP_KEYS_MAX`): past it, new stacks are not counted.
const BPFTRACE_MAP_KEYS: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tool {
    Ours,
    Perf,
    Bpftrace,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Ours, Tool::Perf, Tool::Bpftrace];

    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "our agent",
            Tool::Perf => "perf pipeline",
            Tool::Bpftrace => "bpftrace",
        }
    }
}

/// One process of a pipeline, or a step xtask runs itself (measured on its own thread).
struct Step {
    name: &'static str,
    cpu: Duration,
    peak_rss_kib: u64,
}

/// One tool's run, from start to a folded-stack file.
struct PipelineRun {
    steps: Vec<Step>,
    /// The largest RSS the pipeline held at once (steps that overlap in time are summed).
    peak_rss_kib: u64,
    /// How long from the tool's start to its folded file.
    wall: Duration,
    /// Inclusive shares within the workload's samples. perf's counts are sample periods (what
    /// `inferno-collapse-perf` counts), so its shares are weighted like `perf report`'s.
    shares: Shares,
    /// Samples of the workload.
    samples: u64,
    /// xtask's RSS right before the tool started: the floor of every `ru_maxrss` (see
    /// [`reset_peak_rss`]).
    xtask_rss_kib: u64,
    frames: folded::FrameCounts,
    /// bpftrace only: entries in its map (stacks past [`BPFTRACE_MAP_KEYS`] are lost).
    map_entries: Option<usize>,
}

impl PipelineRun {
    fn cpu(&self) -> Duration {
        steps_cpu(&self.steps)
    }

    fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// The CPU time of a pipeline's steps together.
fn steps_cpu(steps: &[Step]) -> Duration {
    steps.iter().map(|s| s.cpu).sum()
}

/// What is fixed for every run.
struct Setup<'a> {
    agent: &'a Path,
    /// `inferno-collapse-perf`, when it could be installed.
    collapser: Option<PathBuf>,
    burn3: PathBuf,
    dir: PathBuf,
    seconds: u64,
    /// The agent's cache (`PROFILER_CACHE`: the kernel's symbol table, decompressed debug
    /// files): filled before the repeats, so every measured run of ours starts as every run but
    /// the first of a boot does.
    cache: PathBuf,
}

/// Runs the entry and returns its section of BENCHMARKS.md (without the heading). A peer that
/// cannot be installed or fails is reported in the section (and fails the run with `smoke`).
pub fn run(
    root: &Path,
    agent: &Path,
    bench_dir: &Path,
    seconds: u64,
    repeats: usize,
    smoke: bool,
) -> Result<String> {
    let dir = bench_dir.join("peers");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let burn3 = dir.join(WORKLOAD_COMM);
    run_checked(
        Command::new("gcc")
            .args(["-O2", "-fno-omit-frame-pointer", "-o"])
            .arg(&burn3)
            .arg(root.join("tests/fixtures/burn3.c")),
    )?;
    let (mut unavailable, collapser) = install_peers();
    let cache = dir.join("agent-cache");
    let setup = Setup {
        agent,
        collapser,
        burn3,
        dir,
        seconds,
        cache,
    };
    if smoke {
        if let Some((tool, reason)) = unavailable.iter().next() {
            bail!("{} cannot run: {reason}", tool.name());
        }
    }
    let cache_cost = cache_cost_of(&setup, repeats)?;
    let mut repeat_runs: Vec<BTreeMap<Tool, PipelineRun>> = Vec::new();
    for repeat in 0..repeats {
        let mut runs = BTreeMap::new();
        // Rotate the order so no tool always runs first (or right after another one).
        for index in 0..Tool::ALL.len() {
            let tool = Tool::ALL[(repeat + index) % Tool::ALL.len()];
            if unavailable.contains_key(&tool) {
                continue;
            }
            match run_tool(&setup, tool) {
                Ok(run) => {
                    eprintln!(
                        "peers, repeat {}: {} used {:.2} s of CPU, peak RSS {:.1} MiB, {:.1} s \
                         of wall time, {} samples of {WORKLOAD_COMM}",
                        repeat + 1,
                        tool.name(),
                        run.cpu().as_secs_f64(),
                        mib(run.peak_rss_kib),
                        run.wall.as_secs_f64(),
                        run.samples
                    );
                    runs.insert(tool, run);
                }
                Err(error) if tool != Tool::Ours && !smoke => {
                    eprintln!(
                        "warning: {} failed; the report says so and leaves it out: {error:#}",
                        tool.name()
                    );
                    unavailable.insert(tool, format!("{error:#}"));
                }
                Err(error) => {
                    return Err(error.context(format!("{} in the peers benchmark", tool.name())))
                }
            }
        }
        repeat_runs.push(runs);
    }
    Ok(report::render(
        &setup,
        repeats,
        &repeat_runs,
        &cache_cost,
        &unavailable,
    ))
}

/// Installs perf, `inferno-collapse-perf` and bpftrace when missing; returns the tools that
/// cannot run, with why, and the collapser.
fn install_peers() -> (BTreeMap<Tool, String>, Option<PathBuf>) {
    let mut unavailable = BTreeMap::new();
    for (tool, program, package) in [
        (Tool::Perf, "perf", "linux-perf"),
        (Tool::Bpftrace, "bpftrace", "bpftrace"),
    ] {
        let runs = || {
            Command::new(program)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if runs() {
            continue;
        }
        if let Err(error) = crate::apt_install(&[package]) {
            unavailable.insert(tool, format!("`{program}` is missing: {error:#}"));
        } else if !runs() {
            unavailable.insert(
                tool,
                format!("`{program} --version` fails after installing {package}"),
            );
        }
    }
    let collapser = match install_collapser() {
        Ok(collapser) => Some(collapser),
        Err(error) => {
            unavailable
                .entry(Tool::Perf)
                .or_insert_with(|| format!("{error:#}"));
            None
        }
    };
    (unavailable, collapser)
}

/// Installs `inferno-collapse-perf` into the tools cache unless it is there; returns its path.
fn install_collapser() -> Result<PathBuf> {
    let root = crate::ebpf_build::tools_dir().join(format!("inferno-{INFERNO_VERSION}"));
    let binary = root.join("bin/inferno-collapse-perf");
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!(
        "building inferno-collapse-perf {INFERNO_VERSION} into {} (under a minute, once)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_checked(
        Command::new(cargo)
            .args([
                "install",
                "--locked",
                "--bin",
                "inferno-collapse-perf",
                "--root",
            ])
            .arg(&root)
            .arg(format!("inferno@{INFERNO_VERSION}"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("installing inferno-collapse-perf")?;
    Ok(binary)
}

/// Runs burn3 and one tool's whole pipeline over it, then stops burn3.
///
/// burn3 runs from before the tool starts until its folded file is written: bpftrace resolves
/// user frames only when it prints its map at exit, from the live process's mappings.
fn run_tool(setup: &Setup, tool: Tool) -> Result<PipelineRun> {
    let mut workload = Workload::start(&setup.burn3, &setup.dir, setup.seconds)?;
    let xtask_rss_kib = own_status_kib("VmRSS")?;
    let started = Instant::now();
    let pipeline = match tool {
        Tool::Ours => run_ours(setup, setup.seconds, "ours")?,
        Tool::Perf => run_perf(setup)?,
        Tool::Bpftrace => run_bpftrace(setup)?,
    };
    let wall = started.elapsed();
    workload.stop()?;
    let folded_path = &pipeline.folded;
    let text = fs::read_to_string(folded_path)
        .with_context(|| format!("reading {}", folded_path.display()))?;
    let shares = folded::inclusive_shares(&text, WORKLOAD_COMM)
        .with_context(|| format!("reading {}", folded_path.display()))?;
    let samples = pipeline.workload_samples.unwrap_or(shares.samples);
    let expected = SAMPLE_FREQUENCY_HZ * setup.seconds;
    // burn3 keeps one CPU busy all along: a quarter of its samples is a generous floor.
    if samples < expected / 4 {
        bail!(
            "{} recorded {samples} samples of {WORKLOAD_COMM} over {} s at {SAMPLE_FREQUENCY_HZ} \
             Hz (expected about {expected}); see {}",
            tool.name(),
            setup.seconds,
            folded_path.display()
        );
    }
    Ok(PipelineRun {
        frames: folded::frame_counts(&text)
            .with_context(|| format!("reading {}", folded_path.display()))?,
        steps: pipeline.steps,
        peak_rss_kib: pipeline.peak_rss_kib,
        wall,
        shares,
        samples,
        xtask_rss_kib,
        map_entries: pipeline.map_entries,
    })
}

/// What one tool's pipeline produced.
struct Pipeline {
    steps: Vec<Step>,
    /// See [`PipelineRun::peak_rss_kib`].
    peak_rss_kib: u64,
    folded: PathBuf,
    /// See [`PipelineRun::map_entries`].
    map_entries: Option<usize>,
    /// The workload's samples, where the folded counts are not samples (perf's are periods).
    workload_samples: Option<u64>,
}

/// CPU of short recordings of ours (burn3 running) without, then with, the agent's cache:
/// what reading `/proc/kallsyms` and decompressing separate debug files (libc's, here) cost the
/// first run of a boot. Once per repeat. The kernel's table is read at the first kernel frame,
/// and burn3 enters the kernel rarely (about 1 % of its samples): 5 s make a recording without
/// any kernel frame unlikely.
fn cache_cost_of(setup: &Setup, repeats: usize) -> Result<CacheCost> {
    const SECONDS: u64 = 5;
    let mut cost = CacheCost::default();
    for _ in 0..repeats {
        let mut workload = Workload::start(&setup.burn3, &setup.dir, SECONDS * 3)?;
        if setup.cache.exists() {
            fs::remove_dir_all(&setup.cache)
                .with_context(|| format!("removing {}", setup.cache.display()))?;
        }
        let cold = run_ours(setup, SECONDS, "ours-cold")?;
        let warm = run_ours(setup, SECONDS, "ours-warm")?;
        workload.stop()?;
        cost.seconds = SECONDS;
        cost.cold.push(steps_cpu(&cold.steps).as_secs_f64());
        cost.warm.push(steps_cpu(&warm.steps).as_secs_f64());
    }
    Ok(cost)
}

/// See [`cache_cost_of`].
#[derive(Default)]
struct CacheCost {
    seconds: u64,
    /// CPU seconds per recording, without the cache and with it.
    cold: Vec<f64>,
    warm: Vec<f64>,
}

/// `profiler-agent record --all` for `seconds`, writing folded stacks itself to `NAME.folded`.
fn run_ours(setup: &Setup, seconds: u64, name: &str) -> Result<Pipeline> {
    let output = setup.dir.join(format!("{name}.folded"));
    let log = setup.dir.join(format!("{name}.log"));
    reset_peak_rss()?;
    let child = Command::new(setup.agent)
        .env("PROFILER_CACHE", &setup.cache)
        .args(["record", "--all", "--quiet", "--frequency"])
        .arg(SAMPLE_FREQUENCY_HZ.to_string())
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--output")
        .arg(&output)
        .stdout(Stdio::null())
        .stderr(create_file(&log)?)
        .spawn()
        .context("starting profiler-agent record")?;
    let record = wait_logged(child, "profiler-agent record", &log)?;
    let peak = record.peak_rss_kib;
    Ok(Pipeline {
        steps: vec![record],
        peak_rss_kib: peak,
        folded: output,
        map_entries: None,
        workload_samples: None,
    })
}

/// `perf record -g`, then `perf script | inferno-collapse-perf --kernel`.
fn run_perf(setup: &Setup) -> Result<Pipeline> {
    let collapser = setup
        .collapser
        .as_deref()
        .context("inferno-collapse-perf is not installed")?;
    let data = setup.dir.join("perf.data");
    let output = setup.dir.join("perf.folded");
    let record_log = setup.dir.join("perf-record.log");
    reset_peak_rss()?;
    let child = Command::new("perf")
        .args(["record", "-F"])
        .arg(SAMPLE_FREQUENCY_HZ.to_string())
        .args(["-a", "-g", "-o"])
        .arg(&data)
        .args(["--", "sleep"])
        .arg(setup.seconds.to_string())
        .stdout(Stdio::null())
        .stderr(create_file(&record_log)?)
        .spawn()
        .context("starting perf record")?;
    let record = wait_logged(child, "perf record", &record_log)?;

    let script_log = setup.dir.join("perf-script.log");
    reset_peak_rss()?;
    let mut script = Command::new("perf")
        .args(["script", "-i"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(create_file(&script_log)?)
        .spawn()
        .context("starting perf script")?;
    let pipe = script
        .stdout
        .take()
        .context("perf script has no stdout pipe")?;
    let collapse_log = setup.dir.join("inferno-collapse-perf.log");
    // `--kernel` marks kernel frames `_[k]`, as our folded output does.
    let collapse = create_file(&output).and_then(|folded| {
        Command::new(collapser)
            .arg("--kernel")
            .stdin(pipe)
            .stdout(folded)
            .stderr(create_file(&collapse_log)?)
            .spawn()
            .context("starting inferno-collapse-perf")
    });
    // Wait for perf script in every case: without the collapser its pipe is closed, and it ends.
    let script = wait_logged(script, "perf script", &script_log);
    let collapse = wait_logged(collapse?, "inferno-collapse-perf", &collapse_log)?;
    let script = script?;
    // perf script and the collapse run at once; perf record before them.
    let peak = record
        .peak_rss_kib
        .max(script.peak_rss_kib + collapse.peak_rss_kib);
    Ok(Pipeline {
        steps: vec![record, script, collapse],
        peak_rss_kib: peak,
        folded: output,
        map_entries: None,
        workload_samples: Some(perf_samples(&data, WORKLOAD_COMM)?),
    })
}

/// Counts the samples of `comm` in `data` (not part of the measured pipeline: only the comm is
/// printed, nothing is symbolized).
fn perf_samples(data: &Path, comm: &str) -> Result<u64> {
    let output = Command::new("perf")
        .args(["script", "-F", "comm", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script -F comm")?;
    if !output.status.success() {
        bail!("perf script -F comm failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().filter(|l| l.trim() == comm).count() as u64)
}

/// bpftrace's one-liner with an `interval` probe ending it, then its printed map converted into
/// folded stacks here.
fn run_bpftrace(setup: &Setup) -> Result<Pipeline> {
    let printed = setup.dir.join("bpftrace.out");
    let output = setup.dir.join("bpftrace.folded");
    let log = setup.dir.join("bpftrace.log");
    reset_peak_rss()?;
    let child = Command::new("bpftrace")
        .arg("-e")
        .arg(bpftrace_program(setup.seconds))
        .stdout(create_file(&printed)?)
        .stderr(create_file(&log)?)
        .spawn()
        .context("starting bpftrace")?;
    let bpftrace = wait_logged(child, "bpftrace", &log)?;
    let text =
        fs::read_to_string(&printed).with_context(|| format!("reading {}", printed.display()))?;
    let entries = text.lines().filter(|l| l.starts_with("@[")).count();
    let (folded_text, convert) = in_process("conversion to folded (in xtask)", || {
        folded::bpftrace_to_folded(&text)
            .with_context(|| format!("reading bpftrace's output {}", printed.display()))
    })?;
    fs::write(&output, folded_text).with_context(|| format!("writing {}", output.display()))?;
    // The conversion starts after bpftrace has exited.
    let peak = bpftrace.peak_rss_kib.max(convert.peak_rss_kib);
    Ok(Pipeline {
        steps: vec![bpftrace, convert],
        peak_rss_kib: peak,
        folded: output,
        map_entries: Some(entries),
        workload_samples: None,
    })
}

fn bpftrace_program(seconds: u64) -> String {
    format!(
        "profile:hz:{SAMPLE_FREQUENCY_HZ} {{ @[ustack, kstack, comm] = count(); }} \
         interval:s:{seconds} {{ exit(); }}"
    )
}

/// Runs `work` on this thread and measures it: this thread's CPU time, and xtask's peak RSS
/// over the call (the high-water mark is reset first, so it is xtask's few MiB plus what
/// `work` holds at most).
fn in_process<T>(name: &'static str, work: impl FnOnce() -> Result<T>) -> Result<(T, Step)> {
    reset_peak_rss()?;
    let before = thread_cpu()?;
    let value = work()?;
    let cpu = thread_cpu()?.saturating_sub(before);
    Ok((
        value,
        Step {
            name,
            cpu,
            peak_rss_kib: own_peak_rss_kib()?,
        },
    ))
}

/// User + system CPU time of the calling thread.
fn thread_cpu() -> Result<Duration> {
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes into a local we own.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage(RUSAGE_THREAD)");
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

/// xtask's peak RSS since the last reset (VmHWM).
fn own_peak_rss_kib() -> Result<u64> {
    own_status_kib("VmHWM")
}

/// A `kB` field of /proc/self/status.
fn own_status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// Waits for `child` and returns its rusage; on failure the error carries its log.
fn wait_logged(child: Child, name: &'static str, log: &Path) -> Result<Step> {
    let usage = wait_for(child.id(), Instant::now(), name).with_context(|| {
        format!(
            "{name} failed; its output ({}):\n{}",
            log.display(),
            fs::read_to_string(log).unwrap_or_default()
        )
    })?;
    Ok(Step {
        name,
        cpu: usage.cpu,
        peak_rss_kib: usage.max_rss_kib,
    })
}

/// burn3 running for longer than any pipeline takes, killed on [`Workload::stop`] or drop.
struct Workload {
    child: Child,
}

impl Workload {
    /// Starts burn3 and gives it 200 ms to start before a tool looks at the processes.
    fn start(binary: &Path, dir: &Path, seconds: u64) -> Result<Workload> {
        // burn3's argument is CPU seconds; it is stopped once the tool is done.
        let child = Command::new(binary)
            .arg((seconds * 2 + 300).to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        thread::sleep(Duration::from_millis(200));
        Ok(Workload { child })
    }

    /// Checks that burn3 ran all along, and stops it.
    fn stop(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("checking on burn3")? {
            bail!("{WORKLOAD_COMM} ended before the tool was done: {status}");
        }
        self.child.kill().context("stopping burn3")?;
        self.child.wait().context("waiting for burn3")?;
        Ok(())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
