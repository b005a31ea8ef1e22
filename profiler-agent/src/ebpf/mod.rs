//! Loads the embedded kernel programs, attaches them, and drains their maps. The only module
//! that imports aya.
//!
//! Draining uses the two slots of `profiler_common::Config::active_slot`: flip the slot, wait for
//! programs already running on the old slot to finish, read and clear the old slot. The sampler
//! keeps counting into the new slot meanwhile, so no sample is lost to the drain.

mod http_events;
mod mapping_events;
mod tracefs;

pub use http_events::{HttpEvent, HttpEvents, HttpRecord};
pub use mapping_events::{MappingEvent, MappingWatcher};

use std::{collections::HashMap as StdHashMap, thread, time::Duration};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, ProgramError, TracePoint,
    },
    util::online_cpus,
    Ebpf, EbpfError, EbpfLoader,
};
use profiler_common::{
    Config, SampleKey, StackTrace, Stat, COUNTS_MAX_ENTRIES, HTTP_EVENTS_BYTES, MAP_CONFIG,
    MAP_COUNTS, MAP_H2_SCRATCH, MAP_H2_SERVERS, MAP_HTTP_CONNS, MAP_HTTP_EVENTS, MAP_PID_FILTER,
    MAP_STACKS, MAP_STATS, MAP_SYSCALL_ARGS, MAP_TRACES_CTX, PROG_ON_CPU_SAMPLE,
    PROG_ON_PROCESS_EXIT, PROG_ON_PROCESS_FORK, STACKS_MAX_ENTRIES,
};

use crate::caps;

/// The kernel programs, built by `build.rs` (empty when the eBPF toolchain was missing).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf.o"));

/// How long programs that read the old slot before a flip may still be writing to it. They run
/// with preemption disabled and take microseconds; this is a wide margin.
const SLOT_FLIP_GRACE: Duration = Duration::from_millis(5);

/// Errors of loading, attaching and draining the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "this agent was built without its eBPF programs: run `cargo xtask build-ebpf`, then \
         rebuild the agent"
    )]
    NotEmbedded,
    #[error("{0}")]
    MissingCapabilities(String),
    #[error("loading the eBPF programs failed: {source}{hint}")]
    Load {
        // Boxed: the error is rare and large, and this enum travels through every Result here.
        #[source]
        source: Box<EbpfError>,
        hint: String,
    },
    #[error("the eBPF object has no program or map `{name}`")]
    Missing { name: String },
    #[error("eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching eBPF program `{name}` to tracepoint {tracepoint} failed: {source}")]
    Attach {
        name: &'static str,
        tracepoint: String,
        #[source]
        source: ProgramError,
    },
    #[error("perf_event_open failed on cpu {cpu}: {source}{hint}")]
    PerfEvent {
        cpu: u32,
        #[source]
        source: ProgramError,
        hint: String,
    },
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot list online CPUs ({what}): {source}")]
    Cpus {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("the HTTP capture was not asked for when the sampler started (`SamplerOptions::http_capture`)")]
    HttpCaptureNotPrepared,
}

/// What to sample.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// Samples per second per CPU.
    pub frequency_hz: u64,
    /// `None`: every process; `Some`: only these pids (and, with `follow_children`, their
    /// descendants).
    pub pids: Option<Vec<u32>>,
    /// Add children and threads of filtered processes to the filter as they are created.
    pub follow_children: bool,
    /// Size the HTTP capture's maps so that [`Sampler::start_http_capture`] can be called.
    /// Without it they get one entry each: they are preallocated kernel memory (~17 MB with a
    /// 2 MiB ring), and allocating and zeroing them was a fifth of a short recording's CPU.
    pub http_capture: bool,
}

/// Samples of one drained slot: counts per key and the stacks they reference.
#[derive(Debug, Default)]
pub struct Drained {
    pub counts: Vec<(SampleKey, u64)>,
    /// Instruction pointers per stack id, innermost first.
    pub stacks: StdHashMap<u64, Vec<u64>>,
    /// Keys or stacks that could not be read back (a map error while draining).
    pub read_errors: u64,
}

/// The kernel counters of [`Stat`], summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats(pub [u64; Stat::COUNT as usize]);

impl KernelStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
}

