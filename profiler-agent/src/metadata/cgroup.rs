//! Container and pod ids from the content of `/proc/PID/cgroup`. Pure parsing, no IO.
//!
//! Each line is `HIERARCHY:CONTROLLERS:PATH`: cgroup v2 has one line `0::PATH`, cgroup v1 one line
//! per hierarchy (`4:memory:PATH`, `1:name=systemd:PATH`), hybrid systems both. The ids live in
//! the path components the kubelet and the container runtime create:
//!
//! | cgroup driver | pod component | container component |
//! |---|---|---|
//! | systemd | `kubepods-burstable-pod<uid with _>.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//! | cgroupfs | `pod<uid>` | `<id>`, `crio-<id>` |
//! | runc "slice:prefix:name" | `kubepods-…-pod<uid>.slice:cri-containerd:<id>` in one component | |
//!
//! The innermost match wins, so a pod inside a containerised node (kind: `/docker/<node id>/
//! kubepods/…`) gets the pod's container, not the node's. Paths seen through a cgroup namespace
//! start with `/..` components, which are skipped like any other.

/// Ids of the container and pod a process runs in. Every field is `None` for a process on the
/// host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's container id: 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// The Kubernetes pod uid, with dashes (`6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f`); static pods
    /// have a 32-hex-digit config hash instead, kept as is.
    pub pod_uid: Option<String>,
    /// `containerd`, `cri-o`, `docker` or `podman`, when the path tells.
    pub runtime: Option<&'static str>,
}

impl ContainerInfo {
    fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// Container component prefixes: `<prefix><id>[.scope]`. A `None` runtime marks the runtime's
/// monitor process (conmon), which belongs to the pod but not to the container.
const CONTAINER_PREFIXES: &[(&str, Option<&str>)] = &[
    ("cri-containerd-", Some("containerd")),
    ("crio-conmon-", None),
    ("crio-", Some("cri-o")),
    ("docker-", Some("docker")),
    ("libpod-conmon-", None),
    ("libpod-", Some("podman")),
];

/// Parses the content of `/proc/PID/cgroup`.
///
/// cgroup v1 lines are preferred to the v2 line: on hybrid systems the unified hierarchy may
/// still hold the process in the runtime's service (`0::/system.slice/containerd.service`) while
/// the v1 controllers hold it in the pod. Among v1 lines the resource controllers come before
/// `name=systemd`, which some set-ups leave at the service too.
pub fn parse(content: &str) -> ContainerInfo {
    let mut lines: Vec<(u8, &str)> = content
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let hierarchy = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let rank = match (hierarchy, controllers) {
                ("0", "") => 2,
                (_, c) if c.starts_with("name=") => 3,
                (_, c) if c.split(',').any(|c| matches!(c, "memory" | "cpu" | "pids")) => 0,
                _ => 1,
            };
            Some((rank, path))
        })
        .collect();
    lines.sort_by_key(|&(rank, _)| rank);
    let mut pod_only = None;
    for (_, path) in lines {
        let info = parse_path(path);
        if info.container_id.is_some() {
            return info;
        }
        if pod_only.is_none() && !info.is_empty() {
            pod_only = Some(info);
        }
    }
    pod_only.unwrap_or_default()
}

/// Parses one cgroup path; the innermost container and pod components win.
pub fn parse_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty() && *c != "..") {
        // runc's systemd form kept verbatim: `<slice>:<prefix>:<id>`.
        let mut parts = component.splitn(3, ':');
        if let (Some(slice), Some(prefix), Some(id)) = (parts.next(), parts.next(), parts.next()) {
            if let Some(uid) = pod_uid_of(slice) {
                info.pod_uid = Some(uid);
            }
            if let Some(runtime) = runtime_of_prefix(prefix) {
                if is_container_id(id) {
                    info.container_id = Some(id.to_string());
                    info.runtime = Some(runtime);
                }
            }
            parent = component;
            continue;
        }
        if let Some(uid) = pod_uid_of(component) {
            info.pod_uid = Some(uid);
            // A new pod: a container found above it belonged to an outer level.
            info.container_id = None;
            info.runtime = None;
        } else if let Some((id, runtime)) = container_of(component, parent) {
            match id {
                Some(id) => {
                    info.container_id = Some(id);
                    info.runtime = runtime;
                }
                // conmon: in the pod, in no container.
                None => {
                    info.container_id = None;
                    info.runtime = None;
                }
            }
        }
        parent = component;
    }
    info
}

fn runtime_of_prefix(prefix: &str) -> Option<&'static str> {
    match prefix {
        "cri-containerd" => Some("containerd"),
        "crio" => Some("cri-o"),
        "docker" => Some("docker"),
        "libpod" => Some("podman"),
        _ => None,
    }
}

