//! Which HTTP/2 server stream each thread was answering, and when: what links the CPU samples
//! of HTTP/2 servers to spans.
//!
//! The kernel labels the samples of HTTP/1.x servers itself: it reads `traceparent` and keeps
//! the serving thread's context. For HTTP/2 it cannot (HPACK is decoded in user space), so it
//! stamps the samples of HTTP/2 server processes with their time instead
//! (`SampleKey::time_ns`). The capture thread publishes here, for every server stream it
//! finishes, the threads that wrote the stream's response and the stream's time window; the
//! profiler asks [`StreamWindows::link`] for each stamped sample.
//!
//! The thread that writes a response is taken to be the one that produced it. That holds for
//! gRPC's C core (grpcio: the handler's thread sends the response; the threads reading the
//! socket are others), and for servers that answer on the thread that read the request. A
//! sample inside the windows of two streams on its thread (an event loop answering both) is
//! not linked: a sample is never given a stream it may not belong to.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::collect::SpanLink;

/// How late a record can be read after its time: records are read every 10 ms, so a sample
/// this much older than what was read can no longer gain a window.
const READ_SLACK_NS: u64 = 100_000_000;

/// Most windows kept; past it the oldest are dropped (counted). Windows are forgotten once no
/// sample can need them (a second or so after they end), so this only bounds a burst.
const MAX_WINDOWS: usize = 200_000;

/// One finished server stream, as the capture saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedStream {
    pub pid: u32,
    /// The threads that wrote response frames of the stream (HEADERS, DATA).
    pub threads: Vec<u32>,
    /// From the read of the request's first frame to the write of the response's last, in
    /// `CLOCK_MONOTONIC` nanoseconds (the clock of the kernel's stamps).
    pub start_ns: u64,
    pub end_ns: u64,
    pub link: SpanLink,
}

/// What [`StreamWindows::link`] found for a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The one stream the thread was answering.
    Stream(SpanLink),
    /// Two or more streams of that thread were open: not linked.
    Ambiguous,
    /// No stream of that thread was open then.
    None,
    /// A stream that would hold the sample may still be finishing: ask again later.
    Pending,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start_ns: u64,
    end_ns: u64,
    link: SpanLink,
}

/// The windows of finished streams by thread, and how far the capture has read.
#[derive(Debug, Default)]
pub struct StreamWindows {
    by_thread: HashMap<(u32, u32), Vec<Window>>,
    windows: usize,
    /// Per process, the start of its oldest server stream still open at `read_up_to_ns`.
    open_since: HashMap<u32, u64>,
    /// The capture has read every record the kernel sent before this time.
    read_up_to_ns: u64,
    /// The capture stopped: no window will be added.
    complete: bool,
    /// Windows dropped because [`MAX_WINDOWS`] were kept.
    pub dropped: u64,
}

/// The windows, shared by the capture thread (writer) and the profiler (reader).
pub type SharedWindows = Arc<Mutex<StreamWindows>>;

impl StreamWindows {
    /// Adds a finished stream's window to each thread that wrote its response.
    pub fn add(&mut self, stream: &ServedStream) {
        let window = Window {
            start_ns: stream.start_ns,
            end_ns: stream.end_ns.max(stream.start_ns),
            link: stream.link,
        };
        for &tid in &stream.threads {
            if self.windows >= MAX_WINDOWS {
                self.shed();
            }
            self.by_thread
                .entry((stream.pid, tid))
                .or_default()
                .push(window);
            self.windows += 1;
        }
    }

    /// The capture has read everything sent before `read_up_to_ns`; `open_since` gives, per
    /// process, the start of its oldest server stream then still open.
    pub fn progress(&mut self, read_up_to_ns: u64, open_since: HashMap<u32, u64>) {
        self.read_up_to_ns = self.read_up_to_ns.max(read_up_to_ns);
        self.open_since = open_since;
    }

    /// The capture stopped: what is not linked now never will be.
    pub fn complete(&mut self) {
        self.complete = true;
        self.open_since.clear();
    }

    /// The stream thread `tid` of `pid` was answering at `time_ns`.
    pub fn link(&self, pid: u32, tid: u32, time_ns: u64) -> Link {
        let mut found = None;
        for window in self.by_thread.get(&(pid, tid)).into_iter().flatten() {
            if window.start_ns <= time_ns && time_ns <= window.end_ns {
                if found.is_some() {
                    return Link::Ambiguous;
                }
                found = Some(window.link);
            }
        }
        if let Some(link) = found {
            return Link::Stream(link);
        }
        let unread = time_ns.saturating_add(READ_SLACK_NS) > self.read_up_to_ns;
        let open = self
            .open_since
            .get(&pid)
            .is_some_and(|&since| since <= time_ns);
        if !self.complete && (unread || open) {
            Link::Pending
        } else {
            Link::None
        }
    }

    /// Forgets the windows that ended before `time_ns`: no sample left to link is older.
    pub fn forget_before(&mut self, time_ns: u64) {
        let mut windows = 0;
        self.by_thread.retain(|_, list| {
            list.retain(|w| w.end_ns >= time_ns);
            windows += list.len();
            !list.is_empty()
        });
        self.windows = windows;
    }

