//! Kernel programs of the profiler. Start at [`on_cpu_sample`]: one perf_event program per CPU
//! that bumps a counter per (pid, tid, comm, user stack, kernel stack) in the active slot.
//!
//! Everything shared with the agent (names, key layout, stats indices) lives in
//! `profiler-common`. The programs never log on the sample path; every failure bumps a counter
//! in `STATS`.
#![no_std]
#![no_main]

mod http;

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_stack,
    },
    macros::{map, perf_event, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{PerfEventContext, TracePointContext},
    EbpfContext,
};
use profiler_common::{
    stack_error, Config, SampleKey, StackTrace, Stat, COUNTS_MAX_ENTRIES, MAX_STACK_DEPTH,
    PID_FILTER_MAX_ENTRIES, STACKS_MAX_ENTRIES,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `EEXIST`: the key is already in the map.
const EEXIST: i32 = 17;

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(PID_FILTER_MAX_ENTRIES, 0);

#[map]
static COUNTS_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNTS_MAX_ENTRIES, 0);
#[map]
static COUNTS_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(COUNTS_MAX_ENTRIES, 0);

#[map]
static STACKS_0: HashMap<u64, StackTrace> = HashMap::with_max_entries(STACKS_MAX_ENTRIES, 0);
#[map]
static STACKS_1: HashMap<u64, StackTrace> = HashMap::with_max_entries(STACKS_MAX_ENTRIES, 0);

/// Per-CPU buffers for the user (0) and the kernel (1) stack: too large for the 512-byte BPF
/// stack.
#[map]
static STACK_SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(2, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

#[inline(always)]
fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot; programs on one CPU do not run concurrently with each other
        // for the same program type, so a plain increment is race-free.
        unsafe { *counter += 1 };
    }
}

/// Which stack to capture, with the counters for its outcomes.
struct StackKind {
    flags: u64,
    /// Its entry of `STACK_SCRATCH`.
    scratch: u32,
    none: Stat,
    map_full: Stat,
    capture_failed: Stat,
}

const USER_STACK: StackKind = StackKind {
    flags: BPF_F_USER_STACK as u64,
    scratch: 0,
    none: Stat::UserStackNone,
    map_full: Stat::UserStackMapFull,
    capture_failed: Stat::UserStackCaptureFailed,
};

const KERNEL_STACK: StackKind = StackKind {
    flags: 0,
    scratch: 1,
    none: Stat::KernelStackNone,
    map_full: Stat::KernelStackMapFull,
    capture_failed: Stat::KernelStackCaptureFailed,
};

/// FNV-1a style mixing over whole frames; 0 is reserved for "no stack".
#[inline(always)]
fn hash_frames(trace: &StackTrace) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ trace.len;
    let mut i = 0;
    while i < MAX_STACK_DEPTH {
        if i as u64 >= trace.len {
            break;
        }
        hash = (hash ^ trace.frames[i]).wrapping_mul(0x0000_0100_0000_01b3);
        hash ^= hash >> 29;
        i += 1;
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// Copies one stack into its scratch entry and returns (stack id, error). The id is a hash of
/// the frames, so an identical stack maps to the same entry and different stacks never collide
/// in practice. Only scalars come back (the entry is looked up again to store it): a pointer
/// held across the other stack's capture would make the verifier walk that one's hash loop once
/// per outcome of this one.
#[inline(always)]
fn capture_stack(ctx: &PerfEventContext, kind: &StackKind) -> (u64, i32) {
    let Some(trace) = STACK_SCRATCH.get_ptr_mut(kind.scratch) else {
        count(kind.capture_failed);
        return (0, stack_error::CAPTURE_FAILED);
    };
    // SAFETY: `trace` points to this CPU's scratch entry for this kind, which nothing else uses
    // while this program runs; bpf_get_stack writes at most the size given and zeroes the
    // unused tail.
    let copied = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            (*trace).frames.as_mut_ptr().cast(),
            (MAX_STACK_DEPTH * 8) as u32,
            kind.flags,
        )
    };
    if copied < 0 {
        count(kind.capture_failed);
        return (0, stack_error::CAPTURE_FAILED);
    }
    if copied == 0 {
        count(kind.none);
        return (0, stack_error::NONE);
    }
    // SAFETY: as above.
    let trace = unsafe { &mut *trace };
    trace.len = copied as u64 / 8;
    (hash_frames(trace), 0)
}

