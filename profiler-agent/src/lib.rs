//! The profiler's per-node agent. Data flow, in module order:
//! [`ebpf`] (load, attach, drain the kernel maps) → [`collect`] (raw samples, process mappings)
//! → [`symbolize`] (blazesym) → [`profile`] (the symbolized model) → [`encode`] (pprof, folded,
//! SVG). [`record`] owns the loop of `profiler-agent record`.

pub mod agent;
pub mod cache;
pub mod caps;
pub mod capture;
pub mod collect;
pub mod debug_file;
pub mod ebpf;
pub mod encode;
pub mod export;
pub mod features;
pub mod http_capture;
pub mod kallsyms;
pub mod metadata;
pub mod process;
pub mod profile;
pub mod record;
pub mod run;
pub mod signals;
pub mod symbolize;
pub mod telemetry;
pub mod tls;

/// The kernel's page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}
