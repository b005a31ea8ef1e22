//! profiler-server: ingest (pprof over HTTP, Pyroscope `/ingest`, OTLP/gRPC traces, metrics
//! and profiles), an embedded on-disk store, the JSON query API of `docs/api.md`, and the
//! web UI, in one binary.
//!
//! Start reading at [`server::Server::start`]; data flows
//! `api`/`ingest::otlp` → [`ingest`] (decode, normalize to [`model`]) → [`store::Store`] →
//! [`query`] (pure: flame graphs, diffs, RED math) → `api` (JSON).
//!
//! Invariants: `query` does no IO; ingest never panics on input (every index is checked);
//! only `store/` knows SQL; the server never symbolizes (stacks arrive as names).

pub mod api;
pub mod error;
pub mod ingest;
pub mod model;
pub mod query;
pub mod server;
pub mod store;
pub mod ui;

pub use server::{Config, Server};
