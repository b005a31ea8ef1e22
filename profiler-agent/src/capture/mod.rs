//! Zero-code HTTP capture, user-space half: the kernel programs (`profiler-ebpf`) follow every
//! socket a process reads or writes HTTP/1.x on and hand one record per request/response
//! exchange to [`assemble`], which parses it ([`http1`]), names it ([`route`]), and turns it into
//! a [`span::Span`] and a RED observation ([`red`]). HTTP/2 connections (h2c, gRPC) come as the
//! raw bytes of each syscall and are parsed by [`h2`] into the same spans; its server streams
//! also go to [`stream_windows`], which links CPU samples of HTTP/2 servers to them. Everything
//! here is pure: the ring buffer is read in `crate::ebpf`, spans leave through
//! `crate::export::otlp`.

pub mod assemble;
pub mod h2;
pub mod http1;
pub mod red;
pub mod route;
pub mod span;
pub mod stream_windows;
