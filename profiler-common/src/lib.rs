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

/// HTTP capture: the syscall tracepoints each program is attached to, by program name. Every
/// `sys_enter_*` data program saves its arguments for the matching `sys_exit_*` program, which
/// sees how many bytes moved and inspects them.
pub const HTTP_PROGRAMS: [(&str, &[&str]); 7] = [
    // read/recvfrom/write/sendto(fd, buf, len, ...): one buffer.
    (
        "on_data_enter",
        &[
            "sys_enter_read",
            "sys_enter_recvfrom",
            "sys_enter_write",
            "sys_enter_sendto",
        ],
    ),
    // readv/writev(fd, iov, iovcnt): the first iovec.
    (
        "on_data_enter_iov",
        &["sys_enter_readv", "sys_enter_writev"],
    ),
    // recvmsg/sendmsg(fd, msg, flags): the first iovec of the message.
    (
        "on_data_enter_msg",
        &["sys_enter_recvmsg", "sys_enter_sendmsg"],
    ),
    // sendfile(out_fd, in_fd, ...): response bytes without a user buffer.
    ("on_sendfile_enter", &["sys_enter_sendfile64"]),
    (
        "on_read_exit",
        &[
            "sys_exit_read",
            "sys_exit_readv",
            "sys_exit_recvfrom",
            "sys_exit_recvmsg",
        ],
    ),
    (
        "on_write_exit",
        &[
            "sys_exit_write",
            "sys_exit_writev",
            "sys_exit_sendto",
            "sys_exit_sendmsg",
            "sys_exit_sendfile64",
        ],
    ),
    // A new connection on an fd, or its end: accept/accept4 return it, connect and close take it.
    (
        "on_connection_change",
        &[
            "sys_exit_accept",
            "sys_exit_accept4",
            "sys_enter_connect",
            "sys_enter_close",
        ],
    ),
];

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
/// Trace context of the request each thread is serving: `pid_tgid` (u64: pid << 32 | tid) →
/// [`TraceCtx`]. The name and layout are OBI's `traces_ctx_v1`, so other tools can read it. The
/// HTTP capture writes it when a server thread reads a request and removes it when the thread
/// writes the response; the sampler copies it into [`SampleKey`].
pub const MAP_TRACES_CTX: &str = "traces_ctx_v1";
/// HTTP connections followed by the capture: [`ConnKey`] → [`HttpExchange`] (LRU).
pub const MAP_HTTP_CONNS: &str = "HTTP_CONNS";
/// Arguments of the read/write syscalls threads are inside, kept until the exit: `pid_tgid` →
/// the syscall's buffer and descriptor (LRU).
pub const MAP_SYSCALL_ARGS: &str = "SYSCALL_ARGS";
/// Ring buffer of [`HttpExchange`] records (a header, then `request_len` request bytes) and
/// [`H2Chunk`] records.
pub const MAP_HTTP_EVENTS: &str = "HTTP_EVENTS";
/// Array where the kernel assembles an [`H2Chunk`], one entry per CPU id: the agent sizes it to
/// the possible CPUs (per-CPU maps cannot hold values this large).
pub const MAP_H2_SCRATCH: &str = "H2_SCRATCH";
/// Processes that serve HTTP/2 (read a client connection preface): `pid` (u32) → `u8` (LRU).
/// The sampler stamps their samples with [`SampleKey::time_ns`]: the kernel cannot read HPACK,
/// so only user space can tell which stream a thread was answering.
pub const MAP_H2_SERVERS: &str = "H2_SERVERS";
/// Capacity of [`MAP_H2_SERVERS`].
pub const H2_SERVERS_MAX_ENTRIES: u32 = 4_096;
/// Program array whose slot 0 the HTTP/2 exit path tail-calls to send the further records of
/// a syscall that moved more bytes than one [`H2Chunk`] holds; the agent puts
/// [`PROG_H2_CONTINUE`] there.
pub const MAP_H2_CONTINUE: &str = "H2_CONTINUE";
/// The program in [`MAP_H2_CONTINUE`]: loaded, never attached.
pub const PROG_H2_CONTINUE: &str = "on_h2_continue";

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
/// Threads with a trace context at a time (OBI's size for `traces_ctx_v1`).
pub const TRACES_CTX_MAX_ENTRIES: u32 = 1 << 14;
/// HTTP connections followed at a time (least recently used ones are evicted beyond it); the
/// agent may resize it at load time.
pub const HTTP_CONNS_MAX_ENTRIES: u32 = 8192;
/// Threads inside a read/write syscall at a time whose arguments are kept until the exit.
pub const SYSCALL_ARGS_MAX_ENTRIES: u32 = 16_384;
/// Bytes of the HTTP event ring buffer in the object (a power of two, multiple of the page
/// size): the smallest the agent uses. It sizes the ring to the machine at load time (see
/// `http_ring_bytes` in the agent): records come from every CPU at once.
pub const HTTP_EVENTS_BYTES: u32 = 2 << 20;
/// Bytes waiting in the HTTP event ring buffer past which a record wakes the agent's reader.
/// Below it records are sent without a wake-up (one per request would cost more than the
/// capture) and the reader drains on its own timer; past it a burst cannot fill the ring
/// before the reader runs. An eighth of the smallest ring.
pub const HTTP_EVENTS_WAKEUP_BYTES: u64 = HTTP_EVENTS_BYTES as u64 / 8;
/// Bytes of a request the capture always has room to keep: appends stop once this many are
/// held, so up to `2 * REQUEST_CAPTURE_BYTES - 1` bytes end up in [`HttpExchange::request`].
pub const REQUEST_CAPTURE_BYTES: usize = 512;
/// Least time between two MORE records of one exchange.
pub const MORE_INTERVAL_NS: u64 = 1_000_000;
/// Bytes of the response's first write kept (the status line).
pub const RESPONSE_CAPTURE_BYTES: usize = 32;

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

