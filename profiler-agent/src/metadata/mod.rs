//! Who a process is in Kubernetes terms: container and pod ids, pod, namespace and container
//! names, the workload, the service name the pod asks for, and the node, for the OTel resource
//! attributes `container.id`, `k8s.pod.uid`, `k8s.pod.name`, `k8s.namespace.name`,
//! `k8s.container.name`, `k8s.node.name`, `k8s.<workload>.name` and `service.name`.
//!
//! Start at [`Metadata::for_pid`]. Ids come from `/proc/PID/cgroup` ([`cgroup`], pure parsing).
//! Names come from two sources, each optional:
//! - the API server ([`kube_api`]: the pods of this node, listed with the agent's service
//!   account), which also gives the workload from the pod's owner and the service name from its
//!   annotation or well-known labels ([`pod_list`]);
//! - the kubelet's log directory names ([`kubelet_logs`]), which the DaemonSet mounts read-only:
//!   no API server, no TLS, no RBAC needed; the workload is then read from the pod name
//!   ([`workload`]).
//!
//! Whatever cannot be read (not a container, not on a Kubernetes node, no API access,
//! directories not mounted) is left `None`: the ids still come through without the names.

pub mod cgroup;
pub mod kube_api;
pub mod kubelet_logs;
pub mod pod_list;
pub mod workload;

use crate::profile::Profile;
use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use kube_api::PodSource;
use kubelet_logs::LogIndex;

/// How long a process's metadata is trusted before `/proc/PID/cgroup` is read again (guards
/// against a recycled pid when the exit was not reported through [`Metadata::forget`]).
const PROCESS_TTL: Duration = Duration::from_secs(60);
/// Least time between two reads of the kubelet's log directories, when a container is not
/// found in them (it may have just started).
const INDEX_REFRESH: Duration = Duration::from_secs(10);
/// A container's id reaches the API server's pod status a little after its processes start:
/// a process not found is asked about until a listing started this long after it was first
/// seen. Processes of containers outside Kubernetes stop costing listings after that.
const LISTING_GRACE: Duration = Duration::from_secs(5);
/// How long the first lookup of a containerized process waits for the first API listing.
const FIRST_LISTING_WAIT: Duration = Duration::from_secs(5);

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
    /// With dashes, from the cgroup path (or the API server, or the kubelet's log links).
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub container_name: Option<String>,
    /// `NODE_NAME` (the downward API in the DaemonSet) or this machine's hostname.
    pub node_name: Option<String>,
    /// `containerd`, `cri-o`, `docker` or `podman`, when the cgroup path tells.
    pub runtime: Option<&'static str>,
    /// The pod's controller: its owner from the API server, else read from the pod name
    /// ([`workload`]).
    pub workload: Option<workload::Workload>,
    /// The service name the pod asks for (annotation or well-known label, API server only).
    pub service: Option<String>,
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
    /// the pod's own choice ([`pod_list`]), else the workload's name, else the pod's, else the
    /// container's. `None` off Kubernetes.
    pub fn service_name(&self) -> Option<&str> {
        self.service
            .as_deref()
            .or(self.workload.as_ref().map(|w| w.name.as_str()))
            .or(self.pod_name.as_deref())
            .or(self.container_name.as_deref())
    }
}

struct Cached {
    metadata: ProcessMetadata,
    read_at: Instant,
    /// When the pid was first looked up (kept when it is looked up again).
    first_seen: Instant,
    /// A container id or pod uid was found but its names were not, or not from every source.
    names_missing: bool,
    /// [`Metadata::generation`] when the names were looked up.
    generation: u64,
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
    /// The API server's listings, when the agent may ask it.
    pods: Option<Arc<PodSource>>,
    waited_for_pods: bool,
    cache: HashMap<u32, Cached>,
}

/// The node this agent runs on: `NODE_NAME` (the DaemonSet sets it from the downward API), else
/// the hostname.
pub fn node_name() -> Option<String> {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(host_name)
}

