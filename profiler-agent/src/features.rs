//! What this kernel and this process's capabilities allow, checked at start-up so the agent can
//! say which features are on, which are off and why, and run with what works.
//!
//! [`probe`] reads the system once ([`Inputs::read`]); everything after that is pure
//! ([`FeatureReport::from_inputs`]) and tested with recorded inputs. Print the report with
//! `eprint!("{}", features::probe())`: one line per feature.
//!
//! What each capability is for was measured by running `profiler-agent record --all` under
//! reduced bounding sets (`setpriv --bounding-set`) against processes of another user, in another
//! mount namespace, with deleted binaries and kernel-heavy stacks; `deploy/README.md` has the
//! table.

use std::{fmt, fs, path::Path};

use crate::{
    caps::{cap, missing_for_ebpf, parse_cap_line},
    metadata::kubelet_logs,
};

/// The capabilities of the least-privilege set (see `deploy/README.md`), in report order.
const WANTED: [(u32, &str); 6] = [
    (cap::BPF, "CAP_BPF"),
    (cap::PERFMON, "CAP_PERFMON"),
    (cap::SYS_PTRACE, "CAP_SYS_PTRACE"),
    (cap::DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    (cap::CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"),
    (cap::SYSLOG, "CAP_SYSLOG"),
];

/// Oldest kernel the sampler supports.
const MIN_KERNEL: (u32, u32) = (5, 10);

/// Where tracefs may be mounted, in the order the agent looks.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Raw facts read from the system; `None` when the file could not be read.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `/proc/self/status` (the `Cap*` lines).
    pub status: Option<String>,
    /// `/proc/sys/kernel/osrelease`.
    pub osrelease: Option<String>,
    /// `/sys/kernel/btf/vmlinux` can be opened.
    pub btf_vmlinux: bool,
    /// `/proc/sys/kernel/perf_event_paranoid`.
    pub perf_event_paranoid: Option<String>,
    /// `/proc/sys/kernel/kptr_restrict`.
    pub kptr_restrict: Option<String>,
    /// The first text symbol line of `/proc/kallsyms`.
    pub kallsyms_text_line: Option<String>,
    /// The first of [`TRACEFS_MOUNTS`] with an `events` directory.
    pub tracefs_mount: Option<&'static str>,
    /// `events/sched/sched_process_fork/id` exists under the tracefs mount.
    pub sched_fork_tracepoint: bool,
    /// `syscalls:sys_enter_read` exists in tracefs (the HTTP capture's tracepoints).
    pub syscall_tracepoints: bool,
    /// `/proc/filesystems`.
    pub filesystems: Option<String>,
    /// `/sys/bus/event_source/devices/uprobe/type` (the uprobe PMU).
    pub uprobe_pmu_type: Option<String>,
    /// `/sys/kernel/security/lockdown`.
    pub lockdown: Option<String>,
    /// The kubelet's `/var/log/containers` can be listed (pod, namespace, container names).
    pub kubelet_log_dir: bool,
    /// `KUBERNETES_SERVICE_HOST` is set: running in a pod.
    pub in_kubernetes: bool,
}

impl Inputs {
    /// Reads every input from this system.
    pub fn read() -> Inputs {
        let text = |path: &str| fs::read_to_string(path).ok();
        let tracefs_mount = TRACEFS_MOUNTS
            .into_iter()
            .find(|mount| Path::new(mount).join("events").is_dir());
        Inputs {
            status: text("/proc/self/status"),
            osrelease: text("/proc/sys/kernel/osrelease"),
            btf_vmlinux: fs::File::open("/sys/kernel/btf/vmlinux").is_ok(),
            perf_event_paranoid: text("/proc/sys/kernel/perf_event_paranoid"),
            kptr_restrict: text("/proc/sys/kernel/kptr_restrict"),
            kallsyms_text_line: first_text_symbol("/proc/kallsyms"),
            tracefs_mount,
            sched_fork_tracepoint: tracefs_mount.is_some_and(|mount| {
                Path::new(mount)
                    .join("events/sched/sched_process_fork/id")
                    .exists()
            }),
            syscall_tracepoints: tracefs_mount.is_some_and(|mount| {
                Path::new(mount)
                    .join("events/syscalls/sys_enter_read/id")
                    .exists()
            }),
            filesystems: text("/proc/filesystems"),
            uprobe_pmu_type: text("/sys/bus/event_source/devices/uprobe/type"),
            lockdown: text("/sys/kernel/security/lockdown"),
            kubelet_log_dir: fs::read_dir(kubelet_logs::CONTAINERS_DIR).is_ok(),
            in_kubernetes: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        }
    }
}

/// The first text (`t`/`T`) symbol of `/proc/kallsyms`: the per-CPU symbols before it have
/// address 0 even when addresses are shown.
fn first_text_symbol(path: &str) -> Option<String> {
    use std::io::{BufRead, BufReader};
    BufReader::new(fs::File::open(path).ok()?)
        .lines()
        .take(200_000)
        .map_while(Result::ok)
        .find(|line| matches!(line.split_whitespace().nth(1), Some("t" | "T")))
}

/// One feature: whether it is on, and why (or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub on: bool,
    pub why: String,
}

