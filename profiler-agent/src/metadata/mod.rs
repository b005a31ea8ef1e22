//! Who a process is in Kubernetes terms: container and pod ids, pod, namespace and container
//! names, and the node, for the OTel resource attributes `container.id`, `k8s.pod.uid`,
//! `k8s.pod.name`, `k8s.namespace.name`, `k8s.container.name` and `k8s.node.name`.
//!
//! Start at [`Metadata::for_pid`]. Ids come from `/proc/PID/cgroup` ([`cgroup`], pure parsing);
//! names from the kubelet's log directory names ([`kubelet_logs`]), which the DaemonSet mounts
//! read-only: no API server, no TLS, no RBAC needed. Whatever cannot be read (not a
//! container, not on a Kubernetes node, directories not mounted) is left `None`: the ids still
//! come through without the names.

pub mod cgroup;
pub mod kubelet_logs;
pub mod workload;

use crate::profile::Profile;
use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use kubelet_logs::LogIndex;

/// How long a process's metadata is trusted before `/proc/PID/cgroup` is read again (guards
/// against a recycled pid when the exit was not reported through [`Metadata::forget`]).
const PROCESS_TTL: Duration = Duration::from_secs(60);
/// Least time between two reads of the kubelet's log directories, when a container is not
/// found in them (it may have just started).
const INDEX_REFRESH: Duration = Duration::from_secs(10);

/// OTel attribute names, in the order of [`ProcessMetadata::attributes`].
pub const ATTRIBUTE_NAMES: [&str; 6] = [
    "container.id",
    "k8s.pod.uid",
    "k8s.pod.name",
    "k8s.namespace.name",
    "k8s.container.name",
    "k8s.node.name",
];

/// What is known about one process. All `None` for a host process off Kubernetes, except the
/// node name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMetadata {
    /// 64 hex digits, from the cgroup path.
    pub container_id: Option<String>,
    /// With dashes, from the cgroup path (or the kubelet's log links).
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub container_name: Option<String>,
    /// `NODE_NAME` (the downward API in the DaemonSet) or this machine's hostname.
    pub node_name: Option<String>,
    /// `containerd`, `cri-o`, `docker` or `podman`, when the cgroup path tells.
    pub runtime: Option<&'static str>,
    /// The pod's controller, read from the pod name ([`workload`]).
    pub workload: Option<workload::Workload>,
}

impl ProcessMetadata {
    /// The known values as `(OTel attribute name, value)` pairs, e.g. for pprof labels or span
    /// attributes.
    pub fn attributes(&self) -> Vec<(&'static str, &str)> {
        [
            &self.container_id,
            &self.pod_uid,
            &self.pod_name,
            &self.namespace,
            &self.container_name,
            &self.node_name,
        ]
        .into_iter()
        .zip(ATTRIBUTE_NAMES)
        .filter_map(|(value, name)| value.as_deref().map(|value| (name, value)))
        .chain(
            self.workload
                .as_ref()
                .and_then(|w| Some((w.attribute?, w.name.as_str()))),
        )
        .collect()
    }

    /// `service.name` for a containerized process, as OTel's Kubernetes conventions suggest:
    /// the workload's name, else the pod's, else the container's. `None` off Kubernetes.
    pub fn service_name(&self) -> Option<&str> {
        self.workload
            .as_ref()
            .map(|w| w.name.as_str())
            .or(self.pod_name.as_deref())
            .or(self.container_name.as_deref())
    }
}

struct Cached {
    metadata: ProcessMetadata,
    read_at: Instant,
    /// A container id or pod uid was found but its names were not.
    names_missing: bool,
    /// The index generation the names were looked up in.
    index_generation: u64,
}

/// Resolves and caches [`ProcessMetadata`] per pid.
pub struct Metadata {
    proc_root: PathBuf,
    containers_dir: PathBuf,
    pods_dir: PathBuf,
    node_name: Option<String>,
    index: Option<LogIndex>,
    index_generation: u64,
    index_read_at: Option<Instant>,
    cache: HashMap<u32, Cached>,
}