/// The loaded and attached sampler.
pub struct Sampler {
    // Owns the programs and their perf-event links: dropping it detaches everything.
    ebpf: Ebpf,
    config_map: Array<MapData, Config>,
    config: Config,
    pid_filter: HashMap<MapData, u32, u8>,
    counts: [HashMap<MapData, SampleKey, u64>; 2],
    stacks: [HashMap<MapData, u64, StackTrace>; 2],
    stats: PerCpuArray<MapData, u64>,
    /// Entries of each counts map.
    counts_capacity: u32,
    /// [`SamplerOptions::http_capture`].
    http_capture: bool,
}

impl Sampler {
    /// Loads the programs, fills the pid filter and attaches to every online CPU.
    pub fn start(options: &SamplerOptions) -> Result<Self, SamplerError> {
        if EBPF_OBJECT.is_empty() {
            return Err(SamplerError::NotEmbedded);
        }
        caps::require_for_ebpf().map_err(SamplerError::MissingCapabilities)?;
        raise_memlock_limit();

        let cpus = online_cpus().map_err(|(what, source)| SamplerError::Cpus { what, source })?;
        let capacity = map_capacity(cpus.len(), options.frequency_hz);
        let mut loader = EbpfLoader::new();
        for name in MAP_COUNTS.iter().chain(&MAP_STACKS) {
            loader.map_max_entries(name, capacity);
        }
        if options.http_capture {
            // Indexed by CPU id: one entry per possible CPU (ids of CPUs brought online later
            // too).
            let possible = aya::util::nr_cpus()
                .map_err(|(what, source)| SamplerError::Cpus { what, source })?;
            loader.map_max_entries(MAP_H2_SCRATCH, possible as u32);
            loader.map_max_entries(MAP_HTTP_EVENTS, http_ring_bytes(possible));
        } else {
            for name in HTTP_CAPTURE_MAPS {
                loader.map_max_entries(name, 1);
            }
            // The smallest ring the kernel takes.
            loader.map_max_entries(MAP_HTTP_EVENTS, crate::page_size() as u32);
        }
        if options.pids.is_none() {
            // Not read unless `Config::filter_pids` is set.
            loader.map_max_entries(MAP_PID_FILTER, 1);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| SamplerError::Load {
                hint: load_hint(&source),
                source: Box::new(source),
            })?;
        let mut config_map: Array<MapData, Config> = take_map(&mut ebpf, MAP_CONFIG)?;
        let mut pid_filter: HashMap<MapData, u32, u8> = take_map(&mut ebpf, MAP_PID_FILTER)?;
        let counts = [
            take_map(&mut ebpf, MAP_COUNTS[0])?,
            take_map(&mut ebpf, MAP_COUNTS[1])?,
        ];
        let stacks = [
            take_map(&mut ebpf, MAP_STACKS[0])?,
            take_map(&mut ebpf, MAP_STACKS[1])?,
        ];
        let stats = take_map(&mut ebpf, MAP_STATS)?;

        let mut config = Config {
            active_slot: 0,
            filter_pids: u32::from(options.pids.is_some()),
            follow_children: 0,
            fork_child_pid_offset: 0,
            http_enabled: 0,
            agent_pid: std::process::id(),
        };
        if let Some(pids) = &options.pids {
            for pid in pids {
                pid_filter
                    .insert(pid, 1, 0)
                    .map_err(|source| SamplerError::Map {
                        name: MAP_PID_FILTER,
                        source,
                    })?;
            }
            if options.follow_children {
                tracefs::ensure_mounted()?;
                config.fork_child_pid_offset =
                    tracefs::field_offset("sched", "sched_process_fork", "child_pid")?;
                config.follow_children = 1;
            }
        }
        config_map
            .set(0, config, 0)
            .map_err(|source| SamplerError::Map {
                name: MAP_CONFIG,
                source,
            })?;

        if config.follow_children == 1 {
            attach_tracepoints(
                &mut ebpf,
                PROG_ON_PROCESS_FORK,
                "sched",
                &["sched_process_fork"],
            )?;
            attach_tracepoints(
                &mut ebpf,
                PROG_ON_PROCESS_EXIT,
                "sched",
                &["sched_process_exit"],
            )?;
        }
        attach_perf_events(&mut ebpf, &cpus, options.frequency_hz)?;

        Ok(Sampler {
            ebpf,
            config_map,
            config,
            pid_filter,
            counts,
            stacks,
            stats,
            counts_capacity: capacity,
            http_capture: options.http_capture,
        })
    }

