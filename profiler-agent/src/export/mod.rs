//! Sending what the agent produced elsewhere: [`http`] uploads pprof profiles to the server's
//! ingest (`POST /api/v1/profiles`) through a bounded queue; [`otlp`] sends captured spans and
//! RED histograms to an OTLP/gRPC receiver from its own thread, through bounded queues too.

pub mod http;
pub mod otlp;
