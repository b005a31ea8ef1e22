//! The ABI between the kernel programs (`profiler-ebpf`) and the agent: every type and name that
//! crosses the boundary is defined here, once.
//!
//! Types are `#[repr(C)]`, `Copy` and free of implicit padding, so both sides agree byte for byte
//! and the kernel never hashes uninitialised padding. With the `user` feature they implement
//! `aya::Pod` so the agent can read and write them in maps.
#![no_std]

/// Program on the perf_event cpu-clock of every online CPU: counts one sample per key.
pub const PROG_ON_CPU_SAMPLE: &str = "on_cpu_sample";
/// Tracepoint `sched:sched_process_fork`: adds children of filtered processes to the filter.
pub const PROG_ON_PROCESS_FORK: &str = "on_process_fork";
/// Tracepoint `sched:sched_process_exit`: removes exited non-leader threads from the filter.
pub const PROG_ON_PROCESS_EXIT: &str = "on_process_exit";

/// Sample counts, `SampleKey` → `u64`, one map per slot (see [`Config::active_slot`]).
pub const MAP_COUNTS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
/// Stack traces referenced by the counts of the same slot: stack id → [`StackTrace`].
pub const MAP_STACKS: [&str; 2] = ["STACKS_0", "STACKS_1"];
/// Per-CPU scratch [`StackTrace`] the sampler copies a stack into before hashing it.
pub const MAP_STACK_SCRATCH: &str = "STACK_SCRATCH";
/// Array of one [`Config`], written by the agent, read by every program.
pub const MAP_CONFIG: &str = "CONFIG";
/// Processes (`pid`, i.e. Linux tgid) to sample when [`Config::filter_pids`] is set: `u32` → `u8`.
pub const MAP_PID_FILTER: &str = "PID_FILTER";
/// Per-CPU counters indexed by [`Stat`].
pub const MAP_STATS: &str = "STATS";

/// Capacity of each counts map in the object: distinct (pid, tid, comm, stacks) keys per drain
/// interval. The agent resizes it at load time to the number of CPUs and the frequency.
pub const COUNTS_MAX_ENTRIES: u32 = 16_384;
/// Capacity of each stack map in the object: distinct stacks per drain interval; resized at load
/// time like the counts maps. Entries are preallocated (kernels before 6.1 require it for
/// perf_event programs): about 1 KiB each.
pub const STACKS_MAX_ENTRIES: u32 = 8_192;
/// Capacity of the pid filter (processes plus the threads of followed children).
pub const PID_FILTER_MAX_ENTRIES: u32 = 16_384;
/// Frames kept per stack (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;
/// Length of a task's `comm`, including the terminating NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Why a sample has no stack id (the `*_stack_error` fields of [`SampleKey`]); the sample is
/// still counted, so losses stay visible.
pub mod stack_error {
    /// No stack of that kind: the kernel part of a user-mode sample, or the user part of a
    /// kernel thread. Expected, not a loss.
    pub const NONE: i32 = 1;
    /// The stack map was full: the stack is lost.
    pub const MAP_FULL: i32 = 2;
    /// `bpf_get_stack` failed (the negated errno is counted in the stats): the stack is lost.
    pub const CAPTURE_FAILED: i32 = 3;
}

/// Key of one aggregated sample. 48 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (what Linux calls "tgid").
    pub pid: u32,
    /// Thread id (what Linux calls "pid").
    pub tid: u32,
    /// Key of the user stack in the slot's stack map (a hash of its frames); 0 when there is none.
    pub user_stack_id: u64,
    /// Key of the kernel stack in the slot's stack map; 0 when there is none.
    pub kernel_stack_id: u64,
    /// 0, or why there is no user stack id (see [`stack_error`]).
    pub user_stack_error: i32,
    /// 0, or why there is no kernel stack id (see [`stack_error`]).
    pub kernel_stack_error: i32,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// A captured stack: `len` instruction pointers, innermost first; the rest of `frames` is zero.
/// Stacks are keyed by a 64-bit hash of their frames, so two different stacks never evict or
/// refuse each other (the kernel's stack-trace map drops a stack whose hash bucket is taken).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTrace {
    /// Number of valid frames.
    pub len: u64,
    pub frames: [u64; MAX_STACK_DEPTH],
}

/// Settings shared by all programs. Written by the agent, read by the kernel; `u32` flags instead
/// of `bool` keep the type free of implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Slot (0 or 1) whose counts and stacks maps the sampler writes. The agent flips it, waits
    /// for in-flight programs, then drains and clears the other slot: no sample is lost.
    pub active_slot: u32,
    /// 1: sample only processes in [`MAP_PID_FILTER`]; 0: every process except the idle task.
    pub filter_pids: u32,
    /// 1: a filtered process's new children and threads join the filter.
    pub follow_children: u32,
    /// Byte offset of `child_pid` in the `sched_process_fork` tracepoint record, read by the
    /// agent from tracefs (`events/sched/sched_process_fork/format`).
    pub fork_child_pid_offset: u32,
}

/// Indices into [`MAP_STATS`]: what the kernel counted, summed over CPUs by the agent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Samples counted into a counts map.
    Samples = 0,
    /// Samples of the idle task (pid 0), not recorded.
    IdleSamples,
    /// Samples of processes outside the pid filter, not recorded.
    FilteredOut,
    /// Samples without a user stack (kernel threads).
    UserStackNone,
    /// User stacks lost because the stack map was full.
    UserStackMapFull,
    /// User stacks lost because `bpf_get_stack` failed.
    UserStackCaptureFailed,
    /// Samples without a kernel stack (taken in user mode).
    KernelStackNone,
    /// Kernel stacks lost because the stack map was full.
    KernelStackMapFull,
    /// Kernel stacks lost because `bpf_get_stack` failed.
    KernelStackCaptureFailed,
    /// Samples lost because the counts map was full.
    CountsMapFull,
    /// Children or threads added to the pid filter.
    ChildrenFollowed,
    /// Children not followed because the pid filter was full.
    PidFilterFull,
    /// Samples skipped because the config map could not be read (never expected).
    ConfigMissing,
}

impl Stat {
    /// Number of counters in [`MAP_STATS`].
    pub const COUNT: u32 = Stat::ConfigMissing as u32 + 1;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)], Copy, made of integers only, with no implicit padding
    // (asserted by the layout tests below), so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::SampleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackTrace {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn abi_types_have_no_padding() {
        assert_eq!(size_of::<SampleKey>(), 4 + 4 + 8 + 8 + 4 + 4 + COMM_LEN);
        assert_eq!(size_of::<Config>(), 4 * 4);
        assert_eq!(size_of::<StackTrace>(), 8 * (1 + MAX_STACK_DEPTH));
    }
}