    /// Attaches the HTTP capture's programs (syscall tracepoints) and turns the capture on; the
    /// sampler then labels samples with the request their thread serves. Call once.
    pub fn start_http_capture(&mut self) -> Result<HttpEvents, SamplerError> {
        if !self.http_capture {
            return Err(SamplerError::HttpCaptureNotPrepared);
        }
        tracefs::ensure_mounted()?;
        let events = http_events::attach(&mut self.ebpf)?;
        self.config.http_enabled = 1;
        self.write_config()?;
        Ok(events)
    }

    fn write_config(&mut self) -> Result<(), SamplerError> {
        self.config_map
            .set(0, self.config, 0)
            .map_err(|source| SamplerError::Map {
                name: MAP_CONFIG,
                source,
            })
    }

    /// Adds a process to the pid filter.
    pub fn add_pid(&mut self, pid: u32) -> Result<(), SamplerError> {
        self.pid_filter
            .insert(pid, 1, 0)
            .map_err(|source| SamplerError::Map {
                name: MAP_PID_FILTER,
                source,
            })
    }

    /// Flips the active slot and returns (and clears) everything counted in the previous one.
    pub fn drain(&mut self) -> Result<Drained, SamplerError> {
        let drained_slot = self.config.active_slot as usize;
        self.config.active_slot ^= 1;
        self.write_config()?;
        thread::sleep(SLOT_FLIP_GRACE);

        let mut drained = Drained::default();
        let counts = &mut self.counts[drained_slot];
        let keys: Vec<SampleKey> = counts.keys().filter_map(Result::ok).collect();
        for key in keys {
            match counts.get(&key, 0) {
                Ok(count) => drained.counts.push((key, count)),
                Err(_) => drained.read_errors += 1,
            }
            if counts.remove(&key).is_err() {
                drained.read_errors += 1;
            }
        }

        let stacks = &mut self.stacks[drained_slot];
        let stack_ids: Vec<u64> = stacks.keys().filter_map(Result::ok).collect();
        for id in stack_ids {
            match stacks.get(&id, 0) {
                Ok(trace) => {
                    let len = (trace.len as usize).min(trace.frames.len());
                    drained.stacks.insert(id, trace.frames[..len].to_vec());
                }
                Err(_) => drained.read_errors += 1,
            }
            let _ = stacks.remove(&id);
        }
        Ok(drained)
    }

    /// Entries each counts map holds (a drain interval's distinct sample keys must fit).
    pub fn counts_capacity(&self) -> u32 {
        self.counts_capacity
    }

    /// The kernel's counters, summed over CPUs.
    pub fn stats(&self) -> Result<KernelStats, SamplerError> {
        let mut stats = KernelStats::default();
        for (index, total) in stats.0.iter_mut().enumerate() {
            let values =
                self.stats
                    .get(&(index as u32), 0)
                    .map_err(|source| SamplerError::Map {
                        name: MAP_STATS,
                        source,
                    })?;
            *total = values.iter().sum();
        }
        Ok(stats)
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, SamplerError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| SamplerError::Missing {
        name: name.to_string(),
    })?;
    T::try_from(map).map_err(|source| SamplerError::Map { name, source })
}

/// Entries of each counts and stack map. A slot holds at most one drain interval (1 s) of
/// samples, each with up to two stacks: twice that, with headroom for late drains, is plenty,
/// and preallocated memory (about 1 KiB per stack entry) stays proportional to the machine.
fn map_capacity(cpus: usize, frequency_hz: u64) -> u32 {
    let per_interval = (cpus as u64).saturating_mul(frequency_hz).saturating_mul(2);
    power_of_two_within(
        per_interval.saturating_mul(2),
        u64::from(MIN_MAP_ENTRIES),
        u64::from(COUNTS_MAX_ENTRIES.max(STACKS_MAX_ENTRIES)) * 8,
    )
}

