//! The HTTP capture's kernel side: attaching its syscall tracepoint programs and reading its ring
//! buffer of [`HttpExchange`] (HTTP/1.x) and [`H2Chunk`] (HTTP/2) records.

use std::{mem::size_of, os::fd::AsRawFd, time::Duration};

use aya::{
    maps::{MapData, ProgramArray, RingBuf},
    Ebpf,
};
use profiler_common::{
    http_event, H2Chunk, HttpExchange, HTTP_PROGRAMS, MAP_H2_CONTINUE, MAP_HTTP_EVENTS,
    PROG_H2_CONTINUE,
};

/// One record of the ring buffer, read in place.
pub enum HttpEvent<'a> {
    /// An HTTP/1.x exchange record (or the CLOSE of any followed connection) and the request
    /// bytes it carried.
    Exchange(&'a HttpExchange, &'a [u8]),
    /// The bytes of one syscall on an HTTP/2 connection: the record and its valid `data`.
    H2(&'a H2Chunk, &'a [u8]),
}

use super::{attach_tracepoints, load_tracepoint, take_map, SamplerError};

/// An owned copy of an HTTP/1.x record, for callers that keep records (`kernel-check`); the
/// capture itself reads them in place ([`HttpEvents::for_each`]).
#[derive(Clone, Debug)]
pub struct HttpRecord {
    /// The record's fields; of its `request` array only the bytes in `request` below are
    /// meaningful.
    pub exchange: Box<HttpExchange>,
    /// The request prefix carried by the record (empty for MORE and CLOSE records).
    pub request: Vec<u8>,
}

/// Reader of the capture's ring buffer. Records are submitted without waking the reader (a
/// wake-up per request would cost more than the capture) until
/// [`profiler_common::HTTP_EVENTS_WAKEUP_BYTES`] are waiting: the owner drains on its own
/// timer and [`HttpEvents::wait`]s for a full-ish ring in between.
pub struct HttpEvents {
    ring: RingBuf<MapData>,
    /// Where each record is copied (records may be shorter than their type): one buffer per
    /// kind for all, so reading allocates nothing.
    scratch: Box<HttpExchange>,
    h2_scratch: Box<H2Chunk>,
    /// Records shorter than the header (never expected).
    pub malformed: u64,
}

impl HttpEvents {
    /// Calls `f` with every record waiting in the ring buffer; returns how many.
    pub fn for_each(&mut self, mut f: impl FnMut(HttpEvent<'_>)) -> usize {
        let mut read = 0;
        while let Some(item) = self.ring.next() {
            let kind = item
                .get(..4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            let event = if kind == Some(http_event::H2_DATA) {
                decode(&item, &mut *self.h2_scratch, H2Chunk::HEADER_BYTES).map(|carried| {
                    let n = (self.h2_scratch.data_len as usize).min(carried);
                    HttpEvent::H2(&self.h2_scratch, &self.h2_scratch.data[..n])
                })
            } else {
                decode(&item, &mut *self.scratch, HttpExchange::HEADER_BYTES).map(|carried| {
                    let n = (self.scratch.request_len as usize).min(carried);
                    HttpEvent::Exchange(&self.scratch, &self.scratch.request[..n])
                })
            };
            match event {
                Some(event) => {
                    f(event);
                    read += 1;
                }
                None => self.malformed += 1,
            }
        }
        read
    }

    /// Blocks until records are waiting or `timeout` passes. The kernel wakes this only once
    /// [`profiler_common::HTTP_EVENTS_WAKEUP_BYTES`] are waiting, so records below that stay
    /// until `timeout`. Returns whether records are waiting.
    pub fn wait(&self, timeout: Duration) -> bool {
        crate::signals::wait_readable(self.ring.as_raw_fd(), timeout)
    }
}

/// Copies a record (possibly shorter than `T`) over `into`; returns how many bytes past the
/// first `header` ones it carried, or `None` when it is shorter than that.
fn decode<T: aya::Pod>(bytes: &[u8], into: &mut T, header: usize) -> Option<usize> {
    if bytes.len() < header {
        return None;
    }
    let n = bytes.len().min(size_of::<T>());
    // SAFETY: `into` is a valid T of size_of::<T>() bytes and at most that many are written;
    // any bit pattern is a valid T (a Pod: integers and byte arrays); the source and
    // destination do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (into as *mut T).cast::<u8>(), n);
    }
    Some(n - header)
}

/// Loads and attaches every HTTP program to its tracepoints and takes the ring buffer.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<HttpEvents, SamplerError> {
    // Before the exit programs run: without it a large HTTP/2 syscall's bytes past the first
    // record would be marked missing.
    link_h2_continue(ebpf)?;
    for (name, tracepoints) in HTTP_PROGRAMS {
        attach_tracepoints(ebpf, name, "syscalls", tracepoints)?;
    }
    let ring = take_map(ebpf, MAP_HTTP_EVENTS)?;
    Ok(HttpEvents {
        ring,
        // SAFETY: all-zero is a valid HttpExchange and H2Chunk (integers and byte arrays).
        scratch: Box::new(unsafe { std::mem::zeroed() }),
        // SAFETY: as above.
        h2_scratch: Box::new(unsafe { std::mem::zeroed() }),
        malformed: 0,
    })
}

/// Loads [`PROG_H2_CONTINUE`] and puts it in the slot of [`MAP_H2_CONTINUE`] the HTTP/2 exit
/// path tail-calls. The map stays in `ebpf`, whose descriptor keeps the slot filled (the kernel
/// empties a program array once user space closes it).
fn link_h2_continue(ebpf: &mut Ebpf) -> Result<(), SamplerError> {
    let name = PROG_H2_CONTINUE;
    let fd = load_tracepoint(ebpf, name)?
        .fd()
        .map_err(|source| SamplerError::Program { name, source })?
        .try_clone()
        .map_err(|error| SamplerError::Program {
            name,
            source: error.into(),
        })?;
    let map = ebpf
        .map_mut(MAP_H2_CONTINUE)
        .ok_or_else(|| SamplerError::Missing {
            name: MAP_H2_CONTINUE.to_string(),
        })?;
    let mut slots = ProgramArray::try_from(map).map_err(|source| SamplerError::Map {
        name: MAP_H2_CONTINUE,
        source,
    })?;
    slots.set(0, &fd, 0).map_err(|source| SamplerError::Map {
        name: MAP_H2_CONTINUE,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_and_full_records() {
        // SAFETY: all-zero is a valid HttpExchange (integers and byte arrays).
        let mut exchange: HttpExchange = unsafe { std::mem::zeroed() };
        exchange.pid = 7;
        exchange.request_len = 5;
        exchange.request[..5].copy_from_slice(b"GET /");
        // SAFETY: viewing a plain struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&exchange as *const HttpExchange).cast::<u8>(),
                size_of::<HttpExchange>(),
            )
        };
        // SAFETY: as above.
        let mut into: Box<HttpExchange> = Box::new(unsafe { std::mem::zeroed() });
        let header = HttpExchange::HEADER_BYTES;
        let carried = decode(&bytes[..header + 5], &mut *into, header).expect("decodes");
        assert_eq!(into.pid, 7);
        assert_eq!(&into.request[..carried], b"GET /");
        // A header-only record (MORE/CLOSE) carries no request bytes even if request_len says so.
        let carried = decode(&bytes[..header], &mut *into, header).expect("decodes");
        assert_eq!(carried, 0);
        assert!(decode(&bytes[..10], &mut *into, header).is_none());
    }
}
