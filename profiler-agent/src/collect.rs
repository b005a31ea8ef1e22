//! Turns drained kernel maps into raw samples (addresses, not yet symbols) and accumulates them,
//! capturing each process's mappings while it is alive.

use std::collections::HashMap;

#[cfg(test)]
use profiler_common::SampleKey;
use profiler_common::{stack_error, COMM_LEN};

use crate::{
    capture::stream_windows::{Link, StreamWindows},
    ebpf::Drained,
    process::ProcessTable,
};

/// Longest a sample of an HTTP/2 server thread waits for the stream it may belong to (a stream
/// still open, records not read yet); then it goes into the profile unlinked. Streams longer
/// than this get only their last seconds of samples.
const MAX_LINK_WAIT_NS: u64 = 10_000_000_000;

/// One side (user or kernel) of a sampled stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// Instruction pointers, innermost first.
    Frames(Vec<u64>),
    /// No stack of this kind: a user-mode sample has no kernel stack, a kernel thread no user
    /// stack.
    None,
    /// The stack was lost; the sample still counts.
    Lost(StackLoss),
}

/// Why a stack was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackLoss {
    /// The stack map was full.
    MapFull,
    /// `bpf_get_stack` failed.
    CaptureFailed,
    /// The stack id was not found when draining.
    Unreadable,
}

impl StackLoss {
    /// Every kind, in report order.
    pub const ALL: [StackLoss; 3] = [
        StackLoss::MapFull,
        StackLoss::CaptureFailed,
        StackLoss::Unreadable,
    ];

    /// The frame name shown in place of the lost stack.
    pub fn frame_name(self) -> &'static str {
        match self {
            StackLoss::MapFull => "[stack lost: map full]",
            StackLoss::CaptureFailed => "[stack lost: capture failed]",
            StackLoss::Unreadable => "[stack lost: unreadable]",
        }
    }

    /// What the summary calls it.
    pub fn description(self) -> &'static str {
        match self {
            StackLoss::MapFull => "stack map full",
            StackLoss::CaptureFailed => "capture failed",
            StackLoss::Unreadable => "unreadable while draining",
        }
    }
}

/// A sample key with its stacks resolved to addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawSample {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub user: RawStack,
    pub kernel: RawStack,
    /// The request the thread was serving (HTTP capture), if any.
    pub span: Option<SpanLink>,
}

/// Trace and span id of the request a sampled thread was serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanLink {
    /// The link in a sample key; `None` when the kernel wrote no context (all zero).
    pub fn from_key(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<SpanLink> {
        (span_id != [0; 8]).then_some(SpanLink { trace_id, span_id })
    }

    /// `trace_id` and `span_id` labels, lowercase hex as in W3C `traceparent`.
    pub fn labels(&self) -> [(String, String); 2] {
        [
            ("trace_id".to_string(), hex(&self.trace_id)),
            ("span_id".to_string(), hex(&self.span_id)),
        ]
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Samples accumulated over drains, with what is needed to symbolize them later.
#[derive(Debug, Default)]
pub struct Collector {
    pub samples: HashMap<RawSample, u64>,
    /// Samples of HTTP/2 server processes (the kernel stamped their time) waiting for
    /// [`Collector::link_waiting`] to find the stream their thread was answering.
    pub waiting: Vec<WaitingSample>,
    /// What became of those samples.
    pub links: LinkCounts,
    pub processes: ProcessTable,
    /// Map entries that could not be read back while draining.
    pub read_errors: u64,
}

impl std::fmt::Display for LinkCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "http/2 server samples: {} linked to the stream their thread answered, {} in two \
             streams at once, {} outside streams, {} waited too long; {} stream windows \
             dropped (too many at once)",
            self.linked, self.ambiguous, self.outside, self.expired, self.windows_dropped
        )
    }
}

/// A sample stamped with its time, not yet linked.
#[derive(Debug)]
pub struct WaitingSample {
    pub sample: RawSample,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub time_ns: u64,
    pub count: u64,
}

/// Samples of HTTP/2 server threads, by what linking them found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Linked to the one stream their thread was answering.
    pub linked: u64,
    /// In the windows of two streams of their thread: not linked.
    pub ambiguous: u64,
    /// Their thread answered no stream then.
    pub outside: u64,
    /// Waited [`MAX_LINK_WAIT_NS`] for a stream still open: not linked.
    pub expired: u64,
    /// Stream windows the capture published and dropped unused (more were kept at once than
    /// `StreamWindows` holds); samples they held are counted as `outside`.
    pub windows_dropped: u64,
}

