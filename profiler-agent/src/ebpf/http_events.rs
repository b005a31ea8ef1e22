//! The HTTP capture's kernel side: attaching its syscall tracepoint programs and reading its ring
//! buffer of [`HttpExchange`] records.

use std::mem::size_of;

use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use profiler_common::{HttpExchange, HTTP_PROGRAMS, MAP_HTTP_EVENTS};

use super::{attach_tracepoints, take_map, SamplerError};

/// An owned copy of one record of the ring buffer, for callers that keep records
/// ([`HttpEvents::read`]); the capture itself reads them in place ([`HttpEvents::for_each`]).
#[derive(Clone, Debug)]
pub struct HttpRecord {
    /// The record's fields; of its `request` array only the bytes in `request` below are
    /// meaningful.
    pub exchange: Box<HttpExchange>,
    /// The request prefix carried by the record (empty for MORE and CLOSE records).
    pub request: Vec<u8>,
}

/// Reader of the capture's ring buffer. Records are submitted without waking the reader (a
/// wake-up per request would cost more than the capture), so the owner polls it on a timer.
pub struct HttpEvents {
    ring: RingBuf<MapData>,
    /// Where each record is copied (records may be shorter than `HttpExchange`): one buffer
    /// for all, so reading allocates nothing.
    scratch: Box<HttpExchange>,
    /// Records shorter than the header (never expected).
    pub malformed: u64,
}

impl HttpEvents {
    /// Calls `f` with every record waiting in the ring buffer and the request bytes it carries;
    /// returns how many.
    pub fn for_each(&mut self, mut f: impl FnMut(&HttpExchange, &[u8])) -> usize {
        let mut read = 0;
        while let Some(item) = self.ring.next() {
            match decode(&item, &mut self.scratch) {
                Some(carried) => {
                    f(&self.scratch, &self.scratch.request[..carried]);
                    read += 1;
                }
                None => self.malformed += 1,
            }
        }
        read
    }

    /// Appends a copy of every record waiting in the ring buffer to `out`; returns how many.
    pub fn read(&mut self, out: &mut Vec<HttpRecord>) -> usize {
        self.for_each(|exchange, request| {
            out.push(HttpRecord {
                exchange: Box::new(*exchange),
                request: request.to_vec(),
            })
        })
    }
}

/// Copies a record (possibly shorter than `HttpExchange`) over `into`; returns how many request
/// bytes it carried, or `None` when it is shorter than the header.
fn decode(bytes: &[u8], into: &mut HttpExchange) -> Option<usize> {
    if bytes.len() < HttpExchange::HEADER_BYTES {
        return None;
    }
    let n = bytes.len().min(size_of::<HttpExchange>());
    // SAFETY: `into` is a valid HttpExchange of size_of::<HttpExchange>() bytes and at most
    // that many are written; any bit pattern is a valid HttpExchange (integers and byte
    // arrays); the source and destination do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (into as *mut HttpExchange).cast::<u8>(), n);
    }
    let carried = n - HttpExchange::HEADER_BYTES;
    Some((into.request_len as usize).min(carried))
}

/// Loads and attaches every HTTP program to its tracepoints and takes the ring buffer.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<HttpEvents, SamplerError> {
    for (name, tracepoints) in HTTP_PROGRAMS {
        attach_tracepoints(ebpf, name, "syscalls", tracepoints)?;
    }
    let ring = take_map(ebpf, MAP_HTTP_EVENTS)?;
    Ok(HttpEvents {
        ring,
        // SAFETY: all-zero is a valid HttpExchange (integers and byte arrays).
        scratch: Box::new(unsafe { std::mem::zeroed() }),
        malformed: 0,
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
        let carried = decode(&bytes[..HttpExchange::HEADER_BYTES + 5], &mut into).expect("decodes");
        assert_eq!(into.pid, 7);
        assert_eq!(&into.request[..carried], b"GET /");
        // A header-only record (MORE/CLOSE) carries no request bytes even if request_len says so.
        let carried = decode(&bytes[..HttpExchange::HEADER_BYTES], &mut into).expect("decodes");
        assert_eq!(carried, 0);
        assert!(decode(&bytes[..10], &mut into).is_none());
    }
}