/// Bytes of the HTTP capture's ring buffer: 1 MiB per possible CPU (records come from all of
/// them at once), between the object's 2 MiB and 64 MiB. The kernel maps the data pages twice
/// into the agent (so records never wrap) and its RSS counts them twice: on a small node the
/// ring was the largest part of an idle agent's memory at 4 MiB.
fn http_ring_bytes(possible_cpus: usize) -> u32 {
    power_of_two_within(
        (possible_cpus as u64).saturating_mul(1 << 20),
        u64::from(HTTP_EVENTS_BYTES),
        64 << 20,
    )
}

/// `wanted` held within `min..=max` (powers of two below `u32::MAX`), rounded up to a power of
/// two: map sizes the kernel takes.
fn power_of_two_within(wanted: u64, min: u64, max: u64) -> u32 {
    u32::try_from(wanted.clamp(min, max).next_power_of_two()).unwrap_or(u32::MAX)
}

/// The HTTP capture's hash maps, one entry each when it is off: the sampler reads the trace
/// contexts and the HTTP/2 servers, which then stay empty, and no other program that uses them
/// is loaded. (aya ignores a size given for a name the object lacks: a test checks them.)
const HTTP_CAPTURE_MAPS: [&str; 4] = [
    MAP_TRACES_CTX,
    MAP_H2_SERVERS,
    MAP_HTTP_CONNS,
    MAP_SYSCALL_ARGS,
];

/// Smallest counts/stack map.
const MIN_MAP_ENTRIES: u32 = 1024;

fn attach_perf_events(
    ebpf: &mut Ebpf,
    cpus: &[u32],
    frequency_hz: u64,
) -> Result<(), SamplerError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(PROG_ON_CPU_SAMPLE)
        .ok_or_else(|| SamplerError::Missing {
            name: PROG_ON_CPU_SAMPLE.to_string(),
        })?
        .try_into()
        .map_err(|source| SamplerError::Program {
            name: PROG_ON_CPU_SAMPLE,
            source,
        })?;
    program.load().map_err(|source| SamplerError::Program {
        name: PROG_ON_CPU_SAMPLE,
        source,
    })?;
    // cpu-clock counts nanoseconds of CPU time, so a fixed period makes every sample stand for
    // exactly 1e9/frequency ns (frequency mode would let the kernel adjust the period).
    let period_ns = 1_000_000_000 / frequency_hz.max(1);
    for &cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(period_ns),
                false,
            )
            .map_err(|source| SamplerError::PerfEvent {
                cpu,
                hint: permission_hint(&source.to_string()),
                source,
            })?;
    }
    Ok(())
}

/// Loads program `name` and attaches it to each tracepoint `category:event`.
fn attach_tracepoints(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    events: &[&str],
) -> Result<(), SamplerError> {
    let program = load_tracepoint(ebpf, name)?;
    for event in events {
        program
            .attach(category, event)
            .map_err(|source| SamplerError::Attach {
                name,
                tracepoint: format!("{category}:{event}"),
                source,
            })?;
    }
    Ok(())
}