/// Key of one aggregated sample. 80 bytes, no padding.
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
    /// Trace and span the thread was serving when sampled (see [`MAP_TRACES_CTX`]); all zero
    /// when none.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// When the sample was taken (`CLOCK_MONOTONIC`), for a thread of an HTTP/2 server (see
    /// [`MAP_H2_SERVERS`]) without a trace context: user space links it to the stream the
    /// thread was answering then. 0 for every other sample, so those aggregate in the kernel.
    pub time_ns: u64,
}

/// Value of [`MAP_TRACES_CTX`] (OBI's `obi_ctx_info_t`). 24 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// A socket of one process: key of [`MAP_HTTP_CONNS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Process id (Linux tgid).
    pub pid: u32,
    pub fd: u32,
}

/// Values of [`HttpExchange::kind`].
pub mod http_event {
    /// The first bytes of a response moved: the record holds the request prefix, the status
    /// line prefix and the timings so far.
    pub const EXCHANGE: u32 = 1;
    /// More bytes of the same response moved: `response_end_ns` and `response_bytes` grew. The
    /// record is the header only (`request_len` bytes are not sent). At most one per
    /// [`MORE_INTERVAL_NS`] per exchange: the final end also comes with the connection's next
    /// EXCHANGE (`prev_response_end_ns`) or its CLOSE.
    pub const MORE: u32 = 2;
    /// Bytes one syscall moved on an HTTP/2 connection: an [`super::H2Chunk`], not an
    /// `HttpExchange` (records of both kinds share the ring buffer; `kind` comes first in both).
    pub const H2_DATA: u32 = 4;
    /// The process closed the connection (header only). An exchange still waiting for its
    /// response comes with [`super::http_flags::NO_RESPONSE`].
    pub const CLOSE: u32 = 3;
}

/// Values of [`HttpExchange::role`].
pub mod http_role {
    /// The process read the request and wrote the response.
    pub const SERVER: u32 = 1;
    /// The process wrote the request and read the response.
    pub const CLIENT: u32 = 2;
}

/// Bits of [`HttpExchange::flags`].
pub mod http_flags {
    /// This response answers the `pipeline_index`-th request of the bytes read at
    /// `request_start_ns` (pipelining): the request prefix is not repeated.
    pub const PIPELINED: u32 = 1;
    /// More request bytes arrived than the prefix holds.
    pub const REQUEST_TRUNCATED: u32 = 2;
    /// The connection closed before any response to the current request.
    pub const NO_RESPONSE: u32 = 4;
    /// The trace context came from the request's `traceparent` header.
    pub const TRACEPARENT: u32 = 8;
}

/// Values of [`HttpExchange::protocol`].
pub mod http_protocol {
    /// HTTP/1.x: the kernel pairs requests and responses and sends EXCHANGE/MORE records.
    pub const HTTP1: u32 = 0;
    /// HTTP/2 (from the client connection preface): the kernel sends the bytes of every
    /// syscall as [`super::H2Chunk`] records; user space parses frames and HPACK.
    pub const HTTP2: u32 = 1;
}

