//! The HTTP capture's kernel side: attaching its syscall tracepoint programs and reading its ring
//! buffer of [`HttpExchange`] records.

use std::mem::size_of;

use aya::{
    maps::{MapData, RingBuf},
    programs::TracePoint,
    Ebpf,
};
use profiler_common::{HttpExchange, HTTP_PROGRAMS, MAP_HTTP_EVENTS};

use super::{take_map, SamplerError};

/// One record of the ring buffer: the header fields and the request bytes that came with it.
#[derive(Clone, Debug)]
pub struct HttpRecord {
    /// The record; `request` beyond `request` below is zero.
    pub exchange: Box<HttpExchange>,
    /// The request prefix carried by the record (empty for MORE and CLOSE records).
    pub request: Vec<u8>,
}

/// Reader of the capture's ring buffer. Records are submitted without waking the reader (a
/// wake-up per request would cost more than the capture), so the owner polls it on a timer.
pub struct HttpEvents {
    ring: RingBuf<MapData>,
    /// Records shorter than the header (never expected).
    pub malformed: u64,
}

impl HttpEvents {
    /// Appends every record waiting in the ring buffer to `out`; returns how many.
    pub fn read(&mut self, out: &mut Vec<HttpRecord>) -> usize {
        let mut read = 0;
        while let Some(item) = self.ring.next() {
            match decode(&item) {
                Some(record) => {
                    out.push(record);
                    read += 1;
                }
                None => self.malformed += 1,
            }
        }
        read
    }
}

/// Copies a record (possibly shorter than `HttpExchange`) into a zero-filled one.
fn decode(bytes: &[u8]) -> Option<HttpRecord> {
    if bytes.len() < HttpExchange::HEADER_BYTES {
        return None;
    }
    let mut full = vec![0u8; size_of::<HttpExchange>()];
    let n = bytes.len().min(full.len());
    full[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: `full` holds size_of::<HttpExchange>() initialised bytes and HttpExchange is a
    // plain #[repr(C)] struct of integers and byte arrays, valid for any bit pattern;
    // read_unaligned does not require alignment.
    let exchange: HttpExchange = unsafe { std::ptr::read_unaligned(full.as_ptr().cast()) };
    let carried = n - HttpExchange::HEADER_BYTES;
    let request_len = (exchange.request_len as usize).min(carried);
    let request = exchange.request[..request_len].to_vec();
    Some(HttpRecord {
        exchange: Box::new(exchange),
        request,
    })
}

/// Loads and attaches every HTTP program to its tracepoints and takes the ring buffer.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<HttpEvents, SamplerError> {
    for (name, tracepoints) in HTTP_PROGRAMS {
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
        for tracepoint in tracepoints {
            program
                .attach("syscalls", tracepoint)
                .map_err(|source| SamplerError::Attach {
                    name,
                    tracepoint: format!("syscalls:{tracepoint}"),
                    source,
                })?;
        }
    }
    let ring = take_map(ebpf, MAP_HTTP_EVENTS)?;
    Ok(HttpEvents { ring, malformed: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_and_full_records() {
        let mut exchange: HttpExchange =
            // SAFETY: all-zero is a valid HttpExchange (integers and byte arrays).
            unsafe { std::mem::zeroed() };
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
        let full = decode(&bytes[..HttpExchange::HEADER_BYTES + 5]).expect("decodes");
        assert_eq!(full.exchange.pid, 7);
        assert_eq!(full.request, b"GET /");
        // A header-only record (MORE/CLOSE) carries no request bytes even if request_len says so.
        let header = decode(&bytes[..HttpExchange::HEADER_BYTES]).expect("decodes");
        assert!(header.request.is_empty());
        assert!(decode(&bytes[..10]).is_none());
    }
}