/// `Some((Some(id), runtime))` for a container component, `Some((None, None))` for a runtime
/// monitor (conmon), `None` for anything else.
#[allow(clippy::type_complexity, reason = "a private helper with one caller")]
fn container_of(component: &str, parent: &str) -> Option<(Option<String>, Option<&'static str>)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for &(prefix, runtime) in CONTAINER_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if !is_container_id(id) {
                return None;
            }
            return Some(match runtime {
                Some(runtime) => (Some(id.to_string()), Some(runtime)),
                None => (None, None),
            });
        }
    }
    // cgroupfs driver: the bare id. Plain Docker puts it under `/docker/`; under `/kubepods/`
    // containerd and Docker look the same.
    if is_container_id(name) && name.len() == component.len() {
        let runtime = (parent == "docker").then_some("docker");
        return Some((Some(name.to_string()), runtime));
    }
    None
}

/// The pod uid of a pod-level component: `pod<uid>` (cgroupfs) or `…-pod<uid_with_underscores>.slice`
/// (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        // `kubepods-burstable-pod<uid>.slice`, `kubelet-kubepods-pod<uid>.slice`.
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        component.strip_prefix("pod")?.to_string()
    };
    is_pod_uid(&raw).then_some(raw)
}

/// 64 lowercase hex digits.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A UUID (8-4-4-4-12 hex digits) or, for static pods, a 32-hex-digit config hash.
fn is_pod_uid(text: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if text.len() == 32 {
        return hex(text);
    }
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && hex(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3";
    const UID: &str = "6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f";

    fn expect(content: &str, id: Option<&str>, uid: Option<&str>, runtime: Option<&str>) {
        let info = parse(content);
        assert_eq!(
            info.container_id.as_deref(),
            id,
            "container id of\n{content}"
        );
        assert_eq!(info.pod_uid.as_deref(), uid, "pod uid of\n{content}");
        assert_eq!(info.runtime, runtime, "runtime of\n{content}");
    }

    // One case per path format, in the form each set-up writes it (the ids are placeholders,
    // except on this machine's own file in `pod_level_processes_and_host_processes`).

    #[test]
    fn cgroup_v2_systemd_containerd_burstable() {
        // kubeadm with containerd, `SystemdCgroup = true`, cgroup v2.
        expect(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/cri-containerd-2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3.scope\n",
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
    }

    #[test]
    fn cgroup_v2_systemd_containerd_guaranteed_and_besteffort() {
        // Guaranteed pods sit directly under kubepods.slice.
        expect(
            "0::/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-e7c3a9d1f0b2c4e6a8f0e2d4c6b8a0f2e4d6c8b0a2f4e6d8c0b2a4f6e8d0c2b4.scope",
            Some("e7c3a9d1f0b2c4e6a8f0e2d4c6b8a0f2e4d6c8b0a2f4e6d8c0b2a4f6e8d0c2b4"),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            Some("containerd"),
        );
        expect(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3c0f6a2e_91d4_4b8e_a6c7_1f2e3d4c5b6a.slice/cri-containerd-9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0.scope\n",
            Some("9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"),
            Some("3c0f6a2e-91d4-4b8e-a6c7-1f2e3d4c5b6a"),
            Some("containerd"),
        );
    }

    #[test]
    fn cgroup_v2_systemd_crio_and_its_conmon() {
        // CRI-O with its default systemd cgroup manager (OpenShift, cgroup v2).
        expect(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/crio-2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3.scope\n",
            Some(ID),
            Some(UID),
            Some("cri-o"),
        );
        // conmon watches the container from the pod's slice; it is not in the container.
        expect(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/crio-conmon-2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3.scope\n",
            None,
            Some(UID),
            None,
        );
    }

    #[test]
    fn cgroup_v1_cgroupfs_containerd() {
        // containerd with the cgroupfs driver on cgroup v1 (k3s's default): every controller.
        let content = format!(
            "12:hugetlb:/kubepods/burstable/pod{UID}/{ID}\n\
             11:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             10:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             9:cpuset:/kubepods/burstable/pod{UID}/{ID}\n\
             8:devices:/kubepods/burstable/pod{UID}/{ID}\n\
             7:net_cls,net_prio:/kubepods/burstable/pod{UID}/{ID}\n\
             6:blkio:/kubepods/burstable/pod{UID}/{ID}\n\
             5:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             4:freezer:/kubepods/burstable/pod{UID}/{ID}\n\
             3:perf_event:/kubepods/burstable/pod{UID}/{ID}\n\
             2:rdma:/\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        expect(&content, Some(ID), Some(UID), None);
    }

    #[test]
    fn cgroup_v1_cgroupfs_docker_shim_besteffort() {
        // dockershim with the cgroupfs driver (Kubernetes <= 1.23); a cpuset line at the root.
        expect(
            "11:cpuset:/\n\
             10:cpu,cpuacct:/kubepods/besteffort/pod3c0f6a2e-91d4-4b8e-a6c7-1f2e3d4c5b6a/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970\n\
             9:memory:/kubepods/besteffort/pod3c0f6a2e-91d4-4b8e-a6c7-1f2e3d4c5b6a/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970\n\
             1:name=systemd:/kubepods/besteffort/pod3c0f6a2e-91d4-4b8e-a6c7-1f2e3d4c5b6a/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970\n",
            Some("4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"),
            Some("3c0f6a2e-91d4-4b8e-a6c7-1f2e3d4c5b6a"),
            None,
        );
    }

    #[test]
    fn cgroup_v1_systemd_docker() {
        // Docker (dockershim or cri-dockerd) with the systemd driver on cgroup v1.
        expect(
            "12:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/docker-2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3.scope\n\
             1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/docker-2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3.scope\n",
            Some(ID),
            Some(UID),
            Some("docker"),
        );
    }

    #[test]
    fn cgroup_v1_crio_cgroupfs() {
        // CRI-O with cgroup_manager = "cgroupfs" keeps its prefix without `.scope`.
        expect(
            &format!("4:memory:/kubepods/pod{UID}/crio-{ID}\n1:name=systemd:/kubepods/pod{UID}/crio-{ID}\n"),
            Some(ID),
            Some(UID),
            Some("cri-o"),
        );
    }

    #[test]
    fn runc_slice_prefix_name_form() {
        // containerd with `SystemdCgroup = true` on a hybrid cgroup v1 host where systemd did
        // not create the unit: runc's `slice:prefix:name` stays verbatim in the path, and the
        // unified line shows containerd's service.
        expect(
            &format!(
                "8:memory:/system.slice/containerd.service/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice:cri-containerd:{ID}\n\
                 1:name=systemd:/system.slice/containerd.service/kubepods-burstable-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice:cri-containerd:{ID}\n\
                 0::/system.slice/containerd.service\n"
            ),
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
    }

    #[test]
    fn hybrid_prefers_v1_controllers_over_the_unified_line() {
        // systemd hybrid mode (Ubuntu 20.04's default): the unified line shows the service.
        expect(
            &format!(
                "12:memory:/kubepods/burstable/pod{UID}/{ID}\n\
                 1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
                 0::/system.slice/containerd.service\n"
            ),
            Some(ID),
            Some(UID),
            None,
        );
    }

    #[test]
    fn plain_docker_without_kubernetes() {
        // `docker run` with the cgroupfs driver on cgroup v1.
        expect(
            "12:pids:/docker/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970\n\
             4:memory:/docker/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970\n",
            Some("4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"),
            None,
            Some("docker"),
        );
        // `docker run` with the systemd driver on cgroup v2.
        expect(
            "0::/system.slice/docker-9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d.scope\n",
            Some("9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"),
            None,
            Some("docker"),
        );
    }

    #[test]
    fn kind_node_inside_docker_gives_the_innermost_container() {
        // kind: the node is a Docker container, the pod's cgroups are nested in its own.
        expect(
            &format!(
                "0::/system.slice/docker-9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/cri-containerd-{ID}.scope\n"
            ),
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
    }

    #[test]
    fn path_seen_through_a_cgroup_namespace() {
        // Read by a process in another pod's cgroup namespace: the path climbs out with `..`.
        expect(
            &format!(
                "0::/../../kubepods-besteffort-pod6d6b5ba0_b8a8_4d1a_9c1e_6a8a0e5b5b6f.slice/cri-containerd-{ID}.scope\n"
            ),
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
    }

    #[test]
    fn static_pod_uid_is_a_config_hash() {
        // kube-apiserver static pod on a kubeadm control plane.
        expect(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8a3e4c5f1d2b6a7e9f0c1b2a3d4e5f60.slice/cri-containerd-{ID}.scope\n"
            ),
            Some(ID),
            Some("8a3e4c5f1d2b6a7e9f0c1b2a3d4e5f60"),
            Some("containerd"),
        );
    }

    #[test]
    fn podman_nested_container_subgroup() {
        // Podman on cgroup v2 may run the payload in a `container` subgroup of its scope.
        expect(
            &format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            Some(ID),
            None,
            Some("podman"),
        );
    }

    #[test]
    fn pod_level_processes_and_host_processes() {
        // The pod's own cgroup (e.g. a process moved there): a uid, no container.
        expect(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice\n",
                UID.replace('-', "_")
            ),
            None,
            Some(UID),
            None,
        );
        // Host processes.
        expect("0::/system.slice/sshd.service\n", None, None, None);
        expect("0::/init.scope\n", None, None, None);
        expect("0::/\n", None, None, None);
        expect("", None, None, None);
        // This machine: cgroup v1 with a non-container memory cgroup of 32 hex digits.
        expect(
            "9:name=systemd:/\n4:memory:/process_api/afca1a8e9c96e570f7b4dbd3a3bfb2dd\n0::/\n",
            None,
            None,
            None,
        );
    }

    #[test]
    fn rejects_near_misses() {
        // Too short, upper case, not hex: not container ids.
        assert_eq!(parse_path("/docker/4f797c539e6c"), ContainerInfo::default());
        assert_eq!(
            parse_path(&format!("/docker/{}", ID.to_uppercase())),
            ContainerInfo::default()
        );
        assert_eq!(
            parse_path("/system.slice/docker-notanid.scope"),
            ContainerInfo::default()
        );
        // `pod` followed by something else than a uid.
        assert_eq!(parse_path("/kubepods/podcast/x"), ContainerInfo::default());
        assert_eq!(
            parse_path("/user.slice/user-1000.slice/user@1000.service/app.slice/podman-pod.slice"),
            ContainerInfo::default()
        );
    }
}