/// Bytes of one syscall an [`H2Chunk`] keeps (the array is three times as large, for the
/// verifier); a syscall that moved more takes several records (up to 16 x 32 KiB), so frame
/// headers anywhere in large reads and writes arrive.
pub const H2_CHUNK_BYTES: usize = 32 << 10;
/// Buffers (iovecs) of one syscall the kernel looks at for the first record; the next records
/// go on from there. gRPC's C core writes each header name and value from its own buffer.
pub const H2_IOVECS: usize = 32;
/// Gaps one [`H2Chunk`] can describe.
pub const H2_GAPS: usize = 16;
/// Bytes kept, in a syscall's last record (the 16th), of a buffer that does not fit whole while
/// more buffers follow (enough for the frame header a DATA payload buffer may start with): the
/// room is kept for the next buffers, which hold the frames that follow a large payload
/// (trailers, the next HEADERS).
pub const H2_BUFFER_HEAD: usize = 64;

/// The bytes one syscall moved on an HTTP/2 connection (record kind
/// [`http_event::H2_DATA`]), cut after `data_len` bytes of `data`; a syscall that moved more
/// than [`H2_CHUNK_BYTES`] takes several records in a row, each with the next part of its bytes
/// (same `tid`, `fd`, `write` and times).
///
/// `data` holds the kept bytes in the order they moved. Where bytes were not kept, `gaps` says
/// so: `[at, missing]` = `missing` bytes moved between `data[..at]` and `data[at..]` (sorted by
/// `at`). Bytes moved past `data_len` and the gaps (`moved - data_len - sum(missing)`) are
/// missing after the last kept byte. User space knows where and how many bytes are missing, so
/// frame boundaries survive gaps that fall inside DATA payloads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Chunk {
    /// [`http_event::H2_DATA`].
    pub kind: u32,
    /// [`http_role`] of the process on this connection.
    pub role: u32,
    pub pid: u32,
    /// The thread that made the syscall.
    pub tid: u32,
    pub fd: u32,
    /// 1: the process wrote the bytes; 0: it read them.
    pub write: u32,
    /// Entries of `gaps` in use.
    pub gap_count: u32,
    /// Bytes of `data` that are valid.
    pub data_len: u32,
    /// With `pid` and `fd`, identifies the connection (as in [`HttpExchange`]).
    pub conn_start_ns: u64,
    /// Entry and return of the syscall (`CLOCK_MONOTONIC`).
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes of the syscall this record covers: all it moved (its return value), or this
    /// record's part when the syscall takes several.
    pub moved: u64,
    /// For writes: the trace context of the writing thread while it serves a request (see
    /// [`MAP_TRACES_CTX`]), so the requests it sends become children; zero otherwise.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub comm: [u8; COMM_LEN],
    pub gaps: [[u32; 2]; H2_GAPS],
    pub data: [u8; 3 * H2_CHUNK_BYTES],
}

impl H2Chunk {
    /// Bytes of the record before `data`.
    pub const HEADER_BYTES: usize = 8 * 4 + 4 * 8 + 24 + COMM_LEN + 8 * H2_GAPS;
}

/// Values of [`HttpExchange::phase`] (kernel bookkeeping; user space may ignore it).
pub mod http_phase {
    /// Request bytes are moving; no response yet.
    pub const REQUEST: u32 = 1;
    /// The response has started.
    pub const RESPONSE: u32 = 2;
}

