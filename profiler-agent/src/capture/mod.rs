//! Zero-code HTTP capture, user-space half: the kernel programs (`profiler-ebpf`) follow every
//! socket a process reads or writes HTTP/1.x on and hand one record per request/response
//! exchange to [`assemble`], which parses it ([`http1`]), names it ([`route`]), and turns it into
//! a [`span::Span`] and a RED observation ([`red`]). Everything here is pure: the ring buffer is
//! read in `crate::ebpf`, spans leave through `crate::export::otlp`.

pub mod assemble;
pub mod http1;
pub mod red;
pub mod route;
pub mod span;