/// This machine's (or this container's UTS namespace's) hostname; "unknown" when unreadable.
pub fn host_name_or_unknown() -> String {
    host_name().unwrap_or_else(|| "unknown".to_string())
}

fn host_name() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
}

impl Metadata {
    /// Reads `/proc`, the kubelet's directories at their usual places, and the API server's
    /// listings from `pods` when given.
    pub fn new(pods: Option<Arc<PodSource>>) -> Metadata {
        let (containers_dir, pods_dir) = kubelet_logs::default_dirs();
        let mut metadata = Metadata::with_paths(
            PathBuf::from("/proc"),
            containers_dir,
            pods_dir,
            node_name(),
        );
        metadata.pods = pods;
        metadata
    }

    /// Reads other places (tests, or a host filesystem mounted elsewhere); no API server.
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
            pods: None,
            waited_for_pods: false,
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
            .map(|c| (c.read_at, c.first_seen, c.names_missing, c.generation));
        let fresh = cached.is_some_and(|(read_at, first_seen, names_missing, generation)| {
            // Names still missing are looked up again once a source has something new (the
            // container may have started after the last read).
            now.duration_since(read_at) < PROCESS_TTL
                && !(names_missing && self.names_changed(now, first_seen, generation))
        });
        if !fresh {
            let first_seen = cached.map_or(now, |(_, first_seen, _, _)| first_seen);
            let resolved = self.resolve(pid, now, first_seen);
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

    /// Both sources' generations: grows whenever either has new names.
    fn generation(&self) -> u64 {
        self.index_generation + self.pods.as_ref().map_or(0, |pods| pods.snapshot().1)
    }

    /// Asks the sources for news about a process first seen at `first_seen` whose names are
    /// missing: the kubelet's directories are re-read when due, and the API server is asked for
    /// a listing unless one started well after the process appeared. True when names newer than
    /// `seen_generation` are there.
    fn names_changed(&mut self, now: Instant, first_seen: Instant, seen_generation: u64) -> bool {
        if let Some(pods) = &self.pods {
            if pods.listed_before(first_seen + LISTING_GRACE) {
                pods.request();
            }
        }
        self.refresh_index_if_due(now);
        self.generation() > seen_generation
    }

    fn resolve(&mut self, pid: u32, now: Instant, first_seen: Instant) -> Cached {
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
        let mut in_api = false;
        if wants_names {
            if let Some(pods) = &self.pods {
                if !self.waited_for_pods {
                    self.waited_for_pods = true;
                    pods.wait_first(FIRST_LISTING_WAIT);
                }
                in_api = fill_from_api(&pods.snapshot().0, &mut metadata);
            }
            if !self.fill_from_logs(&mut metadata) && metadata.pod_name.is_none() {
                self.refresh_index_if_due(now);
                self.fill_from_logs(&mut metadata);
            }
        }
        Cached {
            names_missing: wants_names
                && (metadata.pod_name.is_none() || (self.pods.is_some() && !in_api)),
            metadata,
            read_at: now,
            first_seen,
            generation: self.generation(),
        }
    }

    /// Fills from the kubelet's log directories what the API server did not give; true when
    /// the pod was found there.
    fn fill_from_logs(&self, metadata: &mut ProcessMetadata) -> bool {
        let Some(index) = &self.index else {
            return false;
        };
        let (names, container_name) = match metadata
            .container_id
            .as_ref()
            .and_then(|id| index.containers.get(id))
        {
            Some(names) => (
                (&names.pod_name, &names.namespace, &names.pod_uid),
                Some(&names.container_name),
            ),
            None => match metadata
                .pod_uid
                .as_ref()
                .and_then(|uid| index.pods.get(uid))
            {
                Some(pod) => ((&pod.pod_name, &pod.namespace, &None), None),
                None => return false,
            },
        };
        let (pod_name, namespace, pod_uid) = names;
        if metadata.pod_name.is_none() {
            metadata.pod_name = Some(pod_name.clone());
            metadata.namespace = Some(namespace.clone());
            metadata.workload = workload::workload_of(pod_name);
        }
        if metadata.container_name.is_none() {
            metadata.container_name = container_name.cloned();
        }
        if metadata.pod_uid.is_none() {
            metadata.pod_uid = pod_uid.clone();
        }
        true
    }

    /// Re-reads the kubelet's directories unless they were read less than [`INDEX_REFRESH`]
    /// ago.
    fn refresh_index_if_due(&mut self, now: Instant) {
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
    }
}

/// Fills names, workload and service from the API server's listing; true when the process's
/// container (or, for a container without an id in the pod's status yet, its pod) is there.
fn fill_from_api(index: &pod_list::PodIndex, metadata: &mut ProcessMetadata) -> bool {
    let by_container = metadata
        .container_id
        .as_deref()
        .and_then(|id| index.container(id));
    let Some(pod) = by_container
        .map(|(pod, _)| pod)
        .or_else(|| metadata.pod_uid.as_deref().and_then(|uid| index.pod(uid)))
    else {
        return false;
    };
    metadata.pod_uid = Some(pod.uid.clone());
    metadata.pod_name = Some(pod.name.clone());
    metadata.namespace = Some(pod.namespace.clone());
    metadata.workload = pod.workload.clone();
    metadata.service = pod.service_name.clone();
    metadata.container_name = by_container.map(|(_, name)| name.to_string());
    by_container.is_some()
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

    /// The checkout pod of `testdata/pod-list.json`, as the API server lists it.
    const CHECKOUT_UID: &str = "9f0a3c2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b";

    #[test]
    fn the_api_server_gives_workloads_and_service_names() {
        use kube_api::tests::{chunked_ok, credentials, serve, POD_LIST};
        use pod_list::tests::CHECKOUT_ID;

        let node = Node::new("api");
        let cgroup = |uid: &str, id: &str| {
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope\n",
                uid.replace('-', "_")
            )
        };
        node.process(42, &cgroup(CHECKOUT_UID, CHECKOUT_ID));
        // A container of a pod the listing does not have: the kubelet's directories name it.
        node.process(43, &cgroup(UID, ID));
        node.container("web-0", "shop", "app", UID, ID);
        node.process(1, "0::/init.scope\n");
        let (port, server) = serve(1, |_| chunked_ok(POD_LIST));
        let api =
            kube_api::KubeApi::new("127.0.0.1", port, &credentials("metadata")).expect("client");
        let mut metadata = node.metadata();
        metadata.pods = Some(PodSource::start(api, "node-a".to_string(), true));

        let found = metadata.for_pid(42).clone();
        assert_eq!(found.pod_name.as_deref(), Some("checkout-7d4b9c6f8-x2k9p"));
        assert_eq!(found.namespace.as_deref(), Some("shop"));
        assert_eq!(found.container_name.as_deref(), Some("server"));
        assert_eq!(
            found.service_name(),
            Some("checkout-api"),
            "the pod's annotation names the service"
        );
        assert!(found
            .attributes()
            .contains(&("k8s.deployment.name", "checkout")));
        server.join().expect("server");

        let from_logs = metadata.for_pid(43).clone();
        assert_eq!(from_logs.pod_name.as_deref(), Some("web-0"));
        assert_eq!(from_logs.container_name.as_deref(), Some("app"));
        assert_eq!(from_logs.service_name(), Some("web"));
        assert_eq!(metadata.for_pid(1).service_name(), None);

        let mut profile = Profile {
            samples: vec![crate::profile::Sample {
                pid: 42,
                tid: 42,
                comm: "server".into(),
                stack: Vec::new(),
                count: 1,
                labels: Vec::new(),
            }],
            ..Profile::default()
        };
        metadata.label_samples(&mut profile);
        let labels = &profile.samples[0].labels;
        for (name, value) in [
            ("k8s_pod_name", "checkout-7d4b9c6f8-x2k9p"),
            ("k8s_deployment_name", "checkout"),
            ("k8s_container_name", "server"),
        ] {
            assert!(
                labels.contains(&(name.to_string(), value.to_string())),
                "{name}={value} in {labels:?}"
            );
        }
    }
}