impl Collector {
    /// Adds one drained slot: resolves stack ids, records mappings of the processes seen.
    pub fn absorb(&mut self, drained: Drained) {
        self.read_errors += drained.read_errors;
        for (key, count) in drained.counts {
            let sample = RawSample {
                pid: key.pid,
                tid: key.tid,
                comm: comm_to_string(&key.comm),
                user: resolve_stack(key.user_stack_id, key.user_stack_error, &drained.stacks),
                kernel: resolve_stack(key.kernel_stack_id, key.kernel_stack_error, &drained.stacks),
                span: SpanLink::from_key(key.trace_id, key.span_id),
            };
            if let RawStack::Frames(frames) = &sample.user {
                self.processes.observe(sample.pid, frames.iter().copied());
            }
            if key.time_ns != 0 {
                self.waiting.push(WaitingSample {
                    sample,
                    time_ns: key.time_ns,
                    count,
                });
                continue;
            }
            *self.samples.entry(sample).or_default() += count;
        }
    }

    /// Moves the waiting samples whose stream is known (or known to be none) into the samples,
    /// linked to it. `windows` is `None` without an HTTP capture: nothing is linked then.
    /// `now_ns` (`CLOCK_MONOTONIC`, taken before the drain) bounds what later samples can need:
    /// windows that ended before it and before every sample still waiting are forgotten.
    pub fn link_waiting(&mut self, windows: Option<&mut StreamWindows>, now_ns: u64) {
        let mut still = Vec::new();
        for waiting in std::mem::take(&mut self.waiting) {
            let WaitingSample {
                mut sample,
                time_ns,
                count,
            } = waiting;
            let link = windows
                .as_deref()
                .map_or(Link::None, |w| w.link(sample.pid, sample.tid, time_ns));
            let counter = match link {
                Link::Stream(link) => {
                    sample.span = Some(link);
                    &mut self.links.linked
                }
                Link::Ambiguous => &mut self.links.ambiguous,
                Link::None => &mut self.links.outside,
                Link::Pending if now_ns.saturating_sub(time_ns) > MAX_LINK_WAIT_NS => {
                    &mut self.links.expired
                }
                Link::Pending => {
                    still.push(WaitingSample {
                        sample,
                        time_ns,
                        count,
                    });
                    continue;
                }
            };
            *counter += count;
            *self.samples.entry(sample).or_default() += count;
        }
        if let Some(windows) = windows {
            self.links.windows_dropped = windows.dropped;
            let oldest = still.iter().map(|w| w.time_ns).min().unwrap_or(now_ns);
            windows.forget_before(oldest.min(now_ns));
        }
        self.waiting = still;
    }

    /// Total samples accumulated.
    pub fn total(&self) -> u64 {
        self.samples.values().sum()
    }

    /// Samples whose user or kernel stack was lost, by reason.
    pub fn losses(&self) -> HashMap<StackLoss, u64> {
        let mut losses = HashMap::new();
        for (sample, count) in &self.samples {
            for stack in [&sample.user, &sample.kernel] {
                if let RawStack::Lost(loss) = stack {
                    *losses.entry(*loss).or_default() += count;
                }
            }
        }
        losses
    }
}

fn resolve_stack(id: u64, error: i32, stacks: &HashMap<u64, Vec<u64>>) -> RawStack {
    match error {
        0 => match stacks.get(&id) {
            Some(frames) if !frames.is_empty() => RawStack::Frames(frames.clone()),
            _ => RawStack::Lost(StackLoss::Unreadable),
        },
        stack_error::NONE => RawStack::None,
        stack_error::MAP_FULL => RawStack::Lost(StackLoss::MapFull),
        _ => RawStack::Lost(StackLoss::CaptureFailed),
    }
}