    /// Over the bound: drops the quarter of the windows that ended first (in one pass, so a
    /// burst costs a pass per quarter, not one per window).
    fn shed(&mut self) {
        let mut ends: Vec<u64> = self
            .by_thread
            .values()
            .flat_map(|list| list.iter().map(|w| w.end_ns))
            .collect();
        let quarter = ends.len() / 4;
        let (_, &mut cut, _) = ends.select_nth_unstable(quarter);
        let before = self.windows;
        self.forget_before(cut);
        self.dropped += (before - self.windows) as u64;
    }

    /// Windows kept.
    #[cfg(test)]
    pub fn window_count(&self) -> usize {
        self.windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(n: u8) -> SpanLink {
        SpanLink {
            trace_id: [n; 16],
            span_id: [n; 8],
        }
    }

    fn stream(pid: u32, threads: &[u32], start_ns: u64, end_ns: u64, n: u8) -> ServedStream {
        ServedStream {
            pid,
            threads: threads.to_vec(),
            start_ns,
            end_ns,
            link: link(n),
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_sample_takes_the_one_stream_its_thread_answered() {
        let mut w = StreamWindows::default();
        w.add(&stream(7, &[70], 10 * S, 11 * S, 1));
        w.add(&stream(7, &[71], 10 * S, 12 * S, 2));
        w.progress(20 * S, HashMap::new());
        assert_eq!(w.link(7, 70, 10 * S + 5), Link::Stream(link(1)));
        assert_eq!(w.link(7, 71, 11 * S + 5), Link::Stream(link(2)));
        // Outside the window, another thread, another process.
        assert_eq!(w.link(7, 70, 11 * S + 5), Link::None);
        assert_eq!(w.link(7, 72, 10 * S + 5), Link::None);
        assert_eq!(w.link(8, 70, 10 * S + 5), Link::None);
    }

    #[test]
    fn overlapping_streams_on_one_thread_link_nothing() {
        let mut w = StreamWindows::default();
        w.add(&stream(7, &[70], 10 * S, 12 * S, 1));
        w.add(&stream(7, &[70, 71], 11 * S, 13 * S, 2));
        w.progress(20 * S, HashMap::new());
        assert_eq!(w.link(7, 70, 10 * S + 5), Link::Stream(link(1)));
        assert_eq!(w.link(7, 70, 11 * S + 5), Link::Ambiguous);
        assert_eq!(w.link(7, 70, 12 * S + 5), Link::Stream(link(2)));
        assert_eq!(w.link(7, 71, 11 * S + 5), Link::Stream(link(2)));
    }

    #[test]
    fn samples_wait_for_records_not_read_and_streams_still_open() {
        let mut w = StreamWindows::default();
        w.progress(10 * S, HashMap::from([(7, 8 * S)]));
        // Not read yet, or within the slack of what was read.
        assert_eq!(w.link(9, 90, 11 * S), Link::Pending);
        assert_eq!(w.link(9, 90, 10 * S - 1), Link::Pending);
        // Read, no stream of that process open: final.
        assert_eq!(w.link(9, 90, 9 * S), Link::None);
        // A stream of that process opened before the sample is still open.
        assert_eq!(w.link(7, 70, 9 * S), Link::Pending);
        assert_eq!(w.link(7, 70, 7 * S), Link::None);
        // Once the capture stops, nothing waits.
        w.complete();
        assert_eq!(w.link(9, 90, 11 * S), Link::None);
        assert_eq!(w.link(7, 70, 9 * S), Link::None);
    }

    #[test]
    fn windows_are_forgotten_and_bounded() {
        let mut w = StreamWindows::default();
        w.add(&stream(7, &[70, 71], S, 2 * S, 1));
        w.add(&stream(7, &[70], 3 * S, 4 * S, 2));
        assert_eq!(w.window_count(), 3);
        w.forget_before(3 * S);
        assert_eq!(w.window_count(), 1);
        w.progress(10 * S, HashMap::new());
        assert_eq!(w.link(7, 70, S + 1), Link::None);
        assert_eq!(w.link(7, 70, 3 * S + 1), Link::Stream(link(2)));

        for i in 0..MAX_WINDOWS as u64 + 10 {
            w.add(&stream(8, &[80], 10 * S + i, 10 * S + i, 3));
        }
        w.progress(30 * S, HashMap::new());
        // The quarter that ended first went at once.
        assert!(w.window_count() <= MAX_WINDOWS, "{}", w.window_count());
        assert_eq!(w.dropped, (MAX_WINDOWS / 4) as u64);
        assert_eq!(w.window_count(), MAX_WINDOWS + 11 - w.dropped as usize);
        assert_eq!(w.link(8, 80, 10 * S), Link::None, "the oldest were dropped");
        assert_eq!(
            w.link(8, 80, 10 * S + MAX_WINDOWS as u64),
            Link::Stream(link(3))
        );
    }
}
