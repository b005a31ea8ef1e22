//! The profiling pipeline both commands run: kernel sampler + mapping watcher → collector →
//! symbolizer. `record` drains it until it stops and writes one profile; `run` takes a profile
//! every upload interval and keeps going.

use std::{
    sync::PoisonError,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    capture::stream_windows::SharedWindows,
    collect::Collector,
    ebpf::{HttpEvents, KernelStats, MappingWatcher, Sampler, SamplerError, SamplerOptions},
    profile::Profile,
    symbolize::{SymbolizeStats, Symbolizer},
};

/// A running profiler.
pub struct Profiler {
    sampler: Sampler,
    watcher: Option<MappingWatcher>,
    pub collector: Collector,
    symbolizer: Symbolizer,
    period_ns: u64,
    /// Start of the samples not yet taken, nanoseconds since the Unix epoch.
    window_start_ns: u64,
    /// Distinct sample keys of the last drain (how full the counts map got).
    last_drain_keys: usize,
    /// The HTTP capture's server streams, once it runs: links samples of HTTP/2 servers.
    stream_windows: Option<SharedWindows>,
}

/// Highest sampling frequency accepted: 10 kHz per CPU is already far past useful.
const MAX_FREQUENCY_HZ: u64 = 10_000;

/// Rejects a sampling frequency outside 1..=10000 Hz.
pub fn check_frequency(frequency_hz: u64) -> anyhow::Result<()> {
    if frequency_hz == 0 || frequency_hz > MAX_FREQUENCY_HZ {
        anyhow::bail!(
            "--frequency must be between 1 and {MAX_FREQUENCY_HZ} Hz, got {frequency_hz}"
        );
    }
    Ok(())
}

/// Checks that every `--pid` names a live process, not one of its threads.
pub fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        if !process_exists(pid) {
            anyhow::bail!("process {pid} does not exist");
        }
        if let Some(owner) = thread_group_of(pid).filter(|&owner| owner != pid) {
            anyhow::bail!("{pid} is a thread of process {owner}: use --pid {owner}");
        }
    }
    Ok(())
}

/// True while `pid` runs (exists and is not a zombie).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised comm, which may itself hold spaces or ')'.
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|state| state == "Z" || state == "X")
        })
        .unwrap_or(false)
}

/// The process (thread group) a thread id belongs to.
fn thread_group_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `CLOCK_MONOTONIC` now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Profiler {
    /// Starts the mapping watcher, then the sampler, so the mappings of every process sampled
    /// from now on are known even if it exits before the next drain.
    pub fn start(options: &SamplerOptions) -> Result<Self, SamplerError> {
        let watcher = match MappingWatcher::start() {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                eprintln!(
                    "note: cannot follow new mappings ({error}); processes that live less than \
                     a second may show [unknown] frames"
                );
                None
            }
        };
        let sampler = Sampler::start(options)?;
        Ok(Profiler {
            sampler,
            watcher,
            collector: Collector::default(),
            symbolizer: Symbolizer::new(),
            period_ns: 1_000_000_000 / options.frequency_hz.max(1),
            window_start_ns: unix_now_ns(),
            last_drain_keys: 0,
            stream_windows: None,
        })
    }

    /// How full the last drain left the counts map: (keys, capacity).
    pub fn counts_fill(&self) -> (usize, u32) {
        (self.last_drain_keys, self.sampler.counts_capacity())
    }

    /// Turns the HTTP capture on (see [`Sampler::start_http_capture`]). The capture thread
    /// publishes its HTTP/2 server streams into the windows returned with the events.
    pub fn start_http_capture(&mut self) -> Result<(HttpEvents, SharedWindows), SamplerError> {
        let events = self.sampler.start_http_capture()?;
        let windows = SharedWindows::default();
        self.stream_windows = Some(windows.clone());
        Ok((events, windows))
    }

    /// Moves what the kernel gathered since the last call into the collector: mapping events
    /// first, so the samples that follow find their processes' mappings.
    pub fn drain(&mut self) -> Result<(), SamplerError> {
        if let Some(watcher) = &mut self.watcher {
            self.collector.processes.apply(&watcher.read());
        }
        let now = monotonic_now_ns();
        let drained = self.sampler.drain()?;
        self.last_drain_keys = drained.counts.len();
        self.collector.absorb(drained);
        self.link_waiting_at(now);
        Ok(())
    }

    /// Links the samples waiting in the collector to the streams the capture has published so
    /// far; once the capture has stopped, every one is decided.
    pub fn link_waiting(&mut self) {
        self.link_waiting_at(monotonic_now_ns());
    }

    fn link_waiting_at(&mut self, now_ns: u64) {
        let mut windows = self
            .stream_windows
            .as_ref()
            .map(|w| w.lock().unwrap_or_else(PoisonError::into_inner));
        self.collector.link_waiting(windows.as_deref_mut(), now_ns);
    }

    /// Symbolizes everything collected since the last call and starts a new window.
    pub fn take_profile(&mut self) -> (Profile, SymbolizeStats) {
        let now = unix_now_ns();
        let start = self.window_start_ns;
        let result = self.symbolizer.symbolize(
            &self.collector,
            start,
            now.saturating_sub(start),
            self.period_ns,
        );
        self.collector.samples.clear();
        self.window_start_ns = now;
        result
    }

    /// Forgets processes that exited, and every cache when the open files pile up or memory
    /// grows past its budget (live processes' mappings are read again from `/proc` when they
    /// are next sampled, files parsed again when next symbolized).
    /// Returns the processes forgotten because they exited.
    pub fn prune(&mut self) -> Vec<u32> {
        let exited = self.collector.processes.prune_exited();
        let over_budget = resident_bytes().is_some_and(|rss| rss > RSS_BUDGET_BYTES);
        if self.collector.processes.open_file_count() > MAX_OPEN_FILES || over_budget {
            self.collector.processes = Default::default();
            self.symbolizer = Symbolizer::new();
            // SAFETY: malloc_trim only returns free heap memory to the kernel.
            unsafe { libc::malloc_trim(0) };
        }
        exited
    }

    /// The kernel's counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats, SamplerError> {
        self.sampler.stats()
    }

    /// Mapping records the kernel dropped (a ring was full).
    pub fn mapping_events_lost(&self) -> u64 {
        self.watcher.as_ref().map_or(0, |w| w.lost)
    }
}

/// Anonymous resident memory above which `prune` drops the symbolization caches. Parsed debug
/// info of large binaries is what grows; dropping it costs a re-parse on the next window.
/// Pages of the mapped files themselves are not counted: the kernel reclaims them under
/// pressure and they stay in the page cache whether the agent maps them or not.
const RSS_BUDGET_BYTES: u64 = 64 << 20;

/// The agent's anonymous resident memory (resident minus file-backed and shared pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some(resident.saturating_sub(shared) * crate::page_size() as u64)
}

/// Open mapped files above which `prune` starts over (below the usual 1024-fd soft limit
/// minus what the agent needs for maps, perf events and sockets).
const MAX_OPEN_FILES: usize = 768;