/// The NUL-padded comm as text.
pub fn comm_to_string(comm: &[u8; COMM_LEN]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// A key as the kernel would write it, for tests: a stack id of 0 means "no stack", a negative
/// one the error `-id`.
#[cfg(test)]
pub fn test_key(pid: u32, tid: u32, comm: &str, user: i64, kernel: i64) -> SampleKey {
    let mut bytes = [0u8; COMM_LEN];
    bytes[..comm.len()].copy_from_slice(comm.as_bytes());
    let split = |id: i64| match id {
        0 => (0, stack_error::NONE),
        id if id < 0 => (0, -id as i32),
        id => (id as u64, 0),
    };
    let (user_stack_id, user_stack_error) = split(user);
    let (kernel_stack_id, kernel_stack_error) = split(kernel);
    SampleKey {
        pid,
        tid,
        user_stack_id,
        kernel_stack_id,
        user_stack_error,
        kernel_stack_error,
        comm: bytes,
        trace_id: [0; 16],
        span_id: [0; 8],
        time_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::Drained;

    #[test]
    fn aggregates_drains_and_classifies_stack_errors() {
        let mut collector = Collector::default();
        let mut stacks = HashMap::new();
        stacks.insert(1, vec![0x10, 0x20]);
        stacks.insert(2, vec![0xffff_0000_0000_1000]);
        let drain = |counts: Vec<(SampleKey, u64)>| Drained {
            counts,
            stacks: stacks.clone(),
            read_errors: 0,
        };
        let map_full = -(stack_error::MAP_FULL as i64);
        // pid 999999 does not exist: its mappings cannot be read, which is counted.
        collector.absorb(drain(vec![
            (test_key(999_999, 1, "burn", 1, 0), 3),
            (test_key(999_999, 1, "burn", 1, 2), 2),
            (test_key(999_999, 2, "burn", map_full, 0), 1),
        ]));
        collector.absorb(drain(vec![(test_key(999_999, 1, "burn", 1, 0), 4)]));
        assert_eq!(collector.total(), 10);
        let user_only = RawSample {
            pid: 999_999,
            tid: 1,
            comm: "burn".into(),
            user: RawStack::Frames(vec![0x10, 0x20]),
            kernel: RawStack::None,
            span: None,
        };
        assert_eq!(collector.samples[&user_only], 7);
        let losses = collector.losses();
        assert_eq!(losses.get(&StackLoss::MapFull), Some(&1));
        assert_eq!(losses.len(), 1);
        assert_eq!(collector.processes.missed, 1);
        // An id missing from the drained stacks is a loss, not a crash.
        assert_eq!(
            resolve_stack(7, 0, &stacks),
            RawStack::Lost(StackLoss::Unreadable)
        );
        assert_eq!(
            resolve_stack(0, stack_error::CAPTURE_FAILED, &stacks),
            RawStack::Lost(StackLoss::CaptureFailed)
        );
        assert_eq!(resolve_stack(0, stack_error::NONE, &stacks), RawStack::None);
    }

    #[test]
    fn stamped_samples_wait_for_their_stream_then_carry_its_link() {
        use crate::capture::stream_windows::ServedStream;
        const S: u64 = 1_000_000_000;
        let mut stacks = HashMap::new();
        stacks.insert(1, vec![0x10]);
        let stamped = |tid: u32, time_ns: u64| SampleKey {
            time_ns,
            ..test_key(999_999, tid, "server", 1, 0)
        };
        let mut collector = Collector::default();
        collector.absorb(Drained {
            counts: vec![
                (stamped(7, 10 * S), 1),
                (stamped(7, 11 * S), 1),
                (stamped(8, 10 * S), 2),
                (test_key(999_999, 7, "server", 1, 0), 5),
            ],
            stacks,
            read_errors: 0,
        });
        assert_eq!(collector.waiting.len(), 3);
        assert_eq!(
            collector.total(),
            5,
            "stamped samples wait outside the totals"
        );

        let link = SpanLink {
            trace_id: [1; 16],
            span_id: [2; 8],
        };
        let mut windows = StreamWindows::default();
        windows.add(&ServedStream {
            pid: 999_999,
            threads: vec![7],
            start_ns: 9 * S,
            end_ns: 10 * S + 1,
            link,
        });
        // Read up to 10.5 s: the sample at 11 s waits, those at 10 s are decided.
        windows.progress(10 * S + S / 2, HashMap::new());
        collector.link_waiting(Some(&mut windows), 12 * S);
        assert_eq!(collector.waiting.len(), 1);
        assert_eq!(collector.waiting[0].time_ns, 11 * S);
        assert_eq!(
            collector.links,
            LinkCounts {
                linked: 1,
                outside: 2,
                ..LinkCounts::default()
            }
        );
        let linked = RawSample {
            pid: 999_999,
            tid: 7,
            comm: "server".into(),
            user: RawStack::Frames(vec![0x10]),
            kernel: RawStack::None,
            span: Some(link),
        };
        assert_eq!(collector.samples[&linked], 1);
        assert_eq!(collector.total(), 8);
        // The window ended before the oldest waiting sample: forgotten.
        assert_eq!(windows.window_count(), 0);

        // Past the longest wait, a sample goes in unlinked.
        windows.progress(0, HashMap::from([(999_999, 0)]));
        collector.link_waiting(Some(&mut windows), 11 * S + MAX_LINK_WAIT_NS);
        assert_eq!(collector.waiting.len(), 1, "not yet");
        collector.link_waiting(Some(&mut windows), 11 * S + MAX_LINK_WAIT_NS + 1);
        assert!(collector.waiting.is_empty());
        assert_eq!(collector.links.expired, 1);
        assert_eq!(collector.total(), 9);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_to_string(&test_key(1, 1, "nginx", 0, 0).comm), "nginx");
        assert_eq!(comm_to_string(&[b'a'; COMM_LEN]), "a".repeat(COMM_LEN));
    }
}
