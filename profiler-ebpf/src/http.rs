//! HTTP/1.x capture on syscall tracepoints (no kprobes: our kernels refuse them).
//!
//! Every data syscall (`read`, `write`, their vector and socket variants, `sendfile`) saves its
//! arguments at entry; at exit the program knows how many bytes moved and looks at them. A
//! connection (pid, fd) is followed from the first bytes that start an HTTP/1.x request: read
//! ones make the process the server, written ones the client. Per connection, the map value
//! [`HttpExchange`] accumulates the current exchange: the request prefix (also across several
//! syscalls), the trace context, and the timings; the first response bytes send it to user
//! space, later response bytes send short MORE records, `close` sends CLOSE. User space does
//! all the parsing; the kernel only recognises where requests and responses start.
//!
//! While a server thread handles a request, `traces_ctx_v1[pid_tgid]` holds its trace and span
//! id: the sampler copies them into samples, and client requests the thread sends become
//! children of that span.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf,
        generated::{
            bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_probe_read_user as probe_read_user,
            bpf_ringbuf_output,
        },
    },
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::TracePointContext,
};
use profiler_common::{
    http_event, http_flags, http_phase, http_protocol, http_role, ConnKey, H2Chunk, HttpExchange,
    Stat, TraceCtx, COMM_LEN, H2_BUFFER_HEAD, H2_CHUNK_BYTES, H2_GAPS, H2_IOVECS,
    H2_SERVERS_MAX_ENTRIES, HTTP_CONNS_MAX_ENTRIES, HTTP_EVENTS_BYTES, HTTP_EVENTS_WAKEUP_BYTES,
    MORE_INTERVAL_NS, REQUEST_CAPTURE_BYTES, RESPONSE_CAPTURE_BYTES, SYSCALL_ARGS_MAX_ENTRIES,
    TRACES_CTX_MAX_ENTRIES,
};

use crate::{count, CONFIG, PID_FILTER};

/// Offset of the first argument in a `sys_enter_*` record and of `ret` in a `sys_exit_*` one:
/// after the 8-byte common header and the 4-byte `__syscall_nr` padded to 8.
const ARG0: usize = 16;
/// Offset of the second argument of a `sys_enter_*` record.
const ARG1: usize = 24;

/// How the saved pointer leads to the data.
const DATA_BUF: u32 = 0;
const DATA_IOV: u32 = 1;
const DATA_MSG: u32 = 2;
const DATA_NONE: u32 = 3;
/// The slot's syscall has exited: nothing to inspect.
const DATA_USED: u32 = 4;

/// Bit of `HttpExchange::carry` saying it holds a byte.
const CARRY_VALID: u32 = 1 << 8;

/// Request bytes the exchange record can hold (the array is twice the guaranteed size so that
/// an append at a bounded offset with a bounded length always fits, which is what the verifier
/// checks).
const REQUEST_BUF: usize = 2 * REQUEST_CAPTURE_BYTES;
/// Bytes of a `traceparent` header line from its newline: "\ntraceparent:" (13), an optional
/// space, "00-" + 32 + "-" + 16 + "-" + 2 (55).
const TRACEPARENT_LINE: usize = 13 + 1 + 55;

/// Arguments of a data syscall in flight, kept from entry to exit (kernel-only).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallArgs {
    fd: u32,
    /// `DATA_*`.
    data: u32,
    /// Buffer, iovec array or msghdr, per `data`.
    ptr: u64,
    enter_ns: u64,
}

#[map]
static SYSCALL_ARGS: LruHashMap<u64, SyscallArgs> =
    LruHashMap::with_max_entries(SYSCALL_ARGS_MAX_ENTRIES, 0);

#[map(name = "traces_ctx_v1")]
pub(crate) static TRACES_CTX: LruHashMap<u64, TraceCtx> =
    LruHashMap::with_max_entries(TRACES_CTX_MAX_ENTRIES, 0);

/// Processes that read an HTTP/2 client connection preface: the sampler stamps their samples
/// with the time (see `SampleKey::time_ns`).
#[map]
pub(crate) static H2_SERVERS: LruHashMap<u32, u8> =
    LruHashMap::with_max_entries(H2_SERVERS_MAX_ENTRIES, 0);

#[map]
static HTTP_CONNS: LruHashMap<ConnKey, HttpExchange> =
    LruHashMap::with_max_entries(HTTP_CONNS_MAX_ENTRIES, 0);

#[map]
static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(HTTP_EVENTS_BYTES, 0);

/// Per-CPU zeroed template a new connection's entry is inserted from (too large for the stack).
#[map]
static EXCHANGE_SCRATCH: PerCpuArray<HttpExchange> = PerCpuArray::with_max_entries(1, 0);

/// Where an HTTP/2 chunk record is assembled, one entry per CPU id (too large for the stack and
/// for a per-CPU map); the agent sets the size to the possible CPUs. Tracepoint programs do not
/// nest or migrate, so an entry is this program's alone while it runs.
#[map]
static H2_SCRATCH: Array<H2Chunk> = Array::with_max_entries(1, 0);

