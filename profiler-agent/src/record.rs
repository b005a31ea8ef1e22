//! `profiler-agent record`: profile a command, some processes or the whole machine for a while
//! and write one profile file. Owns the loop: start the sampler, drain it every second, stop on
//! the deadline, the command's exit, the processes' exit or Ctrl-C, then symbolize and encode.

use std::{
    ffi::CString,
    fs::File,
    io::{BufWriter, IsTerminal, Write},
    os::unix::{fs::PermissionsExt, io::FromRawFd, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use profiler_common::Stat;

use crate::{
    agent::{check_frequency, check_pids, process_exists, Profiler},
    collect::StackLoss,
    ebpf::{KernelStats, SamplerOptions},
    encode::{self, OutputFormat},
    http_capture::{CaptureSinks, HttpCapture},
    metadata::Metadata,
    signals,
    symbolize::SymbolizeStats,
};

/// How often the kernel maps are drained (and new processes' mappings read).
const DRAIN_INTERVAL: Duration = Duration::from_secs(1);

/// What `record` was asked to do (parsed by `main.rs`).
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub pids: Vec<u32>,
    pub all: bool,
    pub command: Vec<String>,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub output: PathBuf,
    pub format: Option<OutputFormat>,
    pub follow_children: bool,
    pub quiet: bool,
    /// Capture HTTP requests and write them here as JSON lines (samples then carry the span
    /// they were taken in).
    pub spans: Option<PathBuf>,
}

/// What the recording is limited to.
enum Target {
    All,
    Pids(Vec<u32>),
    Command(RunningCommand),
}

/// Records and writes the profile. Returns the exit code for the agent: the command's (as a
/// shell reports it, 128 + signal when killed) in `-- COMMAND` mode, else 0.
pub fn run(options: RecordOptions) -> Result<u8> {
    let targets = [
        !options.pids.is_empty(),
        options.all,
        !options.command.is_empty(),
    ];
    match targets.iter().filter(|&&t| t).count() {
        0 => bail!("nothing to record: give --pid PID, --all, or a command after `--`"),
        1 => {}
        _ => bail!("--pid, --all and a command after `--` exclude each other: pick one"),
    }
    check_frequency(options.frequency_hz)?;
    let format = match options.format {
        Some(format) => format,
        None => OutputFormat::from_path(&options.output).with_context(|| {
            format!(
                "cannot tell the output format from {}: use a .pb.gz, .folded, .txt or .svg \
                 name, or --format",
                options.output.display()
            )
        })?,
    };
    check_pids(&options.pids)?;
    // Fail on an unwritable output before recording, not after; the file appears (or replaces
    // an older one) only once the profile is complete.
    let output = OutputFile::create(&options.output)?;

    signals::install();
    let mut launcher = None;
    let sampler_pids = if options.all {
        None
    } else if !options.command.is_empty() {
        let held = HeldCommand::spawn(&options.command)?;
        let pid = held.pid as u32;
        launcher = Some(held);
        Some(vec![pid])
    } else {
        Some(options.pids.clone())
    };
    let started = Profiler::start(&SamplerOptions {
        frequency_hz: options.frequency_hz,
        pids: sampler_pids,
        follow_children: options.follow_children,
        http_capture: options.spans.is_some(),
    })
    .context("cannot start the CPU sampler")
    .and_then(|mut profiler| {
        let capture = match &options.spans {
            Some(path) => Some(start_capture(&mut profiler, path)?),
            None => None,
        };
        Ok((profiler, capture))
    });
    let ((mut profiler, capture), mut target) = match (started, launcher) {
        // The command starts only once the sampler (and the capture) watch its pid.
        (Ok(started), Some(held)) => (started, Target::Command(held.release()?)),
        (Err(error), Some(held)) => {
            held.abort();
            return Err(error);
        }
        (started, None) => {
            let target = if options.all {
                Target::All
            } else {
                Target::Pids(options.pids.clone())
            };
            (started?, target)
        }
    };

    let start = Instant::now();
    let progress = Progress::new(options.quiet);
    let mut command_status = None;
    let end_reason = loop {
        let until_deadline = options.duration.map(|d| d.saturating_sub(start.elapsed()));
        let nap = until_deadline.map_or(DRAIN_INTERVAL, |left| left.min(DRAIN_INTERVAL));
        signals::sleep(nap);
        profiler.drain()?;
        progress.update(
            start.elapsed(),
            profiler.collector.total(),
            profiler.collector.processes.len(),
        );
        if signals::stop_requested() {
            break "interrupted";
        }
        if options.duration.is_some_and(|d| start.elapsed() >= d) {
            break "duration reached";
        }
        match &mut target {
            Target::Command(child) => {
                if let Some(status) = child.try_wait()? {
                    command_status = Some(status);
                    break if status.success() {
                        "command exited"
                    } else {
                        "command failed"
                    };
                }
            }
            Target::Pids(pids) => {
                if pids.iter().all(|&pid| !process_exists(pid)) {
                    break "all processes exited";
                }
            }
            Target::All => {}
        }
    };
    // Samples counted after the last flip sit in the other slot: drain it too.
    profiler.drain()?;
    let elapsed = start.elapsed();
    let kernel = profiler.kernel_stats()?;
    progress.finish();
    if let Some(capture) = capture {
        let counters = capture.counters.clone();
        capture.stop()?;
        eprintln!(
            "http: {}; kernel: {} requests, {} responses, {} traceparents, {} HTTP/2 \
             connections, {} records lost, {} connections not followed (map full), \
             {} unrecognized writes/reads",
            counters.describe(),
            kernel.get(Stat::HttpRequests),
            kernel.get(Stat::HttpResponses),
            kernel.get(Stat::HttpTraceparents),
            kernel.get(Stat::Http2Connections),
            kernel.get(Stat::HttpEventsLost),
            kernel.get(Stat::HttpConnsFull),
            kernel.get(Stat::HttpUnrecognized),
        );
        // The capture has published its last streams: every waiting sample is decided now.
        profiler.link_waiting();
        let links = profiler.collector.links;
        if kernel.get(Stat::TimedSamples) > 0 {
            eprintln!("{links}");
        }
    }
    if let Target::Command(child) = &mut target {
        if command_status.is_none() {
            // Interrupted or out of time while the command still runs: end it as perf does.
            command_status = Some(child.stop());
        }
    }
    if let Some(status) = command_status {
        eprintln!("command finished: {status}");
    }

    let losses = profiler.collector.losses();
    let read_errors = profiler.collector.read_errors;
    let processes_missed = profiler.collector.processes.missed;
    let mapping_events_lost = profiler.mapping_events_lost();
    let (mut profile, symbolized) = profiler.take_profile();
    // Names from the kubelet's log directories only: a recording does not ask the API server.
    Metadata::new(None).label_samples(&mut profile);
    drop(profiler);
    let title = match &target {
        Target::Command(_) => format!("CPU: {}", options.command.join(" ")),
        Target::Pids(pids) => format!(
            "CPU: pid {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Target::All => "CPU: all processes".to_string(),
    };
    let mut writer = BufWriter::new(&output.file);
    encode::write_profile(&profile, format, &title, &mut writer)
        .with_context(|| format!("cannot write {}", options.output.display()))?;
    writer
        .flush()
        .with_context(|| format!("cannot write {}", options.output.display()))?;
    drop(writer);
    output.commit()?;

    let pids: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    let threads: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.tid).collect();
    let summary = Summary {
        elapsed,
        frequency_hz: options.frequency_hz,
        end_reason,
        samples: profile.total_samples(),
        processes: pids.len(),
        threads: threads.len(),
        kernel,
        losses,
        read_errors,
        symbolized,
        processes_missed,
        mapping_events_lost,
    };
    eprint!("{summary}");
    if std::env::var_os("PROFILER_DEBUG").is_some() {
        // Memory at the end of the run, after symbolization: where the peak usually is.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        for line in status
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("Rss"))
        {
            eprintln!("debug: {line}");
        }
    }
    eprintln!("wrote {} ({})", options.output.display(), format.as_str());
    Ok(command_status.map_or(0, shell_exit_code))
}

