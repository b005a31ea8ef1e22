//! HTTP/2 frames (RFC 9113 section 4) out of one direction of a captured connection: the bytes
//! of successive syscalls, with gaps where the kernel kept only part of them.
//!
//! A gap inside a DATA payload (or any payload the capture does not need) costs nothing: the
//! frame header said how long the payload is, so the next header is found again. A gap where a
//! frame header, a header block or the first bytes of RST_STREAM / GOAWAY were loses the
//! direction for good (HPACK state cannot be rebuilt): [`FrameError::Gap`].

use std::fmt;

/// The client connection preface (RFC 9113 section 3.4), first bytes of the client's direction.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 9;
/// Largest header-block fragment kept: a peer may allow 16 MiB frames, we keep 256 KiB of
/// headers per frame and give up on the direction beyond that.
pub const MAX_HEADER_FRAGMENT: u32 = 256 << 10;

/// Frame types used by the capture.
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const PUSH_PROMISE: u8 = 5;
    pub const GOAWAY: u8 = 7;
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags used by the capture.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Why a direction's frames can no longer be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// Bytes are missing where a frame header or a payload the capture needs was.
    Gap,
    /// The client's first bytes are not the connection preface.
    BadPreface,
    /// A header-block fragment larger than [`MAX_HEADER_FRAGMENT`].
    TooLarge,
}

impl FrameError {
    /// Short label for counters.
    pub fn label(self) -> &'static str {
        match self {
            FrameError::Gap => "bytes_missing",
            FrameError::BadPreface => "bad_preface",
            FrameError::TooLarge => "header_block_too_large",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A whole frame. `payload` holds the part the capture needs (see [`kept_bytes`]); `length` is
/// the payload's real length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub length: u32,
    pub payload: Vec<u8>,
    /// When its first byte moved (see [`FrameReader::push`]) and when its last byte did.
    pub started_ns: u64,
    pub ended_ns: u64,
}

/// Bytes of a payload the capture keeps: header blocks whole, the error code of RST_STREAM, the
/// last stream id and error code of GOAWAY, nothing of the others.
pub fn kept_bytes(kind: u8, length: u32) -> Result<u32, FrameError> {
    match kind {
        kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => {
            if length > MAX_HEADER_FRAGMENT {
                Err(FrameError::TooLarge)
            } else {
                Ok(length)
            }
        }
        kind::RST_STREAM => Ok(length.min(4)),
        kind::GOAWAY => Ok(length.min(8)),
        _ => Ok(0),
    }
}

struct Current {
    kind: u8,
    flags: u8,
    stream_id: u32,
    length: u32,
    /// Payload bytes passed so far (kept or not).
    seen: u32,
    keep: u32,
    started_ns: u64,
}

/// Splits one direction of a connection into frames.
pub struct FrameReader {
    /// Preface bytes still expected before the first frame.
    preface_left: usize,
    header: [u8; HEADER_BYTES],
    header_len: usize,
    header_started_ns: u64,
    current: Option<Current>,
    payload: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameReader {
    /// A reader of the client's direction (`preface`: it starts with the connection preface) or
    /// of the server's.
    pub fn new(preface: bool) -> FrameReader {
        FrameReader {
            preface_left: if preface { PREFACE.len() } else { 0 },
            header: [0; HEADER_BYTES],
            header_len: 0,
            header_started_ns: 0,
            current: None,
            payload: Vec::new(),
            failed: None,
        }
    }

    /// The error that stopped the reader, if any.
    pub fn failed(&self) -> Option<FrameError> {
        self.failed
    }

    /// Reads the next bytes of the direction, which moved between `start_ns` (when the first of
    /// them is considered sent or received) and `end_ns`; appends finished frames to `out`.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        start_ns: u64,
        end_ns: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                let at = PREFACE.len() - self.preface_left;
                if bytes[..n] != PREFACE[at..at + n] {
                    return Err(self.fail(FrameError::BadPreface));
                }
                self.preface_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            match &mut self.current {
                None => {
                    if self.header_len == 0 {
                        self.header_started_ns = start_ns;
                    }
                    let n = (HEADER_BYTES - self.header_len).min(bytes.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                    self.header_len += n;
                    bytes = &bytes[n..];
                    if self.header_len == HEADER_BYTES {
                        self.start_frame(end_ns, out)?;
                    }
                }
                Some(current) => {
                    let n = ((current.length - current.seen) as usize).min(bytes.len());
                    if current.seen < current.keep {
                        let k = ((current.keep - current.seen) as usize).min(n);
                        self.payload.extend_from_slice(&bytes[..k]);
                    }
                    current.seen += n as u32;
                    bytes = &bytes[n..];
                    if current.seen == current.length {
                        self.finish_frame(end_ns, out);
                    }
                }
            }
        }
        Ok(())
    }