/// Where a syscall's bytes stand between the records that carry them (see [`send_h2_chunk`]).
#[repr(C)]
#[derive(Clone, Copy)]
struct H2Cursor {
    /// The one buffer, or the iovec array.
    ptr: u64,
    /// Bytes of the syscall no record has covered yet.
    left: u64,
    /// Bytes of the current buffer already covered.
    offset: u64,
    /// The current iovec.
    index: u32,
    /// `H2_BUFFERS_*`: how `ptr` leads to the bytes.
    buffers: u32,
    /// Records sent for this syscall.
    records: u32,
    _pad: u32,
}

const H2_BUFFERS_ONE: u32 = 0;
const H2_BUFFERS_IOV: u32 = 1;
/// The bytes cannot be read (sendfile, an unreadable msghdr): one record says they moved.
const H2_BUFFERS_NONE: u32 = 2;

/// Records one syscall's bytes may take: 16 x 32 KiB.
const H2_RECORDS: u32 = 16;
/// Buffers a continuation record goes through (the first record, [`H2_IOVECS`]): fewer, because
/// the verifier knows nothing of where the cursor stands there and explores every path.
const H2_CONTINUE_BUFFERS: usize = 16;

/// The cursor of the syscall this CPU sends records for.
#[map]
static H2_CURSOR: PerCpuArray<H2Cursor> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: [`on_h2_continue`], set by the agent (an empty slot ends a syscall's records early,
/// with its remaining bytes marked missing).
#[map]
static H2_CONTINUE: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// Offset of `msg_iov` in `struct user_msghdr` (after `msg_name` and the padded `msg_namelen`).
const MSGHDR_IOV: usize = 16;

#[tracepoint]
pub fn on_data_enter(ctx: TracePointContext) -> u32 {
    save_args(&ctx, DATA_BUF);
    0
}

#[tracepoint]
pub fn on_data_enter_iov(ctx: TracePointContext) -> u32 {
    save_args(&ctx, DATA_IOV);
    0
}

#[tracepoint]
pub fn on_data_enter_msg(ctx: TracePointContext) -> u32 {
    save_args(&ctx, DATA_MSG);
    0
}

#[tracepoint]
pub fn on_sendfile_enter(ctx: TracePointContext) -> u32 {
    save_args(&ctx, DATA_NONE);
    0
}

#[tracepoint]
pub fn on_read_exit(ctx: TracePointContext) -> u32 {
    if try_on_data_exit(&ctx, false) == Some(true) {
        continue_h2(&ctx);
    }
    0
}

#[tracepoint]
pub fn on_write_exit(ctx: TracePointContext) -> u32 {
    if try_on_data_exit(&ctx, true) == Some(true) {
        continue_h2(&ctx);
    }
    0
}

/// `accept`/`accept4` returned a new fd, or `connect`/`close` got one: whatever the capture
/// followed on that fd is over.
#[tracepoint]
pub fn on_connection_change(ctx: TracePointContext) -> u32 {
    let _ = try_on_connection_change(&ctx);
    0
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// True when capture is on, the current process is not the agent, and it passes the pid
/// filter the sampler uses (so `record --pid` captures only those processes).
#[inline(always)]
fn capturing(pid: u32) -> bool {
    match CONFIG.get(0) {
        Some(config) => {
            config.http_enabled != 0
                && config.agent_pid != pid
                && (config.filter_pids == 0 || PID_FILTER.get_ptr(pid).is_some())
        }
        None => false,
    }
}

#[inline(always)]
fn save_args(ctx: &TracePointContext, data: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !capturing((pid_tgid >> 32) as u32) {
        return;
    }
    // SAFETY: fixed offsets of the syscall tracepoint record; read_at faults safely.
    let Ok(fd) = (unsafe { ctx.read_at::<i64>(ARG0) }) else {
        return;
    };
    if !(0..=i32::MAX as i64).contains(&fd) {
        return;
    }
    let ptr = if data == DATA_NONE {
        0
    } else {
        // SAFETY: as above.
        match unsafe { ctx.read_at::<u64>(ARG1) } {
            Ok(ptr) => ptr,
            Err(_) => return,
        }
    };
    let args = SyscallArgs {
        fd: fd as u32,
        data,
        ptr,
        enter_ns: now_ns(),
    };
    // Each thread keeps its entry (marked used at exit) instead of inserting and deleting one
    // per syscall: a lookup and a store cost a fraction of an insert and a delete. Threads that
    // are gone age out of the LRU map.
    match SYSCALL_ARGS.get_ptr_mut(&pid_tgid) {
        // SAFETY: a live entry owned by this thread (the key is its pid_tgid).
        Some(slot) => unsafe { *slot = args },
        None => {
            if SYSCALL_ARGS.insert(&pid_tgid, &args, 0).is_err() {
                count(Stat::HttpArgsFull);
            }
        }
    }
}

/// The user buffer holding the first bytes that moved, and how many of them it holds.
#[inline(always)]
fn data_buffer(args: &SyscallArgs, moved: u64) -> Option<(u64, u64)> {
    let iov_ptr = match args.data {
        DATA_BUF => return Some((args.ptr, moved)),
        DATA_NONE => return Some((0, 0)),
        DATA_IOV => args.ptr,
        // SAFETY: a user pointer read with a fault-safe helper.
        _ => unsafe { bpf_probe_read_user((args.ptr as usize + MSGHDR_IOV) as *const u64) }.ok()?,
    };
    // SAFETY: as above.
    let iov = unsafe { bpf_probe_read_user(iov_ptr as *const IoVec) }.ok()?;
    Some((iov.base, if iov.len < moved { iov.len } else { moved }))
}

/// The first (up to) 8 bytes of the data, zero-padded.
#[inline(always)]
fn peek(buf: u64, len: u64) -> [u8; 8] {
    let mut head = [0u8; 8];
    if buf != 0 && len >= 4 {
        // SAFETY: fault-safe read of user memory; bytes past `len` are ignored by the callers.
        let ok = unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut head) }.is_ok();
        if !ok {
            head = [0; 8];
        }
    }
    head
}

