//! Checks the capabilities the agent needs, so a missing one is named before anything fails.

use std::fs;

/// Capability numbers (`include/uapi/linux/capability.h`); what the agent uses each one for is
/// in `deploy/README.md`.
pub mod cap {
    pub const DAC_OVERRIDE: u32 = 1;
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const SYS_PTRACE: u32 = 19;
    /// Covers BPF and PERFMON on any kernel.
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_RESOURCE: u32 = 24;
    pub const SYSLOG: u32 = 34;
    /// perf_event_open and tracing programs (kernel >= 5.8).
    pub const PERFMON: u32 = 38;
    /// Loading programs and creating maps (kernel >= 5.8).
    pub const BPF: u32 = 39;
    pub const CHECKPOINT_RESTORE: u32 = 40;
}

/// What to do when capabilities are missing.
pub const EBPF_CAPS_ADVICE: &str =
    "run as root, or grant CAP_BPF and CAP_PERFMON (e.g. `setcap cap_bpf,cap_perfmon+ep \
     profiler-agent`; add CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to symbolize other users' \
     processes)";

/// The effective capability set of this process.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_line(&status, "CapEff:")
}

/// The hex set of a `Cap*:` line (`prefix`, e.g. `CapEff:`) of `/proc/PID/status`.
pub fn parse_cap_line(status: &str, prefix: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The capabilities `effective` lacks to load the sampler and open its perf events.
pub fn missing_for_ebpf(effective: u64) -> Vec<&'static str> {
    let has = |number: u32| effective & (1 << number) != 0;
    if has(cap::SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(cap::BPF) {
        missing.push("CAP_BPF");
    }
    if !has(cap::PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Fails with a message naming the missing capabilities when the process cannot load and attach
/// the sampler. When the set cannot be read, lets the kernel decide.
pub fn require_for_ebpf() -> Result<(), String> {
    let Some(effective) = effective_caps() else {
        return Ok(());
    };
    let missing = missing_for_ebpf(effective);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing capabilities {} to load eBPF programs and open perf events: {EBPF_CAPS_ADVICE}",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(
            parse_cap_line("Name:\tx\nCapEff:\t000001ffffffffff\n", "CapEff:"),
            Some(0x1ff_ffff_ffff)
        );
        assert!(missing_for_ebpf(0x1ff_ffff_ffff).is_empty());
        assert!(missing_for_ebpf(1 << cap::SYS_ADMIN).is_empty());
        assert_eq!(missing_for_ebpf(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_ebpf(1 << cap::BPF), vec!["CAP_PERFMON"]);
        assert!(missing_for_ebpf((1 << cap::BPF) | (1 << cap::PERFMON)).is_empty());
    }
}