/// Loads the tracepoint program `name` (verifying it) without attaching it.
fn load_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, SamplerError> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| SamplerError::Missing {
            name: name.to_string(),
        })?
        .try_into()
        .map_err(|source| SamplerError::Program { name, source })?;
    program
        .load()
        .map_err(|source| SamplerError::Program { name, source })?;
    Ok(program)
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF maps to it (before 5.11). Newer
/// kernels account map memory to the memory cgroup, and without CAP_SYS_RESOURCE the call fails
/// harmlessly, so a failure is only reported in verbose logs.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 && std::env::var_os("PROFILER_DEBUG").is_some() {
        eprintln!(
            "note: cannot raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

fn load_hint(error: &EbpfError) -> String {
    permission_hint(&error.to_string())
}

/// Adds advice to errors that mean "not permitted".
fn permission_hint(message: &str) -> String {
    if message.contains("Operation not permitted") || message.contains("Permission denied") {
        format!(
            " ({}; on a locked-down kernel the programs must use perf_event, tracepoints and \
             uprobes only)",
            caps::EBPF_CAPS_ADVICE
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use profiler_common::{
        ConnKey, HttpExchange, TraceCtx, COUNTS_MAX_ENTRIES, H2_SERVERS_MAX_ENTRIES,
        HTTP_CONNS_MAX_ENTRIES, MAP_H2_SERVERS, MAP_HTTP_CONNS, MAP_STACK_SCRATCH, MAP_TRACES_CTX,
        PID_FILTER_MAX_ENTRIES, STACKS_MAX_ENTRIES, TRACES_CTX_MAX_ENTRIES,
    };

    use super::*;

    // Map types from include/uapi/linux/bpf.h.
    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    const PERCPU_ARRAY: u32 = 6;
    const LRU_HASH: u32 = 9;
    const RINGBUF: u32 = 27;

    #[test]
    fn maps_scale_with_cpus_and_frequency() {
        assert_eq!(map_capacity(2, 99), 1024);
        assert_eq!(map_capacity(2, 19), 1024);
        assert_eq!(map_capacity(64, 99), 32_768);
        assert_eq!(map_capacity(512, 999), 131_072, "capped");
    }

    #[test]
    fn the_http_ring_grows_with_the_cpus() {
        assert_eq!(http_ring_bytes(1), HTTP_EVENTS_BYTES);
        assert_eq!(http_ring_bytes(2), 2 << 20);
        assert_eq!(http_ring_bytes(3), 4 << 20);
        assert_eq!(http_ring_bytes(16), 16 << 20);
        assert_eq!(http_ring_bytes(4096), 64 << 20, "capped");
    }

    #[test]
    fn embedded_object_matches_the_shared_abi() {
        if EBPF_OBJECT.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the eBPF object is not embedded; CI must build it (cargo xtask build-ebpf)"
            );
            eprintln!("skipping: the eBPF object is not embedded (run cargo xtask build-ebpf)");
            return;
        }
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded object parses");
        let http_programs = profiler_common::HTTP_PROGRAMS.iter().map(|(name, _)| *name);
        for program in [
            PROG_ON_CPU_SAMPLE,
            PROG_ON_PROCESS_FORK,
            PROG_ON_PROCESS_EXIT,
        ]
        .into_iter()
        .chain(http_programs)
        {
            assert!(
                object.programs.contains_key(program),
                "program {program} missing; found {:?}",
                object.programs.keys().collect::<Vec<_>>()
            );
        }
        let key = size_of::<SampleKey>() as u32;
        let trace = size_of::<StackTrace>() as u32;
        let expected = [
            (MAP_CONFIG, ARRAY, 4, size_of::<Config>() as u32, 1),
            (MAP_PID_FILTER, HASH, 4, 1, PID_FILTER_MAX_ENTRIES),
            (MAP_COUNTS[0], HASH, key, 8, COUNTS_MAX_ENTRIES),
            (MAP_COUNTS[1], HASH, key, 8, COUNTS_MAX_ENTRIES),
            (MAP_STACKS[0], HASH, 8, trace, STACKS_MAX_ENTRIES),
            (MAP_STACKS[1], HASH, 8, trace, STACKS_MAX_ENTRIES),
            (MAP_STACK_SCRATCH, PERCPU_ARRAY, 4, trace, 2),
            (MAP_STATS, PERCPU_ARRAY, 4, 8, Stat::COUNT),
            (
                MAP_TRACES_CTX,
                LRU_HASH,
                8,
                size_of::<TraceCtx>() as u32,
                TRACES_CTX_MAX_ENTRIES,
            ),
            (
                MAP_HTTP_CONNS,
                LRU_HASH,
                size_of::<ConnKey>() as u32,
                size_of::<HttpExchange>() as u32,
                HTTP_CONNS_MAX_ENTRIES,
            ),
            (MAP_HTTP_EVENTS, RINGBUF, 0, 0, HTTP_EVENTS_BYTES),
            (MAP_H2_SERVERS, LRU_HASH, 4, 1, H2_SERVERS_MAX_ENTRIES),
        ];
        for name in HTTP_CAPTURE_MAPS {
            assert!(
                object.maps.contains_key(name),
                "map {name} missing from the object"
            );
        }
        for (name, map_type, key_size, value_size, max_entries) in expected {
            let map = object
                .maps
                .get(name)
                .unwrap_or_else(|| panic!("map {name} missing from the object"));
            assert_eq!(map.map_type(), map_type, "type of {name}");
            assert_eq!(map.key_size(), key_size, "key size of {name}");
            assert_eq!(map.value_size(), value_size, "value size of {name}");
            assert_eq!(map.max_entries(), max_entries, "max entries of {name}");
        }
    }
}