/// The start-up report: one [`Feature`] per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureReport {
    pub features: Vec<Feature>,
}

/// Reads the system and builds the report.
pub fn probe() -> FeatureReport {
    FeatureReport::from_inputs(&Inputs::read())
}

impl FeatureReport {
    /// The feature called `name`, if reported.
    pub fn get(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|feature| feature.name == name)
    }

    /// Builds the report from raw inputs (pure).
    pub fn from_inputs(inputs: &Inputs) -> FeatureReport {
        let caps = inputs
            .status
            .as_deref()
            .and_then(|status| parse_cap_line(status, "CapEff:"));
        // Unknown capabilities (no /proc/self/status): assume everything, the kernel decides.
        let has = |number: u32| caps.is_none_or(|set| set & (1u64 << number) != 0);
        let admin = has(cap::SYS_ADMIN);
        // Unknown capabilities: nothing reported missing, the kernel decides.
        let missing_ebpf = caps.map(missing_for_ebpf).unwrap_or_default();
        let (bpf, perfmon) = (
            !missing_ebpf.contains(&"CAP_BPF"),
            !missing_ebpf.contains(&"CAP_PERFMON"),
        );
        let ptrace = has(cap::SYS_PTRACE);
        let read_search = has(cap::DAC_READ_SEARCH) || has(cap::DAC_OVERRIDE);
        let checkpoint = has(cap::CHECKPOINT_RESTORE) || admin;
        let kernel = inputs.osrelease.as_deref().and_then(parse_kernel_version);
        let paranoid = inputs
            .perf_event_paranoid
            .as_deref()
            .and_then(|text| text.trim().parse::<i32>().ok());
        let lockdown = inputs.lockdown.as_deref().and_then(parse_lockdown);
        let confidentiality = lockdown == Some("confidentiality");

        let mut features = Vec::new();
        let mut push = |name, on, why: String| features.push(Feature { name, on, why });

        push(
            "kernel",
            kernel.is_some_and(|(major, minor, _)| (major, minor) >= MIN_KERNEL),
            match kernel {
                None => "version unknown (/proc/sys/kernel/osrelease unreadable)".to_string(),
                Some((major, minor, patch)) if (major, minor) < MIN_KERNEL => format!(
                    "{major}.{minor}.{patch}: older than {}.{}, the sampler is not supported",
                    MIN_KERNEL.0, MIN_KERNEL.1
                ),
                Some((major, minor, patch)) if (major, minor) < (5, 11) => format!(
                    "{major}.{minor}.{patch}: BPF maps count against RLIMIT_MEMLOCK before 5.11 \
                     ({})",
                    if has(cap::SYS_RESOURCE) {
                        "CAP_SYS_RESOURCE lets the agent raise it"
                    } else {
                        "no CAP_SYS_RESOURCE: loading fails unless the limit is already high"
                    }
                ),
                Some((major, minor, patch)) => format!("{major}.{minor}.{patch}"),
            },
        );

        push(
            "capabilities",
            caps.is_none() || WANTED.iter().all(|&(number, _)| has(number)),
            match caps {
                None => "unknown (/proc/self/status unreadable)".to_string(),
                Some(set) => describe_caps(set),
            },
        );

        push(
            "cpu sampling",
            missing_ebpf.is_empty() && paranoid.is_some(),
            if paranoid.is_none() {
                "/proc/sys/kernel/perf_event_paranoid is missing (kernel without perf \
                 events)"
                    .to_string()
            } else {
                let paranoid = paranoid.unwrap_or_default();
                if missing_ebpf.is_empty() {
                    format!(
                        "perf_event cpu-clock on every CPU and eBPF programs \
                         (perf_event_paranoid={paranoid})"
                    )
                } else {
                    format!(
                        "missing {} (loading perf_event eBPF programs needs CAP_BPF and \
                         CAP_PERFMON, or CAP_SYS_ADMIN; perf_event_paranoid={paranoid})",
                        missing_ebpf.join(" and ")
                    )
                }
            },
        );

        let kallsyms_addresses = inputs
            .kallsyms_text_line
            .as_deref()
            .and_then(kallsyms_shows_addresses);
        let kptr_restrict = inputs
            .kptr_restrict
            .as_deref()
            .and_then(|text| text.trim().parse::<i32>().ok());
        push(
            "kernel symbols",
            kallsyms_addresses == Some(true),
            match kallsyms_addresses {
                Some(true) => "kernel frames named from /proc/kallsyms".to_string(),
                Some(false) => format!(
                    "/proc/kallsyms hides addresses (kptr_restrict={}, perf_event_paranoid={}, \
                     {}): kernel frames show as [unknown]; grant CAP_SYSLOG",
                    kptr_restrict.map_or("?".to_string(), |v| v.to_string()),
                    paranoid.map_or("?".to_string(), |v| v.to_string()),
                    if has(cap::SYSLOG) {
                        "CAP_SYSLOG present"
                    } else {
                        "no CAP_SYSLOG"
                    }
                ),
                None => "/proc/kallsyms unreadable: kernel frames show as [unknown]".to_string(),
            },
        );

        push(
            "other processes",
            ptrace && read_search,
            match (ptrace, read_search) {
                (true, true) => "binaries of every user and container are read through \
                                 /proc/PID/root and /proc/PID/map_files"
                    .to_string(),
                (false, _) => "no CAP_SYS_PTRACE: binaries of other users' processes and of \
                               other containers cannot be opened (their frames are [unknown])"
                    .to_string(),
                (true, false) => "no CAP_DAC_READ_SEARCH: binaries in directories root cannot \
                                  search without it stay unread (their frames are [unknown])"
                    .to_string(),
            },
        );

        push(
            "deleted binaries",
            checkpoint && ptrace && read_search,
            if checkpoint && ptrace && read_search {
                "/proc/PID/map_files opens binaries deleted or replaced since they started"
                    .to_string()
            } else {
                let mut missing = Vec::new();
                if !checkpoint {
                    missing.push("CAP_CHECKPOINT_RESTORE");
                }
                if !ptrace {
                    missing.push("CAP_SYS_PTRACE");
                }
                if !read_search {
                    missing.push("CAP_DAC_READ_SEARCH");
                }
                format!(
                    "missing {}: /proc/PID/map_files is closed, frames of deleted or replaced \
                     binaries are [unknown]",
                    missing.join(", ")
                )
            },
        );

        let tracefs_known = inputs.filesystems.as_deref().is_some_and(|text| {
            text.lines()
                .any(|line| line.trim_end().ends_with("tracefs"))
        });
        push(
            "tracefs",
            !confidentiality && (inputs.tracefs_mount.is_some() || (tracefs_known && admin)),
            if confidentiality {
                "kernel lockdown (confidentiality) closes tracefs".to_string()
            } else if let Some(mount) = inputs.tracefs_mount {
                format!("mounted at {mount}")
            } else if !tracefs_known {
                "the kernel has no tracefs".to_string()
            } else if admin {
                format!(
                    "not mounted; the agent mounts it at {} when needed (CAP_SYS_ADMIN)",
                    TRACEFS_MOUNTS[0]
                )
            } else {
                format!(
                    "not mounted, and mounting needs CAP_SYS_ADMIN: mount the host's {} into \
                     the container",
                    TRACEFS_MOUNTS[0]
                )
            },
        );

        let tracepoints_later = inputs.tracefs_mount.is_none() && tracefs_known && admin;
        push(
            "tracepoints",
            !confidentiality
                && bpf
                && perfmon
                && (inputs.sched_fork_tracepoint || tracepoints_later),
            if confidentiality {
                "kernel lockdown (confidentiality): following the children of --pid processes \
                 is off"
                    .to_string()
            } else if inputs.sched_fork_tracepoint {
                "sched:sched_process_fork/exit (follow the children of --pid processes)".to_string()
            } else if tracepoints_later {
                "after the agent mounts tracefs (follow the children of --pid processes)"
                    .to_string()
            } else if inputs.tracefs_mount.is_some() {
                "sched:sched_process_fork is missing from tracefs".to_string()
            } else {
                "no tracefs: following the children of --pid processes is off".to_string()
            },
        );

        let ring_buffer = kernel.is_some_and(|(major, minor, _)| (major, minor) >= (5, 8));
        push(
            "http capture",
            !confidentiality
                && bpf
                && perfmon
                && ring_buffer
                && (inputs.syscall_tracepoints || tracepoints_later),
            if confidentiality {
                "kernel lockdown (confidentiality) closes the syscall tracepoints".to_string()
            } else if !(bpf && perfmon) {
                "needs CAP_BPF and CAP_PERFMON for tracepoint programs".to_string()
            } else if !ring_buffer {
                "needs a BPF ring buffer (Linux 5.8)".to_string()
            } else if inputs.syscall_tracepoints || tracepoints_later {
                "HTTP/1.x, HTTP/2 (h2c) and gRPC spans and RED metrics from \
                 syscalls:sys_{enter,exit}_{read,write,...} \
                 (no kprobes)"
                    .to_string()
            } else if inputs.tracefs_mount.is_some() {
                "syscalls:* tracepoints are missing (kernel built without \
                 CONFIG_FTRACE_SYSCALLS)"
                    .to_string()
            } else {
                "no tracefs: the syscall tracepoints cannot be attached".to_string()
            },
        );

        let uprobe_pmu = inputs
            .uprobe_pmu_type
            .as_deref()
            .is_some_and(|text| text.trim().parse::<u32>().is_ok());
        push(
            "uprobes",
            uprobe_pmu && perfmon,
            match (uprobe_pmu, perfmon) {
                (true, true) => {
                    "uprobe PMU present (user-space probes, e.g. TLS libraries)".to_string()
                }
                (true, false) => "uprobe PMU present but no CAP_PERFMON".to_string(),
                (false, _) => {
                    "no uprobe PMU (/sys/bus/event_source/devices/uprobe): kernel without \
                     CONFIG_UPROBE_EVENTS"
                        .to_string()
                }
            },
        );

        push(
            "BTF",
            inputs.btf_vmlinux,
            if inputs.btf_vmlinux {
                "/sys/kernel/btf/vmlinux (kernel type information)".to_string()
            } else {
                "no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF, or not \
                 mounted into the container); the CPU sampler does not need it"
                    .to_string()
            },
        );

        push(
            "lockdown",
            !confidentiality,
            match lockdown {
                None => "unknown (/sys/kernel/security/lockdown unreadable: securityfs not \
                         mounted, or no lockdown LSM)"
                    .to_string(),
                Some("none") => "none".to_string(),
                Some("integrity") => {
                    "integrity: only bpf_probe_write_user is refused (not used)".to_string()
                }
                Some(mode) => format!(
                    "{mode}: tracefs and kernel-memory reads refused; CPU sampling still works"
                ),
            },
        );

        push(
            "k8s names",
            inputs.kubelet_log_dir || inputs.in_kubernetes,
            match (inputs.kubelet_log_dir, inputs.in_kubernetes) {
                (true, in_kubernetes) => format!(
                    "pod, namespace and container names from {} and {}{}; ids from \
                     /proc/PID/cgroup",
                    kubelet_logs::CONTAINERS_DIR,
                    kubelet_logs::PODS_DIR,
                    if in_kubernetes {
                        ", workloads and service names from the API server (--kube-api)"
                    } else {
                        ""
                    }
                ),
                (false, true) => format!(
                    "names from the API server only (--kube-api), ids only if it cannot be \
                     asked: mount the host's {} and {} read-only as a fallback",
                    kubelet_logs::CONTAINERS_DIR,
                    kubelet_logs::PODS_DIR
                ),
                (false, false) => {
                    "not on a Kubernetes node: container ids from /proc/PID/cgroup only".to_string()
                }
            },
        );

        FeatureReport { features }
    }
}