impl Metadata {
    /// Reads `/proc`, the kubelet's directories at their usual places, and the node name from
    /// `NODE_NAME` or the hostname.
    pub fn new() -> Metadata {
        let (containers_dir, pods_dir) = kubelet_logs::default_dirs();
        let node_name = std::env::var("NODE_NAME")
            .ok()
            .filter(|name| !name.trim().is_empty())
            .or_else(|| {
                fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|name| name.trim().to_string())
            });
        Metadata::with_paths(PathBuf::from("/proc"), containers_dir, pods_dir, node_name)
    }

    /// Reads other places (tests, or a host filesystem mounted elsewhere).
    pub fn with_paths(
        proc_root: PathBuf,
        containers_dir: PathBuf,
        pods_dir: PathBuf,
        node_name: Option<String>,
    ) -> Metadata {
        Metadata {
            proc_root,
            containers_dir,
            pods_dir,
            node_name,
            index: None,
            index_generation: 0,
            index_read_at: None,
            cache: HashMap::new(),
        }
    }

    /// The metadata of `pid`, from the cache when fresh. A process that cannot be read (exited,
    /// or `/proc` hides it) gets only the node name.
    pub fn for_pid(&mut self, pid: u32) -> &ProcessMetadata {
        let now = Instant::now();
        let cached = self
            .cache
            .get(&pid)
            .map(|c| (c.read_at, c.names_missing, c.index_generation));
        let fresh = cached.is_some_and(|(read_at, names_missing, generation)| {
            // Names still missing are looked up again once the kubelet's directories are
            // re-read (the container may have started after the last read).
            now.duration_since(read_at) < PROCESS_TTL
                && !(names_missing && self.refresh_index_if_due(now, generation))
        });
        if !fresh {
            let resolved = self.resolve(pid, now);
            self.cache.insert(pid, resolved);
        }
        &self.cache[&pid].metadata
    }

    /// Adds to every sample of a containerized process its container and Kubernetes labels,
    /// named after the OTel attributes with `.` turned into `_` (`k8s_pod_name`), the form
    /// Pyroscope/Prometheus-style label selectors accept. Host processes get none.
    pub fn label_samples(&mut self, profile: &mut Profile) {
        let mut by_pid: HashMap<u32, Vec<(String, String)>> = HashMap::new();
        for sample in &mut profile.samples {
            let labels = by_pid.entry(sample.pid).or_insert_with(|| {
                let metadata = self.for_pid(sample.pid);
                if metadata.container_id.is_none() && metadata.pod_uid.is_none() {
                    return Vec::new();
                }
                metadata
                    .attributes()
                    .into_iter()
                    .map(|(name, value)| (name.replace('.', "_"), value.to_string()))
                    .collect()
            });
            sample.labels.extend(labels.iter().cloned());
        }
    }

    /// Drops what is cached for `pid` (call it when the process exits: pids are recycled).
    pub fn forget(&mut self, pid: u32) {
        self.cache.remove(&pid);
    }

    /// Whether names can be resolved here, and from where, for the start-up report.
    pub fn describe(&mut self) -> String {
        self.refresh_index_if_due(Instant::now(), u64::MAX);
        match &self.index {
            Some(index) => format!(
                "container ids from cgroups; pod/namespace/container names from {} and {} \
                 ({} containers, {} pods)",
                self.containers_dir.display(),
                self.pods_dir.display(),
                index.containers.len(),
                index.pods.len()
            ),
            None => format!(
                "container ids from cgroups; no names ({} and {} not readable: mount them from \
                 the host to get pod, namespace and container names)",
                self.containers_dir.display(),
                self.pods_dir.display()
            ),
        }
    }

    fn resolve(&mut self, pid: u32, now: Instant) -> Cached {
        let info = fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup")))
            .map(|content| cgroup::parse(&content))
            .unwrap_or_default();
        let mut metadata = ProcessMetadata {
            container_id: info.container_id,
            pod_uid: info.pod_uid,
            node_name: self.node_name.clone(),
            runtime: info.runtime,
            ..ProcessMetadata::default()
        };
        let wants_names = metadata.container_id.is_some() || metadata.pod_uid.is_some();
        if wants_names && !self.fill_names(&mut metadata) {
            self.refresh_index_if_due(now, self.index_generation);
            self.fill_names(&mut metadata);
        }
        Cached {
            names_missing: wants_names && metadata.pod_name.is_none(),
            metadata,
            read_at: now,
            index_generation: self.index_generation,
        }
    }

    /// Fills the names from the index; true when the pod was found.
    fn fill_names(&self, metadata: &mut ProcessMetadata) -> bool {
        let Some(index) = &self.index else {
            return false;
        };
        if let Some(names) = metadata
            .container_id
            .as_ref()
            .and_then(|id| index.containers.get(id))
        {
            metadata.pod_name = Some(names.pod_name.clone());
            metadata.workload = workload::workload_of(&names.pod_name);
            metadata.namespace = Some(names.namespace.clone());
            metadata.container_name = Some(names.container_name.clone());
            if metadata.pod_uid.is_none() {
                metadata.pod_uid = names.pod_uid.clone();
            }
            return true;
        }
        if let Some(pod) = metadata
            .pod_uid
            .as_ref()
            .and_then(|uid| index.pods.get(uid))
        {
            metadata.pod_name = Some(pod.pod_name.clone());
            metadata.workload = workload::workload_of(&pod.pod_name);
            metadata.namespace = Some(pod.namespace.clone());
            return true;
        }
        false
    }

    /// Re-reads the kubelet's directories unless they were read less than [`INDEX_REFRESH`]
    /// ago; true when the index is newer than `seen_generation` afterwards.
    fn refresh_index_if_due(&mut self, now: Instant, seen_generation: u64) -> bool {
        let due = self
            .index_read_at
            .is_none_or(|at| now.duration_since(at) >= INDEX_REFRESH);
        if due {
            self.index_read_at = Some(now);
            self.index = LogIndex::read(&self.containers_dir, &self.pods_dir).ok();
            // Without the directories there is nothing new to look names up in.
            if self.index.is_some() {
                self.index_generation += 1;
            }
        }
        self.index_generation > seen_generation
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2b4e9f31c7d8a0e5f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3";
    const UID: &str = "6d6b5ba0-b8a8-4d1a-9c1e-6a8a0e5b5b6f";

    /// A fake node: `/proc/<pid>/cgroup` files and the kubelet's log directories.
    struct Node {
        root: PathBuf,
    }

    impl Node {
        fn new(name: &str) -> Node {
            let root = std::env::temp_dir()
                .join(format!("profiler-metadata-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            for dir in ["proc", "containers", "pods"] {
                fs::create_dir_all(root.join(dir)).expect("create fake node dirs");
            }
            Node { root }
        }

        fn process(&self, pid: u32, cgroup: &str) {
            let dir = self.root.join(format!("proc/{pid}"));
            fs::create_dir_all(&dir).expect("create fake /proc/PID");
            fs::write(dir.join("cgroup"), cgroup).expect("write fake cgroup");
        }

        fn container(&self, pod: &str, namespace: &str, container: &str, uid: &str, id: &str) {
            let pod_dir = self.root.join(format!("pods/{namespace}_{pod}_{uid}"));
            fs::create_dir_all(pod_dir.join(container)).expect("create pod log dir");
            std::os::unix::fs::symlink(
                pod_dir.join(format!("{container}/0.log")),
                self.root
                    .join(format!("containers/{pod}_{namespace}_{container}-{id}.log")),
            )
            .expect("create log link");
        }

        fn metadata(&self) -> Metadata {
            Metadata::with_paths(
                self.root.join("proc"),
                self.root.join("containers"),
                self.root.join("pods"),
                Some("node-a".to_string()),
            )
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// A node where pid 42 runs container `app` of pod `shop/web-0` (containerd, systemd
    /// cgroups) and pid 1 is a host process.
    fn pod_node(label: &str) -> Node {
        let node = Node::new(label);
        node.process(
            42,
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
                UID.replace('-', "_")
            ),
        );
        node.process(1, "0::/init.scope\n");
        node.container("web-0", "shop", "app", UID, ID);
        node
    }

    #[test]
    fn resolves_ids_and_names_of_a_pod_container() {
        let node = pod_node("names");
        let mut metadata = node.metadata();

        let found = metadata.for_pid(42).clone();
        assert_eq!(found.container_id.as_deref(), Some(ID));
        assert_eq!(found.pod_uid.as_deref(), Some(UID));
        assert_eq!(found.pod_name.as_deref(), Some("web-0"));
        assert_eq!(found.namespace.as_deref(), Some("shop"));
        assert_eq!(found.container_name.as_deref(), Some("app"));
        assert_eq!(found.node_name.as_deref(), Some("node-a"));
        assert_eq!(found.runtime, Some("containerd"));
        assert_eq!(
            found.attributes(),
            vec![
                ("container.id", ID),
                ("k8s.pod.uid", UID),
                ("k8s.pod.name", "web-0"),
                ("k8s.namespace.name", "shop"),
                ("k8s.container.name", "app"),
                ("k8s.node.name", "node-a"),
                ("k8s.statefulset.name", "web"),
            ]
        );
        assert_eq!(
            found.service_name(),
            Some("web"),
            "the workload names the service"
        );

        let host = metadata.for_pid(1).clone();
        assert_eq!(host.attributes(), vec![("k8s.node.name", "node-a")]);
        assert_eq!(host.service_name(), None);
        // Gone processes get the node only.
        assert_eq!(
            metadata.for_pid(7).attributes(),
            vec![("k8s.node.name", "node-a")]
        );
        assert!(metadata.describe().contains("1 containers, 1 pods"));
    }

    #[test]
    fn degrades_to_ids_without_the_kubelet_directories() {
        let node = Node::new("ids-only");
        node.process(
            42,
            &format!("4:memory:/kubepods/besteffort/pod{UID}/{ID}\n"),
        );
        let mut metadata = Metadata::with_paths(
            node.root.join("proc"),
            node.root.join("not-mounted"),
            node.root.join("not-mounted-either"),
            None,
        );
        let found = metadata.for_pid(42).clone();
        assert_eq!(found.container_id.as_deref(), Some(ID));
        assert_eq!(found.pod_uid.as_deref(), Some(UID));
        assert_eq!(found.pod_name, None);
        assert_eq!(found.container_name, None);
        assert_eq!(
            found.attributes(),
            vec![("container.id", ID), ("k8s.pod.uid", UID)]
        );
        assert!(metadata.describe().contains("no names"));
    }

    #[test]
    fn labels_samples_of_containers_only() {
        let node = pod_node("labels");
        let sample = |pid| crate::profile::Sample {
            pid,
            tid: pid,
            comm: "x".into(),
            stack: Vec::new(),
            count: 1,
            labels: Vec::new(),
        };
        let mut profile = Profile {
            samples: vec![sample(42), sample(1), sample(42)],
            ..Profile::default()
        };
        node.metadata().label_samples(&mut profile);
        let label = |sample: &crate::profile::Sample, name: &str| {
            sample
                .labels
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        for pod_sample in [&profile.samples[0], &profile.samples[2]] {
            assert_eq!(label(pod_sample, "container_id").as_deref(), Some(ID));
            assert_eq!(label(pod_sample, "k8s_pod_name").as_deref(), Some("web-0"));
            assert_eq!(
                label(pod_sample, "k8s_namespace_name").as_deref(),
                Some("shop")
            );
            assert_eq!(
                label(pod_sample, "k8s_container_name").as_deref(),
                Some("app")
            );
        }
        assert!(
            profile.samples[1].labels.is_empty(),
            "host processes get no labels"
        );
    }

    #[test]
    fn caches_until_forgotten() {
        let node = Node::new("cache");
        node.process(42, &format!("0::/system.slice/docker-{ID}.scope\n"));
        let mut metadata = node.metadata();
        assert_eq!(metadata.for_pid(42).container_id.as_deref(), Some(ID));
        // The pid is recycled by a host process: the cache answers until told.
        node.process(42, "0::/user.slice\n");
        assert_eq!(metadata.for_pid(42).container_id.as_deref(), Some(ID));
        metadata.forget(42);
        assert_eq!(metadata.for_pid(42).container_id, None);
    }

    #[test]
    fn a_pod_without_its_container_link_still_gets_pod_names() {
        let node = Node::new("pod-only");
        node.process(42, &format!("4:memory:/kubepods/pod{UID}/{ID}\n"));
        fs::create_dir_all(node.root.join(format!("pods/shop_web-0_{UID}"))).expect("pod dir");
        let mut metadata = node.metadata();
        let found = metadata.for_pid(42).clone();
        assert_eq!(found.pod_name.as_deref(), Some("web-0"));
        assert_eq!(found.namespace.as_deref(), Some("shop"));
        assert_eq!(found.container_name, None);
    }
}
