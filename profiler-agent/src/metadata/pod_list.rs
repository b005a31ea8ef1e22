//! The pods of a node as the Kubernetes API server lists them (`GET /api/v1/pods`), reduced to
//! what the agent attaches to samples, spans and metrics: names, the workload from the pod's
//! owner, the service name the pod asks for, and its containers' ids. Pure: no IO.
//!
//! The service name follows OpenTelemetry's Kubernetes conventions
//! (<https://opentelemetry.io/docs/specs/semconv/non-normative/k8s-attributes/>): the pod
//! annotation `resource.opentelemetry.io/service.name`, then (unless turned off) the well-known
//! labels `app.kubernetes.io/instance` and `app.kubernetes.io/name`; without those,
//! [`super::ProcessMetadata::service_name`] falls back to the workload, pod and container names.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::workload::Workload;

/// The pod annotation that names the service (OpenTelemetry).
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// Well-known labels that name the service, in the order OpenTelemetry gives.
pub const SERVICE_NAME_LABELS: [&str; 2] = ["app.kubernetes.io/instance", "app.kubernetes.io/name"];

/// One pod, as far as the agent uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// From the controlling owner reference.
    pub workload: Option<Workload>,
    /// From the annotation or the well-known labels; `None` when the pod has none of them.
    pub service_name: Option<String>,
}

/// The pods of one listing, by uid, and their containers, by container id.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, PodInfo>,
    /// Container id (64 hex digits) → (pod uid, container name).
    containers: HashMap<String, (String, String)>,
}

impl PodIndex {
    /// Reads a `PodList` (JSON). With `label_service_names` false only the annotation names
    /// services (OpenTelemetry asks tools to let users opt out of reading well-known labels).
    pub fn from_json(
        bytes: &[u8],
        label_service_names: bool,
    ) -> Result<PodIndex, serde_json::Error> {
        let list: PodList = serde_json::from_slice(bytes)?;
        let mut index = PodIndex::default();
        for pod in list.items {
            let meta = pod.metadata;
            if meta.uid.is_empty() {
                continue;
            }
            let status = pod.status;
            for container in status
                .container_statuses
                .into_iter()
                .chain(status.init_container_statuses)
                .chain(status.ephemeral_container_statuses)
            {
                if let Some(id) = container_id(&container.container_id) {
                    index
                        .containers
                        .insert(id, (meta.uid.clone(), container.name));
                }
            }
            let service_name = meta
                .annotations
                .get(SERVICE_NAME_ANNOTATION)
                .into_iter()
                .chain(
                    SERVICE_NAME_LABELS
                        .iter()
                        .filter(|_| label_service_names)
                        .filter_map(|label| meta.labels.get(*label)),
                )
                .find(|name| !name.trim().is_empty())
                .cloned();
            let workload = workload_of(&meta.owner_references, &meta.labels);
            index.pods.insert(
                meta.uid.clone(),
                PodInfo {
                    uid: meta.uid,
                    name: meta.name,
                    namespace: meta.namespace,
                    workload,
                    service_name,
                },
            );
        }
        Ok(index)
    }

