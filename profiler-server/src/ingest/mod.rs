//! Ingest: turn what producers send into the [`crate::model`] the store keeps.
//!
//! - [`pprof`]: pprof → [`crate::model::Profile`] (validates every reference, never panics);
//! - [`pyroscope`]: the Pyroscope `/ingest` request format (app name with labels, multipart);
//! - [`otlp`]: OTLP/gRPC trace, metric and profile services.

pub mod otlp;
pub mod pprof;
pub mod pyroscope;
