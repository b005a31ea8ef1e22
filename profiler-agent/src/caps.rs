//! Checks the capabilities the agent needs, so a missing one is named before anything fails.

use std::fs;

/// CAP_SYS_ADMIN: covers everything below on any kernel.
const CAP_SYS_ADMIN: u32 = 21;
/// CAP_PERFMON: perf_event_open and tracing programs (kernel >= 5.8).
const CAP_PERFMON: u32 = 38;
/// CAP_BPF: loading programs and creating maps (kernel >= 5.8).
const CAP_BPF: u32 = 39;

/// What to do when capabilities are missing.
pub const EBPF_CAPS_ADVICE: &str =
    "run as root, or grant CAP_BPF and CAP_PERFMON (e.g. `setcap cap_bpf,cap_perfmon+ep \
     profiler-agent`; add CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to symbolize other users' \
     processes)";

/// The effective capability set of this process.
fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn missing_for_ebpf(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
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
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert!(missing_for_ebpf(0x1ff_ffff_ffff).is_empty());
        assert!(missing_for_ebpf(1 << CAP_SYS_ADMIN).is_empty());
        assert_eq!(missing_for_ebpf(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_ebpf(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_for_ebpf((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
    }
}