impl fmt::Display for FeatureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel features and capabilities:")?;
        for feature in &self.features {
            writeln!(
                f,
                "  {:<16} {:<3}  {}",
                feature.name,
                if feature.on { "on" } else { "off" },
                feature.why
            )?;
        }
        Ok(())
    }
}

/// `CAP_BPF, CAP_PERFMON present; missing CAP_SYSLOG` for the capabilities the agent uses.
fn describe_caps(set: u64) -> String {
    let has = |number: u32| set & (1u64 << number) != 0;
    let (present, missing): (Vec<_>, Vec<_>) = WANTED.iter().partition(|&&(number, _)| has(number));
    let names = |list: Vec<&(u32, &str)>| {
        list.iter()
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = if missing.is_empty() {
        format!("all the agent uses: {}", names(present))
    } else if present.is_empty() {
        format!("missing all of {}", names(missing))
    } else {
        format!("missing {}; present {}", names(missing), names(present))
    };
    if has(cap::SYS_ADMIN) {
        text.push_str(" (+ CAP_SYS_ADMIN)");
    }
    text
}

/// `6.18.44-fc-v669` → (6, 18, 44); `6.1.0-rc1` → (6, 1, 0); `5.10` → (5, 10, 0).
fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric = |part: &str| -> Option<u32> {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let mut parts = release.trim().split('.');
    let major = numeric(parts.next()?)?;
    let minor = numeric(parts.next()?)?;
    let patch = parts.next().and_then(numeric).unwrap_or(0);
    Some((major, minor, patch))
}

/// The selected mode of `none [integrity] confidentiality`.
fn parse_lockdown(text: &str) -> Option<&'static str> {
    let selected = text.split_whitespace().find_map(|word| {
        word.strip_prefix('[')
            .and_then(|word| word.strip_suffix(']'))
    })?;
    ["none", "integrity", "confidentiality"]
        .into_iter()
        .find(|mode| *mode == selected)
}