/// Turns the HTTP capture on, writing spans to `path`.
fn start_capture(profiler: &mut Profiler, path: &Path) -> Result<HttpCapture> {
    let (events, windows) = profiler
        .start_http_capture()
        .context("cannot start the HTTP capture")?;
    HttpCapture::start(
        events,
        windows,
        CaptureSinks {
            otlp: None,
            spans_file: Some(path.to_path_buf()),
            // RED metrics only go out over OTLP (`run`).
            metrics_interval: Duration::MAX,
            max_series_per_service: 0,
            service_name: None,
            pods: None,
        },
    )
}

/// The exit code a shell reports for `status`.
fn shell_exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    }
}

/// The output, written to a temporary file beside it and renamed into place once complete, so
/// a failed recording leaves nothing behind and never truncates an older profile.
struct OutputFile {
    file: File,
    temporary: PathBuf,
    destination: PathBuf,
    committed: bool,
}

impl OutputFile {
    fn create(destination: &Path) -> Result<Self> {
        let name = destination
            .file_name()
            .with_context(|| format!("the output path {} names no file", destination.display()))?;
        let temporary = destination.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .with_context(|| format!("cannot write the output file {}", destination.display()))?;
        Ok(OutputFile {
            file,
            temporary,
            destination: destination.to_path_buf(),
            committed: false,
        })
    }

    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temporary, &self.destination)
            .with_context(|| format!("cannot write {}", self.destination.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// A command forked but held before `exec` until the sampler watches its pid, so its first
/// instructions are profiled too. (std's `Command::spawn` cannot do this: it waits for the
/// `exec` before returning the pid.)
struct HeldCommand {
    pid: libc::pid_t,
    gate: File,
}

impl HeldCommand {
    fn spawn(argv: &[String]) -> Result<Self> {
        let program = resolve_program(&argv[0])?;
        let to_c = |s: &str| {
            CString::new(s).with_context(|| format!("argument `{s}` contains a NUL byte"))
        };
        let program = to_c(&program.to_string_lossy())?;
        let args = argv.iter().map(|a| to_c(a)).collect::<Result<Vec<_>>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());

        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating a pipe");
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // SAFETY: between fork and exec the child only calls async-signal-safe functions
        // (close, read, execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above; the pointers stay valid, they were built before the fork.
            unsafe {
                libc::close(write_fd);
                let mut byte = 0u8;
                // Returns 1 on release, 0 if the agent died: exec either way only on release.
                if libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) == 1 {
                    libc::execv(program.as_ptr(), arg_ptrs.as_ptr());
                }
                libc::_exit(127);
            }
        }
        // SAFETY: read_fd is ours and only the child needs it.
        unsafe { libc::close(read_fd) };
        // SAFETY: write_fd is a fresh fd we own; File takes ownership and closes it.
        let gate = unsafe { File::from_raw_fd(write_fd) };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot fork the command");
        }
        Ok(HeldCommand { pid, gate })
    }

    /// Lets the command exec and run.
    fn release(mut self) -> Result<RunningCommand> {
        self.gate.write_all(&[1]).context("releasing the command")?;
        Ok(RunningCommand { pid: self.pid })
    }

    /// Ends the held command without running it (the sampler could not start).
    fn abort(self) {
        drop(self.gate);
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// The profiled command after it was released.
struct RunningCommand {
    pid: libc::pid_t,
}

impl RunningCommand {
    /// The exit status if the command has ended (reaping it).
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match ret {
            0 => Ok(None),
            pid if pid == self.pid => Ok(Some(ExitStatus::from_raw(status))),
            _ => Err(std::io::Error::last_os_error()).context("waiting for the command"),
        }
    }

    /// Ends the command: SIGTERM, then SIGKILL if it is still running 5 s later.
    fn stop(&mut self) -> ExitStatus {
        for (signal, grace) in [
            (libc::SIGTERM, Duration::from_secs(5)),
            (libc::SIGKILL, Duration::MAX),
        ] {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(self.pid, signal) };
            let deadline = Instant::now().checked_add(grace);
            loop {
                match self.try_wait() {
                    Ok(Some(status)) => return status,
                    Ok(None) => {}
                    // Already reaped or gone: nothing more to learn.
                    Err(_) => return ExitStatus::from_raw(signal),
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        ExitStatus::from_raw(libc::SIGKILL)
    }
}

/// Finds the executable the way a shell would: a name with a `/` as is, else through `$PATH`.
fn resolve_program(name: &str) -> Result<PathBuf> {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        if executable(&path) {
            return Ok(path);
        }
        bail!("cannot start the command: {name} is not an executable file");
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|path| executable(path))
        .with_context(|| format!("cannot start the command: `{name}` not found in PATH"))
}

/// Progress on stderr: one rewritten line on a terminal, a line every 10 updates otherwise.
struct Progress {
    enabled: bool,
    terminal: bool,
    updates: std::cell::Cell<u64>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress {
            enabled: !quiet,
            terminal: std::io::stderr().is_terminal(),
            updates: std::cell::Cell::new(0),
        }
    }

    fn update(&self, elapsed: Duration, samples: u64, processes: usize) {
        if !self.enabled {
            return;
        }
        let updates = self.updates.get() + 1;
        self.updates.set(updates);
        let line = format!(
            "recording: {:>6.1} s, {samples} samples, {processes} processes",
            elapsed.as_secs_f64()
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else if updates.is_multiple_of(10) {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}

/// The end-of-recording report.
struct Summary {
    elapsed: Duration,
    frequency_hz: u64,
    end_reason: &'static str,
    samples: u64,
    processes: usize,
    threads: usize,
    kernel: KernelStats,
    losses: std::collections::HashMap<StackLoss, u64>,
    read_errors: u64,
    symbolized: SymbolizeStats,
    processes_missed: u64,
    mapping_events_lost: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = &self.kernel;
        writeln!(
            f,
            "recorded {:.1} s at {} Hz ({}): {} samples from {} processes ({} threads)",
            self.elapsed.as_secs_f64(),
            self.frequency_hz,
            self.end_reason,
            self.samples,
            self.processes,
            self.threads
        )?;
        let lost_samples = k.get(Stat::CountsMapFull) + self.read_errors;
        writeln!(
            f,
            "samples lost: {lost_samples} (counts map full: {}, unreadable while draining: {})",
            k.get(Stat::CountsMapFull),
            self.read_errors
        )?;
        let loss = |kind| self.losses.get(&kind).copied().unwrap_or(0);
        let kinds: Vec<String> = StackLoss::ALL
            .iter()
            .map(|&kind| format!("{}: {}", kind.description(), loss(kind)))
            .collect();
        writeln!(
            f,
            "stacks lost: {} ({})",
            StackLoss::ALL.iter().map(|&kind| loss(kind)).sum::<u64>(),
            kinds.join(", ")
        )?;
        writeln!(
            f,
            "not recorded: {} idle-CPU samples, {} samples of other processes",
            k.get(Stat::IdleSamples),
            k.get(Stat::FilteredOut)
        )?;
        if k.get(Stat::ChildrenFollowed) > 0 || k.get(Stat::PidFilterFull) > 0 {
            writeln!(
                f,
                "children and threads followed: {} ({} not followed: pid filter full)",
                k.get(Stat::ChildrenFollowed),
                k.get(Stat::PidFilterFull)
            )?;
        }
        write!(
            f,
            "frames symbolized: {:.1}%",
            self.symbolized.ratio() * 100.0
        )?;
        let unmapped = self.symbolized.unmapped_ratio() * 100.0;
        if unmapped >= 1.0 {
            write!(
                f,
                " ({unmapped:.1}% outside every mapping of their process: mostly stacks walked \
                 through code built without frame pointers)"
            )?;
        }
        if self.mapping_events_lost > 0 {
            write!(f, " ({} mapping events lost)", self.mapping_events_lost)?;
        }
        if self.processes_missed > 0 {
            write!(
                f,
                " ({} processes exited before their mappings could be read: their frames are \
                 [unknown])",
                self.processes_missed
            )?;
        }
        writeln!(f)
    }
}
