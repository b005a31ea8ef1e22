//! Errors of the encoders in [`crate::encode`].

use std::io;

/// Why encoding, writing or decoding a profile failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Gzip-compressing the encoded pprof failed.
    #[error("gzip compression of the pprof profile failed")]
    Compress {
        #[source]
        source: io::Error,
    },
    /// inferno could not render the flame graph.
    #[error("rendering the flame graph failed")]
    Svg {
        #[source]
        source: io::Error,
    },
    /// Writing the encoded profile to the output failed (also what `?` makes of an IO error).
    #[error("writing the encoded profile failed")]
    Write {
        #[from]
        source: io::Error,
    },
}

/// A string that names no [`super::OutputFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format `{name}` (expected pprof, folded or svg)")]
pub struct ParseFormatError {
    /// The string that was given.
    pub name: String,
}
