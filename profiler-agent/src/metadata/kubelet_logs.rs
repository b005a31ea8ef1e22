//! Pod, namespace and container names from the names of the kubelet's log files: no API server,
//! no TLS, no RBAC.
//!
//! For every container it starts, the kubelet creates a symlink
//! `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log` pointing to
//! `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log` (kubelet
//! `kuberuntime_logs`/`legacy.go`; log shippers such as Fluent Bit rely on the same names). The
//! names cannot be ambiguous: pod names, namespaces and container names never contain `_`, and
//! the id is the last `-`-separated part. Only directory entries and link targets are read,
//! never the logs themselves.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

/// Where the kubelet puts the per-container symlinks.
pub const CONTAINERS_DIR: &str = "/var/log/containers";
/// Where the kubelet puts the per-pod log directories.
pub const PODS_DIR: &str = "/var/log/pods";

/// Names of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerNames {
    pub pod_name: String,
    pub namespace: String,
    pub container_name: String,
    /// From the link target; `None` when the link could not be read.
    pub pod_uid: Option<String>,
}

/// Names of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNames {
    pub pod_name: String,
    pub namespace: String,
}

/// The names found in the kubelet's log directories at one point in time.
#[derive(Clone, Debug, Default)]
pub struct LogIndex {
    /// By container id (64 hex digits).
    pub containers: HashMap<String, ContainerNames>,
    /// By pod uid.
    pub pods: HashMap<String, PodNames>,
}

impl LogIndex {
    /// Reads both directories. Fails only when neither can be listed (not on a Kubernetes node,
    /// or not mounted into the agent's container).
    pub fn read(containers_dir: &Path, pods_dir: &Path) -> io::Result<LogIndex> {
        let mut index = LogIndex::default();
        let containers = fs::read_dir(containers_dir);
        let pods = fs::read_dir(pods_dir);
        if let (Err(error), Err(_)) = (&containers, &pods) {
            return Err(io::Error::new(error.kind(), error.to_string()));
        }
        for entry in containers.into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some((id, mut names)) = name.to_str().and_then(parse_container_link) else {
                continue;
            };
            names.pod_uid = fs::read_link(entry.path())
                .ok()
                .and_then(|target| pod_uid_of_target(&target));
            index.containers.insert(id, names);
        }
        for entry in pods.into_iter().flatten().flatten() {
            let name = entry.file_name();
            if let Some((uid, names)) = name.to_str().and_then(parse_pod_dir) {
                index.pods.insert(uid, names);
            }
        }
        // Links whose target named a pod fill in pods missing from the pods directory.
        for names in index.containers.values() {
            if let Some(uid) = &names.pod_uid {
                index.pods.entry(uid.clone()).or_insert_with(|| PodNames {
                    pod_name: names.pod_name.clone(),
                    namespace: names.namespace.clone(),
                });
            }
        }
        Ok(index)
    }
}

