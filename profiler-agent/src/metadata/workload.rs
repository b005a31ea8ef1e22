//! The workload a pod belongs to, read from the pod's name alone (the agent needs no API server
//! access): controllers name their pods after themselves plus generated parts, from the same
//! alphabet Kubernetes uses for them (`bcdfghjklmnpqrstvwxz2456789`, no vowels, no 0/1/3).
//!
//! - Deployment: `<name>-<pod-template-hash, 6-10 chars>-<5 chars>` (`checkout-7d4b9c6f8-x2k9p`)
//! - StatefulSet: `<name>-<ordinal>` (`postgres-0`)
//! - DaemonSet, Job, bare ReplicaSet: `<name>-<5 chars>` (`fluent-bit-7xk2q`): the kind cannot be
//!   told apart, only the name.
//!
//! A pod named by hand in one of these shapes is read as a workload too; that only affects the
//! service name chosen for it (see [`super::ProcessMetadata::service_name`]).

/// A pod's controller, as far as its name tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The OTel attribute naming it (`k8s.deployment.name`, `k8s.statefulset.name`), or `None`
    /// when the kind is ambiguous.
    pub attribute: Option<&'static str>,
    pub name: String,
}

/// Characters of generated name parts (`k8s.io/apimachinery/pkg/util/rand`).
fn is_generated(part: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&part.len())
        && part
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// The workload of the pod named `pod_name`, if its name has a controller's shape.
pub fn workload_of(pod_name: &str) -> Option<Workload> {
    let parts: Vec<&str> = pod_name.split('-').collect();
    let name_of = |drop: usize| {
        let name = parts[..parts.len() - drop].join("-");
        (!name.is_empty()).then_some(name)
    };
    let last = *parts.last()?;
    if parts.len() >= 3 && is_generated(last, 5..=5) && is_generated(parts[parts.len() - 2], 6..=10)
    {
        return Some(Workload {
            attribute: Some("k8s.deployment.name"),
            name: name_of(2)?,
        });
    }
    if parts.len() >= 2 && is_generated(last, 5..=5) {
        return Some(Workload {
            attribute: None,
            name: name_of(1)?,
        });
    }
    if parts.len() >= 2
        && !last.is_empty()
        && last.len() <= 5
        && last.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(Workload {
            attribute: Some("k8s.statefulset.name"),
            name: name_of(1)?,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(attribute: Option<&'static str>, name: &str) -> Option<Workload> {
        Some(Workload {
            attribute,
            name: name.to_string(),
        })
    }

    #[test]
    fn reads_controllers_from_pod_names() {
        let deployment = Some("k8s.deployment.name");
        let statefulset = Some("k8s.statefulset.name");
        assert_eq!(
            workload_of("checkout-7d4b9c6f8-x2k9p"),
            workload(deployment, "checkout")
        );
        assert_eq!(
            workload_of("cart-service-5fbf8c4d7b-zq2lm"),
            workload(deployment, "cart-service")
        );
        assert_eq!(
            workload_of("coredns-5dd5756b68-7hqkz"),
            workload(deployment, "coredns")
        );
        assert_eq!(workload_of("postgres-0"), workload(statefulset, "postgres"));
        assert_eq!(workload_of("web-12"), workload(statefulset, "web"));
        assert_eq!(
            workload_of("fluent-bit-7xk2q"),
            workload(None, "fluent-bit")
        );
        assert_eq!(
            workload_of("kube-proxy-wz2m9"),
            workload(None, "kube-proxy")
        );
    }

    #[test]
    fn leaves_other_names_alone() {
        // Static pods end in the node name; hand-made pods have no generated part.
        assert_eq!(workload_of("etcd-control-plane"), None);
        assert_eq!(workload_of("debug"), None);
        assert_eq!(workload_of(""), None);
        // A vowel or a 1 cannot be generated.
        assert_eq!(workload_of("app-hello"), None);
        assert_eq!(workload_of("app-x1y2z"), None);
        // Nothing left once the generated parts are gone.
        assert_eq!(workload_of("-x2k9p"), None);
        assert_eq!(workload_of("-0"), None);
    }
}
