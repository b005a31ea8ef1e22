//! Arbitrary bytes through the HTTP/2 assembler as a sequence of chunk records: the entry of the
//! fuzz target (`fuzz/fuzz_targets/h2_capture.rs`) and of the property tests.
//!
//! Input layout: byte 0 picks the role (bit 0: client); then records of a control byte (bit 0:
//! written; bits 1..7: bytes missing, times 7: in the middle of the kept ones when odd, after
//! them when even; 0xff closes the connection),
//! a little-endian u16 length and that many bytes. The request direction starts with the
//! connection preface, so the fuzzer does not have to find it.

use std::sync::Arc;

use profiler_common::{http_event, http_role, H2Chunk, H2_CHUNK_BYTES};

use super::{frame::PREFACE, H2Assembler};
use crate::capture::{
    assemble::Clock,
    span::{Resource, Span},
};

/// Replays `input` (see the module documentation); returns the spans it produced.
pub fn replay(input: &[u8]) -> Vec<Span> {
    let Some((&first, mut rest)) = input.split_first() else {
        return Vec::new();
    };
    let role = if first & 1 == 0 {
        http_role::SERVER
    } else {
        http_role::CLIENT
    };
    let mut assembler = H2Assembler::default();
    let mut spans = Vec::new();
    // SAFETY: all-zero is a valid H2Chunk (integers and byte arrays).
    let mut chunk: Box<H2Chunk> = Box::new(unsafe { std::mem::zeroed() });
    chunk.kind = http_event::H2_DATA;
    chunk.role = role;
    chunk.pid = 1;
    chunk.fd = 3;
    // The client's first write or the server's first read: the preface.
    chunk.write = u32::from(role == http_role::CLIENT);
    push(&mut assembler, &mut chunk, PREFACE, 0, 0, &mut spans);
    let mut at = 10;
    while let [control, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi]))
            .min(tail.len())
            .min(H2_CHUNK_BYTES);
        let (bytes, next) = tail.split_at(len);
        rest = next;
        at += 10;
        if *control == 0xff {
            assembler.close(1, 3, 0);
            continue;
        }
        chunk.write = u32::from(control & 1);
        let missing = u64::from(control >> 1) * 7;
        push(&mut assembler, &mut chunk, bytes, missing, at, &mut spans);
    }
    assembler.finish_all();
    spans
}

fn push(
    assembler: &mut H2Assembler,
    chunk: &mut H2Chunk,
    bytes: &[u8],
    missing: u64,
    at: u64,
    spans: &mut Vec<Span>,
) {
    chunk.enter_ns = at;
    chunk.exit_ns = at + 5;
    // Missing bytes in the middle (a gap) and after the data alike.
    let at = bytes.len() / 2;
    chunk.gaps[0] = [at as u32, missing as u32];
    chunk.gap_count = u32::from(missing % 2 == 1);
    chunk.moved = bytes.len() as u64 + missing;
    chunk.data_len = bytes.len() as u32;
    let mut resource = |_: u32, comm: &str| {
        Arc::new(Resource {
            service_name: comm.to_string(),
            attributes: Vec::new(),
        })
    };
    assembler.push(chunk, bytes, Clock { offset_ns: 0 }, &mut resource, spans);
}