#[inline(always)]
fn starts_with(head: &[u8; 8], len: u64, prefix: &[u8]) -> bool {
    if len < prefix.len() as u64 {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() && i < 8 {
        if head[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The bytes start an HTTP/1.x request: a method and a space.
#[inline(always)]
fn is_request_start(head: &[u8; 8], len: u64) -> bool {
    match head[0] {
        b'G' => starts_with(head, len, b"GET "),
        b'P' => {
            starts_with(head, len, b"POST ")
                || starts_with(head, len, b"PUT ")
                || starts_with(head, len, b"PATCH ")
        }
        b'H' => starts_with(head, len, b"HEAD "),
        b'D' => starts_with(head, len, b"DELETE "),
        b'O' => starts_with(head, len, b"OPTIONS "),
        b'C' => starts_with(head, len, b"CONNECT "),
        b'T' => starts_with(head, len, b"TRACE "),
        _ => false,
    }
}

/// The bytes start an HTTP/1.x response.
#[inline(always)]
fn is_response_start(head: &[u8; 8], len: u64) -> bool {
    starts_with(head, len, b"HTTP/1.")
}

/// Returns `Some(true)` when an HTTP/2 syscall's bytes need more records ([`continue_h2`]).
fn try_on_data_exit(ctx: &TracePointContext, write: bool) -> Option<bool> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let slot = SYSCALL_ARGS.get_ptr_mut(&pid_tgid)?;
    // SAFETY: a live entry owned by this thread (the key is its pid_tgid).
    let args = unsafe { *slot };
    if args.data == DATA_USED {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*slot).data = DATA_USED };
    // SAFETY: fixed offset of `ret` in the exit record; read_at faults safely.
    let moved = unsafe { ctx.read_at::<i64>(ARG0) }.ok()?;
    if moved <= 0 {
        return None;
    }
    let moved = moved as u64;
    let now = now_ns();
    let (buf, len) = data_buffer(&args, moved)?;
    let head = peek(buf, len);
    let pid = (pid_tgid >> 32) as u32;
    let key = ConnKey { pid, fd: args.fd };

    let exchange = match HTTP_CONNS.get_ptr_mut(&key) {
        Some(exchange) => exchange,
        None => {
            let protocol = if is_request_start(&head, len) {
                http_protocol::HTTP1
            } else if starts_with(&head, len, b"PRI * HT") {
                // The HTTP/2 client connection preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").
                count(Stat::Http2Connections);
                http_protocol::HTTP2
            } else {
                return None;
            };
            let role = if write {
                http_role::CLIENT
            } else {
                if protocol == http_protocol::HTTP2 {
                    let _ = H2_SERVERS.insert(&pid, &1, 0);
                }
                http_role::SERVER
            };
            new_connection(&key, role, protocol, now)?
        }
    };
    // SAFETY: a live entry of the connection map. Only this thread's syscalls on this fd
    // reach it; two threads racing on one socket could interleave updates, which at worst
    // garbles that exchange's record (user space validates everything it parses).
    let x = unsafe { &mut *exchange };
    if x.protocol == http_protocol::HTTP2 {
        return send_h2_chunk(x, &args, moved, write, pid_tgid, now);
    }
    let request_direction = (x.role == http_role::SERVER) != write;
    let sent_at = if write { args.enter_ns } else { now };

    if request_direction {
        if x.phase == http_phase::REQUEST && x.request_start_ns != 0 {
            append_request(x, buf, len, moved);
        } else if x.carry & CARRY_VALID != 0 {
            // The byte read alone before may start a request with these bytes.
            let first = x.carry as u8;
            x.carry = 0;
            let joined = [
                first, head[0], head[1], head[2], head[3], head[4], head[5], head[6],
            ];
            if !is_request_start(&joined, len + 1) {
                count(Stat::HttpUnrecognized);
                return None;
            }
            let at = x.carry_ns;
            begin_request(x, pid_tgid, buf, len, moved, at, Some(first));
        } else if is_request_start(&head, len) {
            begin_request(x, pid_tgid, buf, len, moved, sent_at, None);
        } else if len == 1 && buf != 0 {
            // Go's net/http polls an idle connection with 1-byte reads: keep the byte.
            // SAFETY: a fault-safe read of one user byte.
            let byte = unsafe { bpf_probe_read_user(buf as *const u8) }.ok()?;
            x.carry = u32::from(byte) | CARRY_VALID;
            x.carry_ns = sent_at;
            return Some(false);
        } else {
            count(Stat::HttpUnrecognized);
            return None;
        }
        // Headers may arrive over several reads: look again until one holds the header.
        if x.role == http_role::SERVER
            && x.flags & http_flags::TRACEPARENT == 0
            && find_traceparent(x)
        {
            set_server_context(x, pid_tgid);
        }
        return Some(false);
    }

    // Response direction.
    if x.phase == http_phase::REQUEST {
        if x.request_start_ns == 0 {
            return None;
        }
        if !is_response_start(&head, len) {
            count(Stat::HttpUnrecognized);
            return None;
        }
        copy_response(x, buf, len);
        let switching = is_switching_protocols(x);
        if x.response[9] == b'1' && !switching {
            // 100 Continue and other interim responses: the final one follows.
            return None;
        }
        start_response(x, pid_tgid, moved, sent_at, now, 0);
        emit(x, true);
        if switching {
            // The connection leaves HTTP/1.x (WebSocket, h2c upgrade): stop following it.
            let _ = HTTP_CONNS.remove(&key);
        }
    } else if buf != 0 && is_response_start(&head, len) {
        // A second response without a request in between: pipelining.
        copy_response(x, buf, len);
        if x.response[9] == b'1' {
            return None;
        }
        let index = x.pipeline_index + 1;
        start_response(x, pid_tgid, moved, sent_at, now, index);
        x.flags |= http_flags::PIPELINED;
        emit(x, false);
    } else {
        x.response_end_ns = now;
        x.response_bytes += moved;
        // Throttled: the next EXCHANGE or the CLOSE carries the final end anyway.
        if now.wrapping_sub(x.emitted_ns) >= MORE_INTERVAL_NS {
            x.kind = http_event::MORE;
            x.emitted_ns = now;
            emit(x, false);
        }
    }
    Some(false)
}

/// Status 101 Switching Protocols.
#[inline(always)]
fn is_switching_protocols(x: &HttpExchange) -> bool {
    x.response[9] == b'1' && x.response[10] == b'0' && x.response[11] == b'1'
}

#[inline(always)]
fn new_connection(key: &ConnKey, role: u32, protocol: u32, now: u64) -> Option<*mut HttpExchange> {
    let template = EXCHANGE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry; nothing else uses it while this program runs.
    let t = unsafe { &mut *template };
    t.kind = 0;
    t.role = role;
    t.pid = key.pid;
    t.fd = key.fd;
    t.phase = 0;
    t.seq = 0;
    t.carry = 0;
    t.protocol = protocol;
    t.request_start_ns = 0;
    t.conn_start_ns = now;
    if HTTP_CONNS.insert(key, &*t, 0).is_err() {
        count(Stat::HttpConnsFull);
        return None;
    }
    HTTP_CONNS.get_ptr_mut(key)
}

/// Sends the bytes a syscall moved on an HTTP/2 connection as [`H2Chunk`] records: the first
/// here, and while bytes remain, each next one from [`on_h2_continue`] through a tail call, up
/// to [`H2_RECORDS`] records; the last one says where bytes are missing. Returns whether the
/// program should tail-call ([`continue_h2`]).
#[inline(always)]
fn send_h2_chunk(
    x: &HttpExchange,
    args: &SyscallArgs,
    moved: u64,
    write: bool,
    pid_tgid: u64,
    now: u64,
) -> Option<bool> {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let chunk = H2_SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: this CPU's scratch entry; nothing else uses it while this program runs.
    let c = unsafe { &mut *chunk };
    c.kind = http_event::H2_DATA;
    c.role = x.role;
    c.pid = x.pid;
    c.tid = pid_tgid as u32;
    c.fd = x.fd;
    c.write = u32::from(write);
    c.conn_start_ns = x.conn_start_ns;
    c.enter_ns = args.enter_ns;
    c.exit_ns = now;
    c.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    let ctx_of_thread = if write {
        // SAFETY: a live entry of the LRU map; copied out at once.
        TRACES_CTX.get_ptr(&pid_tgid).map(|ctx| unsafe { *ctx })
    } else {
        None
    };
    let trace = ctx_of_thread.unwrap_or(TraceCtx {
        trace_id: [0; 16],
        span_id: [0; 8],
    });
    c.trace_id = trace.trace_id;
    c.span_id = trace.span_id;

    let (ptr, buffers) = if args.data == DATA_BUF {
        (args.ptr, H2_BUFFERS_ONE)
    } else if args.data == DATA_IOV {
        (args.ptr, H2_BUFFERS_IOV)
    } else if args.data == DATA_MSG {
        // SAFETY: a user pointer read with a fault-safe helper.
        let iov = unsafe { bpf_probe_read_user((args.ptr as usize + MSGHDR_IOV) as *const u64) };
        iov.map_or((0, H2_BUFFERS_NONE), |iov| (iov, H2_BUFFERS_IOV))
    } else {
        (0, H2_BUFFERS_NONE)
    };
    let cursor = H2_CURSOR.get_ptr_mut(0)?;
    // SAFETY: this CPU's cursor; only this program and its tail calls use it meanwhile.
    let cursor = unsafe { &mut *cursor };
    *cursor = H2Cursor {
        ptr,
        left: moved,
        offset: 0,
        index: 0,
        buffers,
        records: 0,
        _pad: 0,
    };
    Some(send_h2_record::<H2_IOVECS>(c, cursor))
}

/// The next record of a syscall whose bytes did not fit in one (see [`send_h2_chunk`]).
#[tracepoint]
pub fn on_h2_continue(ctx: TracePointContext) -> u32 {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let (Some(chunk), Some(cursor)) = (H2_SCRATCH.get_ptr_mut(cpu), H2_CURSOR.get_ptr_mut(0)) {
        // SAFETY: this CPU's entries, set by the program that tail-called this one, which
        // ended with the call.
        if unsafe { send_h2_record::<H2_CONTINUE_BUFFERS>(&mut *chunk, &mut *cursor) } {
            continue_h2(&ctx);
        }
    }
    0
}

/// Tail-calls [`on_h2_continue`] for the next record of this CPU's HTTP/2 syscall. Only a
/// program's own function may (the kernel allows tail calls in functions returning `int`).
#[inline(always)]
fn continue_h2(ctx: &TracePointContext) {
    // SAFETY: the context is this program's; on success the call does not return.
    unsafe { H2_CONTINUE.tail_call(ctx, 0) };
    // Not continued (the slot is empty, or the kernel's tail call limit): say the rest is
    // missing so that user space does not read the next syscall's bytes in its place.
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let (Some(chunk), Some(cursor)) = (H2_SCRATCH.get_ptr_mut(cpu), H2_CURSOR.get_ptr_mut(0)) {
        // SAFETY: this CPU's entries, set by this program.
        let (c, cursor) = unsafe { (&mut *chunk, &*cursor) };
        c.gap_count = 0;
        c.data_len = 0;
        c.moved = cursor.left;
        output_h2_record(c);
    }
}

/// Fills and sends one record from where `cursor` stands; returns whether bytes remain for
/// another record (from [`on_h2_continue`]).
#[inline(always)]
fn send_h2_record<const BUFFERS: usize>(c: &mut H2Chunk, cursor: &mut H2Cursor) -> bool {
    let covered_from = cursor.left;
    let last_record = cursor.records + 1 >= H2_RECORDS;
    c.gap_count = 0;
    c.data_len = 0;
    let more = fill_h2_record::<BUFFERS>(c, cursor, last_record) && !last_record;
    cursor.records += 1;
    // A record that ends the syscall covers every byte left: those not kept are missing after
    // its data.
    c.moved = if more {
        covered_from - cursor.left
    } else {
        covered_from
    };
    output_h2_record(c);
    more
}

/// Sends the chunk assembled in `c`.
#[inline(always)]
fn output_h2_record(c: &mut H2Chunk) {
    let size = H2Chunk::HEADER_BYTES + (c.data_len as usize & (2 * H2_CHUNK_BYTES - 1));
    // SAFETY: `c` is a map value of size_of::<H2Chunk>() bytes and `size` never exceeds it;
    // the ring buffer copies the bytes.
    let ret = unsafe {
        bpf_ringbuf_output(
            core::ptr::from_ref(&HTTP_EVENTS)
                .cast_mut()
                .cast::<c_void>(),
            core::ptr::from_mut(c).cast::<c_void>(),
            size as u64,
            output_flags(),
        )
    };
    if ret < 0 {
        count(Stat::HttpEventsLost);
    }
}

/// Copies into `c` the bytes from where `cursor` stands, buffer after buffer, until the chunk
/// is full or the syscall's bytes end, and moves the cursor past them. Returns whether bytes
/// remain for another record. In the `last_record` a buffer that does not fit keeps its first
/// [`H2_BUFFER_HEAD`] bytes and a gap (so frame headers after a large DATA payload written from
/// its own iovec still arrive), or, if it is the last buffer, as many bytes as fit.
#[inline(always)]
fn fill_h2_record<const BUFFERS: usize>(
    c: &mut H2Chunk,
    cursor: &mut H2Cursor,
    last_record: bool,
) -> bool {
    if cursor.buffers == H2_BUFFERS_NONE {
        return false;
    }
    let mut i = 0;
    while i < BUFFERS {
        if cursor.left == 0 {
            return false;
        }
        let (base, len) = if cursor.buffers == H2_BUFFERS_ONE {
            (cursor.ptr, cursor.offset + cursor.left)
        } else {
            let at = cursor.ptr as usize + (cursor.index as usize) * 16;
            // SAFETY: a user pointer read with a fault-safe helper.
            match unsafe { bpf_probe_read_user(at as *const IoVec) } {
                Ok(iov) => (iov.base, iov.len),
                Err(_) => return false,
            }
        };
        let rest = len.saturating_sub(cursor.offset);
        let avail = if rest < cursor.left {
            rest
        } else {
            cursor.left
        };
        let last_buffer = avail == cursor.left;
        let room = H2_CHUNK_BYTES.saturating_sub(c.data_len as usize) as u64;
        let head_only =
            avail > room && last_record && !last_buffer && room >= H2_BUFFER_HEAD as u64;
        let take = if avail <= room {
            avail
        } else if head_only {
            H2_BUFFER_HEAD as u64
        } else {
            room
        };
        let kept = copy_into_chunk(c, base + cursor.offset, take);
        if kept < take || head_only {
            // Not kept (a fault), or the head of a buffer that does not fit: a gap for the
            // rest of the buffer, and on to the next one.
            let index = c.gap_count as usize;
            if index >= H2_GAPS {
                return false;
            }
            c.gaps[index & (H2_GAPS - 1)] = [c.data_len, (avail - kept) as u32];
            c.gap_count += 1;
        } else if take < avail {
            // The chunk is full in the middle of this buffer.
            cursor.offset += take;
            cursor.left -= take;
            return !last_record;
        }
        cursor.left -= avail;
        cursor.offset = 0;
        cursor.index += 1;
        i += 1;
    }
    cursor.left > 0
}

/// Appends `n` bytes at `buf` to the chunk's data; returns how many it kept (0 on a fault).
/// Callers keep `n` within the chunk's room ([`H2_CHUNK_BYTES`] at most).
#[inline(always)]
fn copy_into_chunk(c: &mut H2Chunk, buf: u64, n: u64) -> u64 {
    let at = c.data_len as usize;
    // The verifier must see the size bounded. Callers bound it by comparing it with the room,
    // which verifiers before ~6.8 do not follow (two registers), and LLVM would drop any
    // further bound it can prove redundant: the volatile read hides what LLVM knows, and the
    // mask bounds the size for every verifier without a branch. `data` holds 3 x
    // H2_CHUNK_BYTES, so an offset below H2_CHUNK_BYTES plus a masked size always fits.
    // SAFETY: reads a local.
    let n = unsafe { core::ptr::read_volatile(&n) } & (2 * H2_CHUNK_BYTES as u64 - 1);
    // SAFETY: at < H2_CHUNK_BYTES after the mask and n < 2 * H2_CHUNK_BYTES, so the copy stays
    // inside the 3 * H2_CHUNK_BYTES array; the read faults safely.
    let ret = unsafe {
        probe_read_user(
            c.data
                .as_mut_ptr()
                .add(at & (H2_CHUNK_BYTES - 1))
                .cast::<c_void>(),
            n as u32,
            buf as *const c_void,
        )
    };
    if ret != 0 {
        return 0;
    }
    c.data_len = (at as u64 + n) as u32;
    n
}

/// Starts a new exchange with the first request bytes (after `carried`, a byte read earlier).
#[inline(always)]
fn begin_request(
    x: &mut HttpExchange,
    pid_tgid: u64,
    buf: u64,
    len: u64,
    moved: u64,
    at: u64,
    carried: Option<u8>,
) {
    x.prev_response_end_ns = 0;
    if x.request_start_ns != 0 {
        x.seq += 1;
        x.prev_response_end_ns = x.response_end_ns;
    }
    x.kind = 0;
    x.flags = 0;
    x.phase = http_phase::REQUEST;
    x.tid = pid_tgid as u32;
    x.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    x.pipeline_index = 0;
    x.request_start_ns = at;
    x.response_start_ns = 0;
    x.response_end_ns = 0;
    x.response_bytes = 0;
    x.response_len = 0;
    x.carry = 0;
    let offset = match carried {
        Some(byte) => {
            x.request[0] = byte;
            1
        }
        None => 0,
    };
    x.request_bytes = moved + offset as u64;
    let n = if len > (REQUEST_BUF - 2) as u64 {
        (REQUEST_BUF - 2) as u64
    } else {
        len
    };
    // SAFETY: fault-safe copy of at most REQUEST_BUF - 2 bytes at offset 0 or 1 of the record's
    // buffer.
    let copied = unsafe {
        probe_read_user(
            x.request.as_mut_ptr().add(offset & 1).cast::<c_void>(),
            n as u32,
            buf as *const c_void,
        )
    };
    x.request_len = if copied == 0 {
        (n + offset as u64) as u32
    } else {
        0
    };
    if x.request_bytes > x.request_len as u64 {
        x.flags |= http_flags::REQUEST_TRUNCATED;
    }
    count(Stat::HttpRequests);

    random_bytes(&mut x.span_id);
    x.parent_span_id = [0; 8];
    if x.role == http_role::SERVER {
        // The caller's `traceparent`, if any, replaces this trace id (see `find_traceparent`).
        random_bytes(&mut x.trace_id);
        set_server_context(x, pid_tgid);
    } else {
        // A request sent while the thread serves one is that request's child.
        match TRACES_CTX.get_ptr(&pid_tgid) {
            Some(ctx) => {
                // SAFETY: a live entry of the LRU map; copied out at once.
                let ctx = unsafe { *ctx };
                x.trace_id = ctx.trace_id;
                x.parent_span_id = ctx.span_id;
            }
            None => random_bytes(&mut x.trace_id),
        }
    }
}

/// More bytes of a request that has not been answered yet (headers split over reads, a body).
#[inline(always)]
fn append_request(x: &mut HttpExchange, buf: u64, len: u64, moved: u64) {
    x.request_bytes += moved;
    if (x.request_len as usize) >= REQUEST_CAPTURE_BYTES || buf == 0 {
        x.flags |= http_flags::REQUEST_TRUNCATED;
        return;
    }
    let offset = (x.request_len as usize) & (REQUEST_CAPTURE_BYTES - 1);
    let n = if len > REQUEST_CAPTURE_BYTES as u64 {
        REQUEST_CAPTURE_BYTES as u64
    } else {
        len
    };
    if len > n {
        x.flags |= http_flags::REQUEST_TRUNCATED;
    }
    // SAFETY: offset < REQUEST_CAPTURE_BYTES and n <= REQUEST_CAPTURE_BYTES, so the copy stays
    // inside the 2 * REQUEST_CAPTURE_BYTES buffer; the read faults safely.
    let copied = unsafe {
        probe_read_user(
            x.request.as_mut_ptr().add(offset).cast::<c_void>(),
            n as u32,
            buf as *const c_void,
        )
    };
    if copied == 0 {
        x.request_len = (offset as u64 + n) as u32;
    }
}

/// The thread serves this exchange's request from now on.
#[inline(always)]
fn set_server_context(x: &HttpExchange, pid_tgid: u64) {
    let ctx = TraceCtx {
        trace_id: x.trace_id,
        span_id: x.span_id,
    };
    let _ = TRACES_CTX.insert(&pid_tgid, &ctx, 0);
}

/// Copies the first bytes of a response (the status line) into the record.
#[inline(always)]
fn copy_response(x: &mut HttpExchange, buf: u64, len: u64) {
    let n = if len > RESPONSE_CAPTURE_BYTES as u64 {
        RESPONSE_CAPTURE_BYTES as u64
    } else {
        len
    };
    x.response = [0; RESPONSE_CAPTURE_BYTES];
    // SAFETY: at most RESPONSE_CAPTURE_BYTES bytes into the response array; faults safely.
    let copied = unsafe {
        probe_read_user(
            x.response.as_mut_ptr().cast::<c_void>(),
            n as u32,
            buf as *const c_void,
        )
    };
    x.response_len = if copied == 0 { n as u32 } else { 0 };
}

#[inline(always)]
fn start_response(
    x: &mut HttpExchange,
    pid_tgid: u64,
    moved: u64,
    sent_at: u64,
    now: u64,
    pipeline_index: u32,
) {
    x.kind = http_event::EXCHANGE;
    x.phase = http_phase::RESPONSE;
    x.pipeline_index = pipeline_index;
    x.response_start_ns = sent_at;
    x.response_end_ns = now;
    x.emitted_ns = now;
    x.response_bytes = moved;
    count(Stat::HttpResponses);
    if x.role == http_role::SERVER {
        end_server_context(pid_tgid, &x.span_id);
        // The response may come from another thread than the one that read the request
        // (thread pools, Go's scheduler): that thread no longer serves this request either.
        let reader = (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(x.tid);
        if reader != pid_tgid {
            end_server_context(reader, &x.span_id);
        }
    }
}

/// The thread stopped serving the request with this span: forget its context.
#[inline(always)]
fn end_server_context(pid_tgid: u64, span_id: &[u8; 8]) {
    if let Some(ctx) = TRACES_CTX.get_ptr(&pid_tgid) {
        // SAFETY: a live entry of the LRU map, read once.
        if unsafe { (*ctx).span_id } == *span_id {
            let _ = TRACES_CTX.remove(&pid_tgid);
        }
    }
}

/// Flags of a ring buffer record: no wake-up of the reader, which drains on a timer, unless
/// [`HTTP_EVENTS_WAKEUP_BYTES`] are already waiting.
#[inline(always)]
fn output_flags() -> u64 {
    if HTTP_EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= HTTP_EVENTS_WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Sends the record: with the request prefix, or the header only.
#[inline(always)]
fn emit(x: &mut HttpExchange, with_request: bool) {
    let size = if with_request {
        HttpExchange::HEADER_BYTES + (x.request_len as usize & (REQUEST_BUF - 1))
    } else {
        HttpExchange::HEADER_BYTES
    };
    // SAFETY: `x` is a map value of size_of::<HttpExchange>() bytes and `size` never exceeds
    // it; the ring buffer copies the bytes.
    let ret = unsafe {
        bpf_ringbuf_output(
            core::ptr::from_ref(&HTTP_EVENTS)
                .cast_mut()
                .cast::<c_void>(),
            core::ptr::from_mut(x).cast::<c_void>(),
            size as u64,
            output_flags(),
        )
    };
    if ret < 0 {
        count(Stat::HttpEventsLost);
    }
}

fn try_on_connection_change(ctx: &TracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: `ret` of sys_exit_accept* and `fd` of sys_enter_connect/close share this offset.
    let fd = unsafe { ctx.read_at::<i64>(ARG0) }.ok()?;
    if !(0..=i32::MAX as i64).contains(&fd) {
        return None;
    }
    let key = ConnKey { pid, fd: fd as u32 };
    let exchange = HTTP_CONNS.get_ptr_mut(&key)?;
    // SAFETY: a live entry of the connection map.
    let x = unsafe { &mut *exchange };
    if x.phase == http_phase::REQUEST && x.request_start_ns != 0 {
        x.flags |= http_flags::NO_RESPONSE;
        if x.role == http_role::SERVER {
            let reader = (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(x.tid);
            end_server_context(reader, &x.span_id);
        }
    }
    x.kind = http_event::CLOSE;
    emit(x, false);
    let _ = HTTP_CONNS.remove(&key);
    Some(())
}

#[inline(always)]
fn random_bytes<const N: usize>(out: &mut [u8; N]) {
    let mut i = 0;
    while i + 4 <= N {
        // SAFETY: a helper without arguments.
        let r = unsafe { bpf_get_prandom_u32() }.to_le_bytes();
        out[i] = r[0];
        out[i + 1] = r[1];
        out[i + 2] = r[2];
        out[i + 3] = r[3];
        i += 4;
    }
}

#[inline(always)]
fn request_byte(x: &HttpExchange, index: usize) -> u8 {
    // SAFETY: the mask keeps the index inside the buffer.
    unsafe { *x.request.as_ptr().add(index & (REQUEST_BUF - 1)) }
}

/// Looks for a W3C `traceparent` header in the request prefix; when one is valid, takes its
/// trace id and makes its parent id the span's parent.
///
/// The verifier walks a loop once per iteration and gives up after 8192 jumps or stack
/// accesses on one path, so a byte-by-byte search with a few branches per byte is too long for
/// a 1 KiB prefix. The search goes a word (8 bytes) at a time instead: words without a newline
/// cost one branch; in the others every position is screened branch-free for `\nt` ... `:`,
/// and only the first candidate is checked in full after the loop.
#[inline(always)]
fn find_traceparent(x: &mut HttpExchange) -> bool {
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let len = x.request_len as usize;
    let mut found = usize::MAX;
    let mut word = 0;
    while word < REQUEST_BUF / 8 {
        let base = word * 8;
        if base + TRACEPARENT_LINE > len {
            break;
        }
        // SAFETY: base + 8 <= REQUEST_BUF (the mask keeps it so for the verifier too); map
        // values allow unaligned reads.
        let bytes = unsafe {
            core::ptr::read_unaligned(
                x.request
                    .as_ptr()
                    .add(base & (REQUEST_BUF - 8))
                    .cast::<u64>(),
            )
        };
        let v = bytes ^ NEWLINES;
        if v.wrapping_sub(ONES) & !v & HIGHS != 0 {
            // Lowest position whose byte is '\n', followed by 't'/'T' and with ':' 12 bytes on.
            let mut first = 8usize;
            let mut b = 8;
            while b > 0 {
                b -= 1;
                let p = base + b;
                let mismatch = (request_byte(x, p) ^ b'\n')
                    | ((request_byte(x, p + 1) | 0x20) ^ b't')
                    | (request_byte(x, p + 12) ^ b':');
                // All ones when mismatch == 0, else zero.
                let hit = ((mismatch as u64).wrapping_sub(1) >> 63).wrapping_neg() as usize;
                first ^= (first ^ b) & hit;
            }
            if first < 8 {
                found = base + first + 1;
                break;
            }
        }
        word += 1;
    }
    if found == usize::MAX {
        return false;
    }
    // Round-trip the offset through the record so the verifier sees one unknown (masked) offset
    // instead of one constant per loop iteration, which would make it check the parsing below
    // once for each of them.
    x.scratch = found as u32;
    // SAFETY: a plain read of a field of the record.
    let name = unsafe { core::ptr::read_volatile(&x.scratch) } as usize & (REQUEST_BUF - 1);
    x.scratch = 0;
    if !is_traceparent_name(x, name) {
        return false;
    }
    let mut start = name + 12;
    if request_byte(x, start) == b' ' {
        start += 1;
    }
    parse_traceparent(x, start)
}

/// Whether `traceparent:` (any case) starts at `at`. OR-ing 0x20 lower-cases letters and
/// leaves ':' as it is (only the control byte 0x1a would also pass as ':').
#[inline(always)]
fn is_traceparent_name(x: &HttpExchange, at: usize) -> bool {
    let name = b"traceparent:";
    let mut diff = 0u8;
    let mut k = 0;
    while k < name.len() {
        diff |= (request_byte(x, at + k) | 0x20) ^ name[k];
        k += 1;
    }
    diff == 0
}

#[inline(always)]
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[inline(always)]
fn hex_byte(x: &HttpExchange, at: usize) -> Option<u8> {
    Some(hex_value(request_byte(x, at))? << 4 | hex_value(request_byte(x, at + 1))?)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` at `at`.
#[inline(always)]
fn parse_traceparent(x: &mut HttpExchange, at: usize) -> bool {
    let version = match hex_byte(x, at) {
        Some(v) => v,
        None => return false,
    };
    if version == 0xff
        || request_byte(x, at + 2) != b'-'
        || request_byte(x, at + 35) != b'-'
        || request_byte(x, at + 52) != b'-'
    {
        return false;
    }
    let mut trace_id = [0u8; 16];
    let mut parent = [0u8; 8];
    let mut nonzero_trace = 0u8;
    let mut nonzero_parent = 0u8;
    let mut k = 0;
    while k < 16 {
        match hex_byte(x, at + 3 + 2 * k) {
            Some(b) => {
                trace_id[k] = b;
                nonzero_trace |= b;
            }
            None => return false,
        }
        k += 1;
    }
    k = 0;
    while k < 8 {
        match hex_byte(x, at + 36 + 2 * k) {
            Some(b) => {
                parent[k] = b;
                nonzero_parent |= b;
            }
            None => return false,
        }
        k += 1;
    }
    if nonzero_trace == 0 || nonzero_parent == 0 || hex_byte(x, at + 53).is_none() {
        return false;
    }
    x.trace_id = trace_id;
    x.parent_span_id = parent;
    x.flags |= http_flags::TRACEPARENT;
    count(Stat::HttpTraceparents);
    true
}