    /// `n` bytes of the direction moved but were not captured.
    pub fn skip(
        &mut self,
        mut n: u64,
        end_ns: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        while n > 0 {
            if self.preface_left > 0 {
                let k = (self.preface_left as u64).min(n);
                self.preface_left -= k as usize;
                n -= k;
                continue;
            }
            let Some(current) = &mut self.current else {
                return Err(self.fail(FrameError::Gap));
            };
            if current.seen < current.keep {
                return Err(self.fail(FrameError::Gap));
            }
            let k = u64::from(current.length - current.seen).min(n);
            current.seen += k as u32;
            n -= k;
            if current.seen == current.length {
                self.finish_frame(end_ns, out);
            }
        }
        Ok(())
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.failed = Some(error);
        self.current = None;
        self.payload = Vec::new();
        error
    }

    fn start_frame(&mut self, end_ns: u64, out: &mut Vec<Frame>) -> Result<(), FrameError> {
        let h = self.header;
        self.header_len = 0;
        let length = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let kind = h[3];
        let keep = match kept_bytes(kind, length) {
            Ok(keep) => keep,
            Err(error) => return Err(self.fail(error)),
        };
        self.payload.clear();
        self.current = Some(Current {
            kind,
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            length,
            seen: 0,
            keep,
            started_ns: self.header_started_ns,
        });
        if length == 0 {
            self.finish_frame(end_ns, out);
        }
        Ok(())
    }

    fn finish_frame(&mut self, end_ns: u64, out: &mut Vec<Frame>) {
        if let Some(current) = self.current.take() {
            out.push(Frame {
                kind: current.kind,
                flags: current.flags,
                stream_id: current.stream_id,
                length: current.length,
                payload: std::mem::take(&mut self.payload),
                started_ns: current.started_ns,
                ended_ns: end_ns,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut bytes = len.to_be_bytes()[1..].to_vec();
        bytes.push(kind);
        bytes.push(flags);
        bytes.extend_from_slice(&stream_id.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut stream = PREFACE.to_vec();
        stream.extend(frame_bytes(4, 0, 0, &[0; 6]));
        stream.extend(frame_bytes(kind::HEADERS, flag::END_HEADERS, 1, b"hpack"));
        stream.extend(frame_bytes(kind::DATA, flag::END_STREAM, 1, &[7; 100]));
        stream.extend(frame_bytes(kind::DATA, flag::END_STREAM, 3, &[]));
        for split in 1..stream.len() {
            let mut reader = FrameReader::new(true);
            let mut out = Vec::new();
            reader
                .push(&stream[..split], 1, 2, &mut out)
                .expect("in step");
            reader
                .push(&stream[split..], 3, 4, &mut out)
                .expect("in step");
            assert_eq!(out.len(), 4, "split at {split}");
            assert_eq!(out[1].payload, b"hpack");
            assert_eq!(out[1].stream_id, 1);
            assert!(out[2].payload.is_empty(), "DATA payloads are not kept");
            assert_eq!(out[2].length, 100);
            assert_eq!(out[3].stream_id, 3);
            assert_eq!(out[3].ended_ns, 4);
        }
    }

    #[test]
    fn gaps_inside_data_payloads_keep_the_frames_in_step() {
        let data = frame_bytes(kind::DATA, 0, 1, &[7; 1000]);
        let headers = frame_bytes(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, b"t");
        let mut reader = FrameReader::new(false);
        let mut out = Vec::new();
        reader.push(&data[..100], 1, 2, &mut out).expect("in step");
        reader
            .skip((data.len() - 100) as u64, 2, &mut out)
            .expect("in step");
        reader.push(&headers, 3, 4, &mut out).expect("in step");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].payload, b"t");
        assert_eq!(out[1].started_ns, 3);
    }

    #[test]
    fn gaps_over_headers_or_frame_headers_stop_the_reader() {
        let headers = frame_bytes(kind::HEADERS, flag::END_HEADERS, 1, b"abcdef");
        let mut reader = FrameReader::new(false);
        let mut out = Vec::new();
        reader
            .push(&headers[..11], 1, 2, &mut out)
            .expect("in step");
        assert_eq!(reader.skip(4, 2, &mut out), Err(FrameError::Gap));
        assert_eq!(reader.push(b"x", 3, 4, &mut out), Err(FrameError::Gap));
        let mut reader = FrameReader::new(false);
        assert_eq!(reader.skip(1, 2, &mut out), Err(FrameError::Gap));
        assert!(out.is_empty());
    }

    #[test]
    fn a_wrong_preface_or_a_huge_header_block_is_an_error() {
        let mut out = Vec::new();
        let mut reader = FrameReader::new(true);
        assert_eq!(
            reader.push(b"PRI * HTTP/1.1", 1, 2, &mut out),
            Err(FrameError::BadPreface)
        );
        let mut reader = FrameReader::new(false);
        let mut header = (MAX_HEADER_FRAGMENT + 1).to_be_bytes()[1..].to_vec();
        header.extend([kind::HEADERS, 0, 0, 0, 0, 1]);
        assert_eq!(
            reader.push(&header, 1, 2, &mut out),
            Err(FrameError::TooLarge)
        );
    }
}