/// One request/response exchange on a connection: the value of [`MAP_HTTP_CONNS`] and, cut
/// after `request_len` request bytes, the record of [`MAP_HTTP_EVENTS`]. Times are
/// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
///
/// "Duration" = `response_end_ns - request_start_ns`: from the return of the syscall that read
/// the first request byte (server) or the entry of the one that wrote it (client) to the return
/// of the last syscall that moved response bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpExchange {
    /// [`http_event`] kind of the record.
    pub kind: u32,
    /// [`http_role`] of the process on this connection.
    pub role: u32,
    /// Process id (Linux tgid).
    pub pid: u32,
    /// Thread that moved the first request bytes.
    pub tid: u32,
    pub fd: u32,
    /// [`http_flags`] bits.
    pub flags: u32,
    /// [`http_phase`] of the exchange.
    pub phase: u32,
    /// Exchanges started on this connection before this one.
    pub seq: u32,
    /// Index among the pipelined requests of one read (0 unless [`http_flags::PIPELINED`]).
    pub pipeline_index: u32,
    /// Bytes of `request` that are valid.
    pub request_len: u32,
    /// Bytes of `response` that are valid.
    pub response_len: u32,
    /// A lone request byte read between exchanges, bit 8 set when valid: servers that poll the
    /// connection with 1-byte reads (Go's net/http) split the next request's method.
    pub carry: u32,
    /// Kernel scratch space (the verifier needs a round trip through memory; see
    /// `find_traceparent`).
    pub scratch: u32,
    /// [`http_protocol`] of the connection (in CLOSE records: which assembler it belongs to).
    pub protocol: u32,
    /// When the capture started following this connection: with `pid` and `fd`, identifies it.
    pub conn_start_ns: u64,
    pub request_start_ns: u64,
    pub response_start_ns: u64,
    pub response_end_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// When the `carry` byte was read.
    pub carry_ns: u64,
    /// The last response byte time of the exchange before this one on the connection (its
    /// final end, when MORE records were throttled); 0 for the first.
    pub prev_response_end_ns: u64,
    /// When the kernel last sent a record of this exchange (MORE records are throttled).
    pub emitted_ns: u64,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span (from `traceparent`, or the server span of the client's thread); all
    /// zero when none.
    pub parent_span_id: [u8; 8],
    /// `comm` of the thread that moved the first request bytes (names the service when the
    /// process is gone before user space looks).
    pub comm: [u8; COMM_LEN],
    /// The first bytes of the response.
    pub response: [u8; RESPONSE_CAPTURE_BYTES],
    /// The first bytes of the request (see [`REQUEST_CAPTURE_BYTES`]).
    pub request: [u8; 2 * REQUEST_CAPTURE_BYTES],
}

impl HttpExchange {
    /// Bytes of the record before `request`: what MORE and CLOSE records carry.
    pub const HEADER_BYTES: usize = 14 * 4 + 9 * 8 + 32 + COMM_LEN + RESPONSE_CAPTURE_BYTES;
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
    /// 1: the HTTP capture programs are attached and follow connections.
    pub http_enabled: u32,
    /// The agent's own pid: the capture ignores its traffic (it would trace its own uploads).
    pub agent_pid: u32,
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
    /// Samples taken while the thread served a traced request.
    SamplesInSpan,
    /// HTTP requests whose first bytes were seen (server and client).
    HttpRequests,
    /// HTTP responses whose first bytes were seen.
    HttpResponses,
    /// Requests that carried a valid `traceparent`.
    HttpTraceparents,
    /// Records lost because the ring buffer was full.
    HttpEventsLost,
    /// Connections not followed because the connection map refused an entry.
    HttpConnsFull,
    /// Syscalls not inspected because the argument map was full.
    HttpArgsFull,
    /// Bytes on a followed connection that neither continue nor start a request or response
    /// (binary data after an HTTP exchange, an upgrade, garbage).
    HttpUnrecognized,
    /// HTTP/2 connections followed from their connection preface.
    Http2Connections,
    /// Samples of HTTP/2 server processes sent with their time, one key each, for user space
    /// to link to streams (see [`SampleKey::time_ns`]).
    TimedSamples,
}

impl Stat {
    /// Number of counters in [`MAP_STATS`].
    pub const COUNT: u32 = Stat::TimedSamples as u32 + 1;
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceCtx {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HttpExchange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::H2Chunk {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn abi_types_have_no_padding() {
        assert_eq!(
            size_of::<SampleKey>(),
            4 + 4 + 8 + 8 + 4 + 4 + COMM_LEN + 16 + 8 + 8
        );
        assert_eq!(size_of::<Config>(), 6 * 4);
        assert_eq!(size_of::<TraceCtx>(), 24);
        assert_eq!(size_of::<ConnKey>(), 8);
        assert_eq!(
            size_of::<HttpExchange>(),
            HttpExchange::HEADER_BYTES + 2 * REQUEST_CAPTURE_BYTES
        );
        assert_eq!(
            core::mem::offset_of!(HttpExchange, request),
            HttpExchange::HEADER_BYTES
        );
        assert_eq!(
            size_of::<H2Chunk>(),
            H2Chunk::HEADER_BYTES + 3 * H2_CHUNK_BYTES
        );
        assert_eq!(core::mem::offset_of!(H2Chunk, data), H2Chunk::HEADER_BYTES);
        assert_eq!(size_of::<StackTrace>(), 8 * (1 + MAX_STACK_DEPTH));
    }
}