/// Parses `<pod>_<namespace>_<container>-<64 hex id>.log`. Names the kubelet truncated to 255
/// bytes lose their id and are skipped.
pub fn parse_container_link(file_name: &str) -> Option<(String, ContainerNames)> {
    let stem = file_name.strip_suffix(".log")?;
    let (names, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut parts = names.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [pod, namespace, container].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some((
        id.to_string(),
        ContainerNames {
            pod_name: pod.to_string(),
            namespace: namespace.to_string(),
            container_name: container.to_string(),
            pod_uid: None,
        },
    ))
}

/// Parses a pod log directory name, `<namespace>_<pod>_<uid>`.
pub fn parse_pod_dir(dir_name: &str) -> Option<(String, PodNames)> {
    let mut parts = dir_name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [namespace, pod, uid].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some((
        uid.to_string(),
        PodNames {
            pod_name: pod.to_string(),
            namespace: namespace.to_string(),
        },
    ))
}

/// The pod uid in a link target `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
/// Docker-era links point to `/var/lib/docker/containers/…` instead and give none.
pub fn pod_uid_of_target(target: &Path) -> Option<String> {
    let mut components: Vec<&str> = target.iter().filter_map(|c| c.to_str()).collect();
    // <pod dir>/<container>/<n>.log
    components.pop()?;
    components.pop()?;
    let pod_dir = components.pop()?;
    parse_pod_dir(pod_dir).map(|(uid, _)| uid)
}

/// The default directories, as mounted into the agent's container by the DaemonSet.
pub fn default_dirs() -> (PathBuf, PathBuf) {
    (PathBuf::from(CONTAINERS_DIR), PathBuf::from(PODS_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3";

    #[test]
    fn parses_container_links() {
        let (id, names) = parse_container_link(&format!(
            "coredns-5dd5756b68-7x2kq_kube-system_coredns-{ID}.log"
        ))
        .expect("a kubelet link name");
        assert_eq!(id, ID);
        assert_eq!(names.pod_name, "coredns-5dd5756b68-7x2kq");
        assert_eq!(names.namespace, "kube-system");
        assert_eq!(names.container_name, "coredns");
        // Dots in pod names, dashes in container names.
        let (_, names) = parse_container_link(&format!("web-0.shard-a_shop_istio-proxy-{ID}.log"))
            .expect("a kubelet link name");
        assert_eq!(
            (names.pod_name.as_str(), names.container_name.as_str()),
            ("web-0.shard-a", "istio-proxy")
        );
        // Truncated (the id is cut), wrong shapes.
        assert!(parse_container_link(&format!("p_ns_c-{}.log", &ID[..40])).is_none());
        assert!(parse_container_link(&format!("p_ns-{ID}.log")).is_none());
        assert!(parse_container_link(&format!("p_ns_c_d-{ID}.log")).is_none());
        assert!(parse_container_link(&format!("p_ns_c-{ID}.txt")).is_none());
    }

    #[test]
    fn parses_pod_dirs_and_link_targets() {
        let (uid, names) = parse_pod_dir(
            "kube-system_coredns-5dd5756b68-7x2kq_6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f",
        )
        .expect("a pod dir");
        assert_eq!(uid, "6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f");
        assert_eq!(names.namespace, "kube-system");
        assert_eq!(names.pod_name, "coredns-5dd5756b68-7x2kq");
        assert!(parse_pod_dir("no-underscores").is_none());
        assert_eq!(
            pod_uid_of_target(Path::new(
                "/var/log/pods/shop_web-0_6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f/app/3.log"
            ))
            .as_deref(),
            Some("6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f")
        );
        assert_eq!(
            pod_uid_of_target(Path::new(&format!(
                "/var/lib/docker/containers/{ID}/{ID}-json.log"
            ))),
            None
        );
    }

    #[test]
    fn reads_a_node_layout() {
        let dir =
            std::env::temp_dir().join(format!("profiler-kubelet-logs-{}", std::process::id()));
        let (containers, pods) = (dir.join("containers"), dir.join("pods"));
        let uid = "6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f";
        let pod_dir = pods.join(format!("shop_web-0_{uid}"));
        fs::create_dir_all(pod_dir.join("app")).expect("create pod dir");
        fs::create_dir_all(&containers).expect("create containers dir");
        fs::create_dir_all(pods.join("kube-system_etcd-cp_8a3e4c5f1d2b6a7e9f0c1b2a3d4e5f60"))
            .expect("create static pod dir");
        let link = containers.join(format!("web-0_shop_app-{ID}.log"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(pod_dir.join("app/0.log"), &link).expect("symlink");
        fs::write(containers.join("README"), "not a link").expect("write");

        let index = LogIndex::read(&containers, &pods).expect("read the index");
        let names = &index.containers[ID];
        assert_eq!(names.pod_name, "web-0");
        assert_eq!(names.namespace, "shop");
        assert_eq!(names.container_name, "app");
        assert_eq!(names.pod_uid.as_deref(), Some(uid));
        assert_eq!(index.pods[uid].pod_name, "web-0");
        assert_eq!(
            index.pods["8a3e4c5f1d2b6a7e9f0c1b2a3d4e5f60"].namespace,
            "kube-system"
        );
        assert_eq!(index.containers.len(), 1);

        assert!(LogIndex::read(&dir.join("missing"), &dir.join("missing-too")).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