/// Whether a `/proc/kallsyms` line carries a real address (hidden ones read as zeros).
fn kallsyms_shows_addresses(line: &str) -> Option<bool> {
    let address = line.split_whitespace().next()?;
    let value = u64::from_str_radix(address, 16).ok()?;
    Some(value != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/status` Cap lines with the effective set `eff`.
    fn status(eff: u64) -> String {
        format!(
            "Name:\tprofiler-agent\nCapInh:\t0000000000000000\nCapPrm:\t{eff:016x}\n\
             CapEff:\t{eff:016x}\nCapBnd:\t{eff:016x}\nCapAmb:\t0000000000000000\n"
        )
    }

    fn caps(list: &[u32]) -> u64 {
        list.iter().fold(0, |set, &number| set | (1u64 << number))
    }

    /// Recorded on the development VM (6.18, root, tracefs mounted, no securityfs).
    fn this_vm() -> Inputs {
        Inputs {
            status: Some(status(0x000001fffeffffff)),
            osrelease: Some("6.18.44-fc-v669\n".to_string()),
            btf_vmlinux: true,
            perf_event_paranoid: Some("2\n".to_string()),
            kptr_restrict: Some("0\n".to_string()),
            kallsyms_text_line: Some("ffffffff81000000 T srso_alias_untrain_ret\n".to_string()),
            tracefs_mount: Some("/sys/kernel/tracing"),
            sched_fork_tracepoint: true,
            syscall_tracepoints: true,
            filesystems: Some("nodev\tsysfs\nnodev\ttracefs\n\text4\n".to_string()),
            uprobe_pmu_type: Some("8\n".to_string()),
            lockdown: None,
            kubelet_log_dir: true,
            in_kubernetes: false,
        }
    }

    #[test]
    fn parses_recorded_inputs() {
        assert_eq!(
            parse_cap_line(&status(0x1c400080004), "CapEff:"),
            Some(0x1c400080004)
        );
        assert_eq!(parse_kernel_version("6.18.44-fc-v669\n"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_version("5.10.0-28-amd64"), Some((5, 10, 0)));
        assert_eq!(parse_kernel_version("6.1.0-rc1"), Some((6, 1, 0)));
        assert_eq!(parse_kernel_version("6.12"), Some((6, 12, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(parse_lockdown("none integrity confidentiality"), None);
        assert_eq!(
            kallsyms_shows_addresses("ffffffff81000000 T srso_alias_untrain_ret"),
            Some(true)
        );
        // What a process without CAP_SYSLOG reads when perf_event_paranoid >= 2.
        assert_eq!(
            kallsyms_shows_addresses("0000000000000000 T srso_alias_untrain_ret"),
            Some(false)
        );
    }

    #[test]
    fn root_on_this_vm_has_everything_on_but_lockdown_unknown() {
        let report = FeatureReport::from_inputs(&this_vm());
        for feature in &report.features {
            assert!(feature.on, "{} should be on: {}", feature.name, feature.why);
        }
        let text = report.to_string();
        assert!(text.starts_with("kernel features and capabilities:\n"));
        assert!(text.contains("  kernel           on   6.18.44\n"), "{text}");
        assert!(text.contains("lockdown         on   unknown"), "{text}");
        assert_eq!(text.lines().count(), 1 + report.features.len());
    }

    #[test]
    fn reduced_sets_turn_the_right_features_off() {
        // What `setpriv --bounding-set=-all,+bpf,+perfmon` leaves (CapEff 000000c000000000).
        let mut inputs = this_vm();
        inputs.status = Some(status(caps(&[cap::BPF, cap::PERFMON])));
        inputs.kallsyms_text_line = Some("0000000000000000 T srso_alias_untrain_ret".into());
        let report = FeatureReport::from_inputs(&inputs);
        let on = |name: &str| report.get(name).expect(name).on;
        assert!(on("cpu sampling"));
        assert!(!on("capabilities"));
        assert!(!on("kernel symbols"));
        assert!(!on("other processes"));
        assert!(!on("deleted binaries"));
        let caps_line = &report.get("capabilities").expect("capabilities").why;
        assert_eq!(
            caps_line,
            "missing CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHECKPOINT_RESTORE CAP_SYSLOG; \
             present CAP_BPF CAP_PERFMON"
        );
        assert!(report
            .get("kernel symbols")
            .expect("kernel symbols")
            .why
            .contains("grant CAP_SYSLOG"));

        // No CAP_PERFMON: the sampler cannot start, and says why.
        inputs.status = Some(status(caps(&[cap::BPF, cap::SYS_PTRACE])));
        let report = FeatureReport::from_inputs(&inputs);
        let sampling = report.get("cpu sampling").expect("cpu sampling");
        assert!(!sampling.on);
        assert!(
            sampling.why.starts_with("missing CAP_PERFMON"),
            "{}",
            sampling.why
        );

        // CAP_SYS_ADMIN covers CAP_BPF, CAP_PERFMON and CAP_CHECKPOINT_RESTORE.
        inputs.status = Some(status(caps(&[
            cap::SYS_ADMIN,
            cap::SYS_PTRACE,
            cap::DAC_READ_SEARCH,
        ])));
        let report = FeatureReport::from_inputs(&inputs);
        assert!(report.get("cpu sampling").expect("sampling").on);
        assert!(report.get("deleted binaries").expect("deleted").on);
        assert!(report.get("http capture").expect("http").on);
    }

    #[test]
    fn tracefs_lockdown_and_old_kernels() {
        // tracefs not mounted: mountable with CAP_SYS_ADMIN, else mount it from the host.
        let mut inputs = this_vm();
        inputs.tracefs_mount = None;
        inputs.sched_fork_tracepoint = false;
        inputs.syscall_tracepoints = false;
        let report = FeatureReport::from_inputs(&inputs);
        assert!(report.get("tracefs").expect("tracefs").on);
        assert!(report.get("tracepoints").expect("tracepoints").on);
        inputs.status = Some(status(caps(&WANTED.map(|(number, _)| number))));
        let report = FeatureReport::from_inputs(&inputs);
        let tracefs = report.get("tracefs").expect("tracefs");
        assert!(!tracefs.on);
        assert!(tracefs.why.contains("mount the host's /sys/kernel/tracing"));
        assert!(!report.get("tracepoints").expect("tracepoints").on);
        assert!(report.get("capabilities").expect("capabilities").on);

        // A locked-down kernel (confidentiality) closes tracefs.
        let mut inputs = this_vm();
        inputs.lockdown = Some("none integrity [confidentiality]\n".to_string());
        let report = FeatureReport::from_inputs(&inputs);
        assert!(!report.get("tracefs").expect("tracefs").on);
        assert!(!report.get("lockdown").expect("lockdown").on);
        assert!(report.get("cpu sampling").expect("sampling").on);
        assert!(!report.get("http capture").expect("http").on);

        // Debian 11's kernel: supported, with the memlock note.
        let mut inputs = this_vm();
        inputs.osrelease = Some("5.10.0-28-amd64".to_string());
        let kernel = FeatureReport::from_inputs(&inputs)
            .get("kernel")
            .expect("kernel")
            .clone();
        assert!(kernel.on);
        assert!(kernel.why.contains("RLIMIT_MEMLOCK"), "{}", kernel.why);
        assert!(
            FeatureReport::from_inputs(&inputs)
                .get("http capture")
                .expect("http")
                .on
        );
        inputs.osrelease = Some("4.19.0-26-amd64".to_string());
        let report = FeatureReport::from_inputs(&inputs);
        assert!(!report.get("kernel").expect("kernel").on);
        let http = report.get("http capture").expect("http");
        assert!(!http.on && http.why.contains("5.8"), "{}", http.why);

        // No BTF, no uprobes.
        let mut inputs = this_vm();
        inputs.btf_vmlinux = false;
        inputs.uprobe_pmu_type = None;
        let report = FeatureReport::from_inputs(&inputs);
        assert!(!report.get("BTF").expect("BTF").on);
        assert!(!report.get("uprobes").expect("uprobes").on);

        // In a pod without the kubelet's log directories: the API server, else ids only.
        let mut inputs = this_vm();
        inputs.kubelet_log_dir = false;
        inputs.in_kubernetes = true;
        let names = FeatureReport::from_inputs(&inputs)
            .get("k8s names")
            .expect("k8s names")
            .clone();
        assert!(names.on);
        assert!(names.why.contains("API server only"), "{}", names.why);
        assert!(names.why.contains("ids only"), "{}", names.why);
    }

    /// Runs [`probe`] in a child test process whose capability bounding set is cut down with
    /// `setpriv`, and checks that the report names what is missing. Root only (a non-root
    /// process cannot hold these capabilities in the first place).
    #[test]
    fn reports_missing_capabilities_under_a_reduced_set() {
        if std::env::var_os("PROFILER_FEATURES_CHILD").is_some() {
            // The child: print the report for the parent.
            print!("{}", probe());
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip("not root");
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let output = std::process::Command::new("setpriv")
            .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all", "--"])
            .arg(exe)
            .args([
                "--exact",
                "features::tests::reports_missing_capabilities_under_a_reduced_set",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PROFILER_FEATURES_CHILD", "1")
            .output();
        let output = match output {
            Ok(output) => output,
            Err(error) => return skip(&format!("cannot run setpriv: {error}")),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed:\n{stdout}");
        let line = |name: &str| {
            stdout
                .lines()
                .find(|line| line.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
                .to_string()
        };
        assert!(
            line("capabilities").contains(
                "off  missing CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_CHECKPOINT_RESTORE \
                 CAP_SYSLOG; present CAP_BPF CAP_PERFMON"
            ),
            "{stdout}"
        );
        assert!(line("cpu sampling").contains(" on "), "{stdout}");
        assert!(
            line("other processes").contains("off  no CAP_SYS_PTRACE"),
            "{stdout}"
        );
        assert!(line("deleted binaries").contains(" off "), "{stdout}");
    }

    /// Prints `skipping: <reason>`, or fails under CI (which runs the tests as root).
    fn skip(reason: &str) {
        let ci = std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"));
        assert!(!ci, "cannot run under CI: {reason}");
        eprintln!("skipping: reports_missing_capabilities_under_a_reduced_set: {reason}");
    }
}
