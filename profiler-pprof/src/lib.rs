//! pprof's `profile.proto` as prost messages ([`proto`]) and [`decode`], which reads plain or
//! gzip-compressed profiles from any producer and is safe on untrusted input. Shared by the
//! agent's encoder and the server's ingest.

pub mod proto;

use std::io::{self, Read};

use prost::Message;

/// Largest protobuf [`decode`] accepts, after decompression: 256 MiB.
pub const MAX_DECODED_BYTES: usize = 256 << 20;

/// The first two bytes of every gzip member (RFC 1952, section 2.3.1).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a pprof input could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input looked like gzip (magic `1f 8b`) but could not be decompressed.
    #[error("invalid gzip stream in pprof input")]
    Decompress {
        #[source]
        source: io::Error,
    },
    /// The input (after decompression) is larger than the decoder accepts.
    #[error("pprof input is larger than {limit_bytes} bytes after decompression")]
    TooLarge {
        /// The limit that was exceeded.
        limit_bytes: u64,
    },
    /// The (decompressed) input is not a valid `perftools.profiles.Profile` protobuf.
    #[error("invalid pprof protobuf")]
    Decode {
        #[source]
        source: prost::DecodeError,
    },
}

/// Decodes a pprof profile, gzip-compressed (detected by the magic bytes `1f 8b`) or plain.
///
/// Never panics on malformed input; input larger than [`MAX_DECODED_BYTES`] after decompression
/// is rejected with [`DecodeError::TooLarge`].
pub fn decode(bytes: &[u8]) -> Result<proto::Profile, DecodeError> {
    decode_with_limit(bytes, MAX_DECODED_BYTES)
}

/// [`decode`] with a custom size limit (bytes after decompression).
pub fn decode_with_limit(bytes: &[u8], limit: usize) -> Result<proto::Profile, DecodeError> {
    let too_large = || DecodeError::TooLarge {
        limit_bytes: u64::try_from(limit).unwrap_or(u64::MAX),
    };
    let decoded = if bytes.starts_with(&GZIP_MAGIC) {
        let mut raw = Vec::new();
        // Read one byte past the limit to tell "exactly at the limit" from "over it" without
        // inflating a gzip bomb any further.
        let read_limit = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        flate2::read::MultiGzDecoder::new(bytes)
            .take(read_limit)
            .read_to_end(&mut raw)
            .map_err(|source| DecodeError::Decompress { source })?;
        if raw.len() > limit {
            return Err(too_large());
        }
        proto::Profile::decode(raw.as_slice())
    } else {
        if bytes.len() > limit {
            return Err(too_large());
        }
        proto::Profile::decode(bytes)
    };
    decoded.map_err(|source| DecodeError::Decode { source })
}