/// Stores a captured stack (its scratch entry) in `stacks` under `id`; returns (stack id,
/// error) for the sample's key.
#[inline(always)]
fn store_stack(
    stacks: &HashMap<u64, StackTrace>,
    (id, error): (u64, i32),
    kind: &StackKind,
) -> (u64, i32) {
    if error != 0 {
        return (0, error);
    }
    let Some(trace) = STACK_SCRATCH.get(kind.scratch) else {
        count(kind.capture_failed);
        return (0, stack_error::CAPTURE_FAILED);
    };
    // -EEXIST means this stack is already stored: fine. Anything else means the map is full.
    match stacks.insert(&id, trace, BPF_NOEXIST) {
        Ok(()) => (id, 0),
        Err(err) if err == -EEXIST => (id, 0),
        Err(_) => {
            count(kind.map_full);
            (0, stack_error::MAP_FULL)
        }
    }
}

/// Counts one cpu-clock sample.
#[perf_event]
pub fn on_cpu_sample(ctx: PerfEventContext) -> u32 {
    try_on_cpu_sample(&ctx);
    0
}

#[inline(always)]
fn try_on_cpu_sample(ctx: &PerfEventContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if pid == 0 {
        count(Stat::IdleSamples);
        return;
    }
    let Some(config) = CONFIG.get(0) else {
        count(Stat::ConfigMissing);
        return;
    };
    if config.filter_pids != 0 && PID_FILTER.get_ptr(pid).is_none() {
        count(Stat::FilteredOut);
        return;
    }
    // Both stacks are copied and hashed before a slot's maps are picked: the verifier walks the
    // hash loops once instead of once per slot (7.3k instructions verified at each load instead
    // of 12.6k).
    let user = capture_stack(ctx, &USER_STACK);
    let kernel = capture_stack(ctx, &KERNEL_STACK);
    let (counts, stacks) = if config.active_slot == 0 {
        (&COUNTS_0, &STACKS_0)
    } else {
        (&COUNTS_1, &STACKS_1)
    };
    let (user_stack_id, user_stack_error) = store_stack(stacks, user, &USER_STACK);
    let (kernel_stack_id, kernel_stack_error) = store_stack(stacks, kernel, &KERNEL_STACK);
    let mut key = SampleKey {
        pid,
        tid,
        user_stack_id,
        kernel_stack_id,
        user_stack_error,
        kernel_stack_error,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        trace_id: [0; 16],
        span_id: [0; 8],
        time_ns: 0,
    };
    if config.http_enabled != 0 {
        if let Some(ctx) = http::TRACES_CTX.get_ptr(pid_tgid) {
            // SAFETY: a live entry of the LRU map, copied out at once.
            let ctx = unsafe { *ctx };
            key.trace_id = ctx.trace_id;
            key.span_id = ctx.span_id;
            count(Stat::SamplesInSpan);
        } else if http::H2_SERVERS.get_ptr(pid).is_some() {
            // Which HTTP/2 stream the thread answers is known in user space only: the sample
            // goes there alone, with its time.
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            key.time_ns = unsafe { bpf_ktime_get_ns() };
            count(Stat::TimedSamples);
        }
    }

    // The key holds the thread id and a thread runs on one CPU at a time, so no other program
    // updates this entry concurrently: a plain increment is enough.
    if let Some(value) = counts.get_ptr_mut(&key) {
        // SAFETY: the pointer comes from a successful lookup of a live map entry.
        unsafe { *value += 1 };
        count(Stat::Samples);
        return;
    }
    // The insert fails with -E2BIG when the map is full; no other failure is expected.
    match counts.insert(&key, &1, BPF_NOEXIST) {
        Ok(()) => count(Stat::Samples),
        Err(_) => count(Stat::CountsMapFull),
    }
}

/// Adds the children (and threads) of filtered processes to the filter.
#[tracepoint]
pub fn on_process_fork(ctx: TracePointContext) -> u32 {
    try_on_process_fork(&ctx);
    0
}

#[inline(always)]
fn try_on_process_fork(ctx: &TracePointContext) {
    let Some(config) = CONFIG.get(0) else {
        return;
    };
    if config.follow_children == 0 {
        return;
    }
    // The tracepoint fires in the parent's context.
    let parent_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if PID_FILTER.get_ptr(parent_pid).is_none() {
        return;
    }
    // SAFETY: the offset comes from the tracepoint's format file and read_at uses
    // bpf_probe_read, which faults safely.
    let Ok(child_pid) = (unsafe { ctx.read_at::<u32>(config.fork_child_pid_offset as usize) })
    else {
        return;
    };
    match PID_FILTER.insert(child_pid, 1u8, 0) {
        Ok(()) => count(Stat::ChildrenFollowed),
        Err(_) => count(Stat::PidFilterFull),
    }
}

/// Removes an exiting thread that is not its process's leader from the filter, so followed
/// thread ids do not accumulate. Leaders stay: other threads of the process may still run.
#[tracepoint]
pub fn on_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tid != pid {
        let _ = PID_FILTER.remove(tid);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