    /// The pod with this uid.
    pub fn pod(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    /// The pod running the container with this id, and the container's name.
    pub fn container(&self, id: &str) -> Option<(&PodInfo, &str)> {
        let (uid, name) = self.containers.get(id)?;
        Some((self.pods.get(uid)?, name))
    }

    /// Number of pods listed.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` → `<id>` when it is 64 hex digits (the
/// form the cgroup path gives); a container not started yet has no id.
fn container_id(field: &str) -> Option<String> {
    let (_, id) = field.split_once("://")?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The workload from the controlling owner reference (else the first one).
///
/// A ReplicaSet whose name is `<deployment>-<pod-template-hash>` belongs to that Deployment. A
/// Job named `<cronjob>-<scheduled minute, 8 or more digits>` was started by that CronJob (the
/// pod does not name the CronJob itself; the OpenTelemetry Collector reads it the same way).
fn workload_of(owners: &[OwnerReference], labels: &BTreeMap<String, String>) -> Option<Workload> {
    let owner = owners
        .iter()
        .find(|owner| owner.controller == Some(true))
        .or(owners.first())?;
    let name = owner.name.clone();
    let workload = |attribute: &'static str, name: String| Workload {
        attribute: Some(attribute),
        name,
    };
    Some(match owner.kind.as_str() {
        "ReplicaSet" => {
            let deployment = labels
                .get("pod-template-hash")
                .and_then(|hash| name.strip_suffix(hash.as_str())?.strip_suffix('-'))
                .filter(|deployment| !deployment.is_empty());
            match deployment {
                Some(deployment) => workload("k8s.deployment.name", deployment.to_string()),
                None => workload("k8s.replicaset.name", name),
            }
        }
        "StatefulSet" => workload("k8s.statefulset.name", name),
        "DaemonSet" => workload("k8s.daemonset.name", name),
        "Job" => match name.rsplit_once('-') {
            Some((cronjob, minute))
                if !cronjob.is_empty()
                    && minute.len() >= 8
                    && minute.bytes().all(|b| b.is_ascii_digit()) =>
            {
                workload("k8s.cronjob.name", cronjob.to_string())
            }
            _ => workload("k8s.job.name", name),
        },
        // Static pods are "owned" by their Node: no workload.
        "Node" => return None,
        _ => Workload {
            attribute: None,
            name,
        },
    })
}

/// The parts of `v1.PodList` the agent reads; everything else is skipped by serde.
#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ObjectMeta {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct OwnerReference {
    kind: String,
    name: String,
    controller: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    container_statuses: Vec<ContainerStatus>,
    init_container_statuses: Vec<ContainerStatus>,
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ContainerStatus {
    name: String,
    #[serde(rename = "containerID")]
    container_id: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node's pod list in the shape `kubectl get --raw '/api/v1/pods?fieldSelector=...'`
    /// returns (fields the agent skips trimmed, ids made up).
    pub const POD_LIST: &str = include_str!("testdata/pod-list.json");

    pub const CHECKOUT_ID: &str =
        "4c7f5a1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a";

    fn index(labels: bool) -> PodIndex {
        PodIndex::from_json(POD_LIST.as_bytes(), labels).expect("pod list")
    }

    #[test]
    fn reads_pods_and_containers() {
        let index = index(true);
        assert_eq!(index.len(), 7);
        let (pod, container) = index.container(CHECKOUT_ID).expect("checkout container");
        assert_eq!(container, "server");
        assert_eq!(pod.name, "checkout-7d4b9c6f8-x2k9p");
        assert_eq!(pod.namespace, "shop");
        assert_eq!(pod.uid, "9f0a3c2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b");
        // cri-o and docker ids, an init container, an uppercase id from an odd runtime.
        let (pod, container) = index
            .container("b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2")
            .expect("init container");
        assert_eq!(
            (pod.name.as_str(), container),
            ("postgres-0", "init-schema")
        );
        assert!(index
            .container("e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6")
            .is_some());
        // A container still waiting has no id: its pod is known, the container is not.
        assert!(index.pod("3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d").is_some());
    }

    #[test]
    fn workloads_come_from_owners() {
        let index = index(true);
        let workload = |uid: &str| {
            let workload = index.pod(uid).expect("pod").workload.clone();
            workload.map(|w| (w.attribute, w.name))
        };
        assert_eq!(
            workload("9f0a3c2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b"),
            Some((Some("k8s.deployment.name"), "checkout".to_string()))
        );
        assert_eq!(
            workload("1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
            Some((Some("k8s.statefulset.name"), "postgres".to_string()))
        );
        assert_eq!(
            workload("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"),
            Some((Some("k8s.daemonset.name"), "fluent-bit".to_string()))
        );
        assert_eq!(
            workload("7a8b9c0d-1e2f-4a3b-b4c5-d6e7f8a9b0c1"),
            Some((Some("k8s.cronjob.name"), "nightly-report".to_string()))
        );
        assert_eq!(
            workload("3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d"),
            Some((Some("k8s.job.name"), "migrate".to_string()))
        );
        // A static pod (owned by its node) and a bare pod have no workload.
        assert_eq!(workload("d4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f7a"), None);
        assert_eq!(workload("0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"), None);
    }

    #[test]
    fn service_names_follow_opentelemetry_order() {
        let service =
            |index: &PodIndex, uid: &str| index.pod(uid).expect("pod").service_name.clone();
        let with_labels = index(true);
        // The annotation wins over the labels.
        assert_eq!(
            service(&with_labels, "9f0a3c2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b").as_deref(),
            Some("checkout-api")
        );
        // app.kubernetes.io/instance before app.kubernetes.io/name.
        assert_eq!(
            service(&with_labels, "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f").as_deref(),
            Some("orders-db")
        );
        assert_eq!(
            service(&with_labels, "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9").as_deref(),
            Some("fluent-bit")
        );
        assert_eq!(
            service(&with_labels, "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"),
            None
        );
        let without_labels = index(false);
        assert_eq!(
            service(&without_labels, "9f0a3c2e-1b4d-4e5f-8a6b-7c8d9e0f1a2b").as_deref(),
            Some("checkout-api")
        );
        assert_eq!(
            service(&without_labels, "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
            None
        );
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(PodIndex::from_json(b"{\"items\": [", true).is_err());
        assert!(PodIndex::from_json(b"\"pods\"", true).is_err());
        assert!(PodIndex::from_json(br#"{"items": [{"metadata": 5}]}"#, true).is_err());
        // A status object (what a 4xx body is) has no items: an empty index.
        let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":403}"#;
        assert!(PodIndex::from_json(status, true)
            .expect("status")
            .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = PodIndex::from_json(&bytes, true);
        }

        #[test]
        fn damaged_pod_lists_never_panic(
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut bytes = POD_LIST.as_bytes().to_vec();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes.truncate(cut.index(bytes.len() + 1).max(at));
            let _ = PodIndex::from_json(&bytes, true);
        }
    }
}
