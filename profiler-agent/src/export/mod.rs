//! Sending what the agent produced elsewhere: [`http`] uploads pprof profiles to the server's
//! ingest (`POST /api/v1/profiles`) through a bounded queue.

pub mod http;
