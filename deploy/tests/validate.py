#!/usr/bin/env python3
"""Offline validation of deploy/: lints the Helm chart and renders it with several value sets
(Helm 4 embedded in helm-python-sdk, no helm binary, no cluster), then validates every rendered
manifest and every file of deploy/kubernetes/ against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors), and checks what the schemas cannot: the agent's privileges,
mounts and arguments, the server's probes and storage, and that the plain manifests and the chart
agree.

    python3 -m pip install kubernetes-validate==1.37.0 helm-python-sdk==0.2.2
    python3 deploy/tests/validate.py [--kube-version 1.31.0]

Exit status: 0 valid, 1 invalid, 77 skipped (python modules missing; `skipping: ...` printed).
Run by profiler-agent/tests/deploy.rs under `cargo test`, which fails instead of skipping under CI.
"""

import argparse
import base64
import copy
import pathlib
import sys

SKIPPED = 77
PIP = "python3 -m pip install kubernetes-validate==1.37.0 helm-python-sdk==0.2.2"

try:
    import yaml
    from kubernetes_validate import utils as kubernetes_validate
    import helm_python as helm
except ImportError as error:  # pragma: no cover - depends on the machine
    print(f"skipping: python modules missing ({error}); install them with: {PIP}")
    sys.exit(SKIPPED)

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
CHART = DEPLOY / "helm" / "profiler"
MANIFESTS = DEPLOY / "kubernetes"

# The least-privilege set measured in deploy/README.md, in Kubernetes' spelling.
CAPABILITIES = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "CHECKPOINT_RESTORE", "SYSLOG"]

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}")


def check(condition, message):
    if not condition:
        fail(message)
    return condition


class StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (Kubernetes' decoder refuses them too)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def documents(text, origin):
    try:
        return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc]
    except yaml.YAMLError as error:
        fail(f"{origin}: not valid YAML: {error}")
        return []


def validate_schema(doc, origin, kube_version):
    name = f"{origin}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        fail(f"{name} is invalid for Kubernetes {kube_version}: {path}: {error.message}")
        return False
    except kubernetes_validate.SchemaNotFoundError as error:
        fail(f"{name}: no schema ({error.message})")
        return False
    return True


def by_kind(docs, kind):
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs, kind, origin):
    found = by_kind(docs, kind)
    check(len(found) == 1, f"{origin}: expected one {kind}, found {len(found)}")
    return found[0] if found else {}


def env_of(container):
    return {entry["name"]: entry for entry in container.get("env", [])}


def check_agent(daemonset, origin, mode, expect_auth, extra_caps=()):
    spec = daemonset["spec"]["template"]["spec"]
    check(spec.get("hostPID") is True, f"{origin}: the agent needs hostPID: true")
    check(
        {"operator": "Exists"} in spec.get("tolerations", []),
        f"{origin}: the agent must tolerate every taint to run on every node",
    )
    container = spec["containers"][0]
    args = container.get("args", [])
    check(args[:2] == ["run", "--server"], f"{origin}: agent args {args} must start with run --server")
    env = env_of(container)
    node_name = env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {})
    check(
        node_name.get("fieldPath") == "spec.nodeName",
        f"{origin}: NODE_NAME must come from the downward API (spec.nodeName)",
    )
    check(
        ("PROFILER_AUTH_TOKEN" in env) == expect_auth,
        f"{origin}: PROFILER_AUTH_TOKEN on the agent: expected {expect_auth}",
    )
    resources = container.get("resources", {})
    check(
        resources.get("requests") == {"cpu": "50m", "memory": "128Mi"}
        and resources.get("limits") == {"cpu": "500m", "memory": "256Mi"},
        f"{origin}: agent resources {resources}",
    )
    security = container.get("securityContext", {})
    mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
    for path in ["/sys/kernel/tracing", "/sys/fs/bpf", "/run/profiler-agent"]:
        check(path in mounts, f"{origin}: the agent must mount {path}")
    check(
        mounts.get("/run/profiler-agent", {}).get("readOnly") is not True,
        f"{origin}: the kernel symbol cache must be writable",
    )
    hostpaths = {
        volume["name"]: volume["hostPath"]["path"]
        for volume in spec.get("volumes", [])
        if "hostPath" in volume
    }
    for mount in mounts.values():
        if mount["name"] in hostpaths:
            check(
                hostpaths[mount["name"]] == mount["mountPath"],
                f"{origin}: {mount['name']} mounts host {hostpaths[mount['name']]} at "
                f"{mount['mountPath']}",
            )
    if mode == "privileged":
        check(security.get("privileged") is True, f"{origin}: privileged mode without privileged: true")
        check("capabilities" not in security, f"{origin}: privileged mode lists capabilities")
    else:
        check(security.get("privileged") is not True, f"{origin}: capabilities mode is privileged")
        caps = security.get("capabilities", {})
        check(caps.get("drop") == ["ALL"], f"{origin}: capabilities mode must drop ALL first")
        check(
            caps.get("add") == CAPABILITIES + list(extra_caps),
            f"{origin}: capabilities {caps.get('add')}, expected {CAPABILITIES + list(extra_caps)}",
        )
        check("SYS_ADMIN" not in caps.get("add", []), f"{origin}: CAP_SYS_ADMIN is not needed")
        check(
            security.get("allowPrivilegeEscalation") is False,
            f"{origin}: capabilities mode must set allowPrivilegeEscalation: false",
        )
        check(
            mounts.get("/sys/kernel/tracing", {}).get("readOnly") is True,
            f"{origin}: without CAP_SYS_ADMIN tracefs comes read-only from the host",
        )
    return args


def check_server(docs, origin, expect_auth):
    deployment = one(docs, "Deployment", origin)
    if not deployment:
        return
    spec = deployment["spec"]
    check(spec.get("replicas") == 1, f"{origin}: the server runs one replica")
    pod = spec["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    check(pod_security.get("runAsNonRoot") is True, f"{origin}: the server must run as non-root")
    check(pod_security.get("runAsUser", 0) != 0, f"{origin}: the server's uid must not be 0")
    container = pod["containers"][0]
    args = container.get("args", [])
    for flag, value in [
        ("--data-dir", "/var/lib/profiler"),
        ("--listen", "0.0.0.0:4040"),
        ("--otlp-listen", "0.0.0.0:4317"),
    ]:
        check(
            flag in args and args[args.index(flag) + 1] == value,
            f"{origin}: server args {args} need {flag} {value}",
        )
    check(
        container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
        f"{origin}: readiness probe must be /readyz",
    )
    check(
        container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
        f"{origin}: liveness probe must be /healthz",
    )
    check(
        ("PROFILER_AUTH_TOKEN" in env_of(container)) == expect_auth,
        f"{origin}: PROFILER_AUTH_TOKEN on the server: expected {expect_auth}",
    )
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    check("/var/lib/profiler" in mounts, f"{origin}: the server must mount its data directory")
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    check(ports == {"http": 4040, "otlp-grpc": 4317}, f"{origin}: server ports {ports}")
    service = one(docs, "Service", origin)
    service_ports = {port["name"]: port["port"] for port in service.get("spec", {}).get("ports", [])}
    check(
        service_ports == {"http": 4040, "otlp-grpc": 4317},
        f"{origin}: service ports {service_ports}",
    )
    return pod


def lint(values, label, kube_version):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": error} for error in report.get("errors", []) if error]
    for problem in problems:
        fail(f"helm lint ({label}): {problem.get('path', '')}: {problem.get('error')}")
    if not problems:
        print(f"ok: helm lint --strict ({label})")


def render(values, label):
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="profiler", namespace="profiler", is_install=True)
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        docs += documents(text, f"{label}: {template}")
    return docs


def merged(base, override):
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


# (label, values, expectations)
VALUE_SETS = [
    ("default values", {}, {}),
    ("capabilities mode", {"agent": {"securityMode": "capabilities"}}, {"mode": "capabilities"}),
    (
        "capabilities mode on kernels < 5.11",
        {"agent": {"securityMode": "capabilities", "extraCapabilities": ["SYS_RESOURCE"]}},
        {"mode": "capabilities", "extra_caps": ["SYS_RESOURCE"]},
    ),
    (
        "token value, frequency, interval, storage class",
        {
            "auth": {"token": "s3cret"},
            "agent": {"frequencyHz": 49, "uploadIntervalSeconds": 30},
            "server": {"persistence": {"size": "50Gi", "storageClass": "fast-ssd"}},
        },
        {"auth": True, "frequency": "49", "interval": "30", "size": "50Gi", "class": "fast-ssd"},
    ),
    (
        "existing secret, external https server with its CA, node selection",
        {
            "auth": {"existingSecret": "team-token", "existingSecretKey": "bearer"},
            "agent": {
                "serverUrl": "https://profiler.example.internal",
                "serverCAConfigMap": "profiler-ca",
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"operator": "Exists"}],
            },
            "server": {"enabled": False},
        },
        {"auth": True, "server": False, "url": "https://profiler.example.internal",
         "server_ca": "profiler-ca"},
    ),
    (
        "no BTF, no kubelet dirs, no RBAC, no persistence",
        {
            "agent": {
                "mountBTF": False,
                "mountKubeletLogDirs": False,
                "rbac": {"create": False},
                "serviceAccount": {"create": False},
                "kubeApi": "off",
                "kubeLabelServiceNames": False,
            },
            "server": {"persistence": {"enabled": False}},
        },
        {"pvc": False, "rbac": False, "kube_api": "off", "label_names": "false"},
    ),
]


def check_chart(kube_version):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    check(defaults["agent"]["securityMode"] == "privileged", "privileged must be the default mode")
    chart_caps = None
    for label, values, expect in VALUE_SETS:
        lint(values, label, kube_version)
        try:
            docs = render(values, label)
        except helm.HelmError as error:
            fail(f"helm template ({label}): {error}")
            continue
        valid = all([validate_schema(doc, f"chart ({label})", kube_version) for doc in docs])
        origin = f"chart ({label})"
        effective = merged(defaults, values)
        expect_auth = expect.get("auth", False)
        daemonset = one(docs, "DaemonSet", origin)
        if daemonset:
            args = check_agent(
                daemonset, origin, expect.get("mode", "privileged"), expect_auth,
                expect.get("extra_caps", ()),
            )
            url = expect.get("url", "http://profiler-server.profiler.svc:4040")
            check(args[2] == url, f"{origin}: server URL {args[2]}, expected {url}")
            for flag, value in [
                ("--frequency", expect.get("frequency", "19")),
                ("--upload-interval", expect.get("interval", "10")),
                ("--kube-api", expect.get("kube_api", "auto")),
                ("--kube-label-service-names", expect.get("label_names", "true")),
            ]:
                check(
                    flag in args and args[args.index(flag) + 1] == value,
                    f"{origin}: agent args {args} need {flag} {value}",
                )
            pod = daemonset["spec"]["template"]["spec"]
            ca_volumes = [v for v in pod.get("volumes", []) if v["name"] == "server-ca"]
            if expect.get("server_ca"):
                check(
                    "--server-ca" in args
                    and args[args.index("--server-ca") + 1] == "/etc/profiler/server-ca/ca.crt",
                    f"{origin}: agent args {args} need --server-ca /etc/profiler/server-ca/ca.crt",
                )
                check(
                    [v.get("configMap", {}).get("name") for v in ca_volumes]
                    == [expect["server_ca"]],
                    f"{origin}: the server CA ConfigMap is not mounted: {ca_volumes}",
                )
            else:
                check(
                    "--server-ca" not in args and not ca_volumes,
                    f"{origin}: --server-ca without agent.serverCAConfigMap",
                )
            if expect.get("mode") == "capabilities" and not expect.get("extra_caps"):
                chart_caps = daemonset["spec"]["template"]["spec"]["containers"][0][
                    "securityContext"]["capabilities"]["add"]
            if effective["agent"]["nodeSelector"]:
                check(
                    daemonset["spec"]["template"]["spec"].get("nodeSelector")
                    == effective["agent"]["nodeSelector"],
                    f"{origin}: nodeSelector not applied",
                )
        if expect.get("server", True):
            check_server(docs, origin, expect_auth)
            pvcs = by_kind(docs, "PersistentVolumeClaim")
            if expect.get("pvc", True):
                pvc = one(docs, "PersistentVolumeClaim", origin)
                if pvc:
                    spec = pvc["spec"]
                    check(
                        spec["resources"]["requests"]["storage"] == expect.get("size", "10Gi"),
                        f"{origin}: PVC size {spec['resources']['requests']['storage']}",
                    )
                    check(
                        spec.get("storageClassName") == expect.get("class"),
                        f"{origin}: PVC storage class {spec.get('storageClassName')}",
                    )
            else:
                check(not pvcs, f"{origin}: persistence disabled but a PVC is rendered")
        else:
            check(not by_kind(docs, "Deployment"), f"{origin}: server disabled but rendered")
        secrets = by_kind(docs, "Secret")
        if "token" in values.get("auth", {}):
            check(len(secrets) == 1, f"{origin}: a token value must create one Secret")
            if secrets:
                token = base64.b64decode(secrets[0]["data"]["token"]).decode()
                check(token == values["auth"]["token"], f"{origin}: Secret holds the wrong token")
        else:
            check(not secrets, f"{origin}: no Secret expected")
        check(
            bool(by_kind(docs, "ClusterRole")) == expect.get("rbac", True),
            f"{origin}: ClusterRole expected: {expect.get('rbac', True)}",
        )
        for role in by_kind(docs, "ClusterRole"):
            check_agent_role(role, origin)
        if valid:
            print(f"ok: chart ({label}): {len(docs)} manifests valid for Kubernetes {kube_version}")

    # Values the schema or the templates must refuse.
    for label, values in [
        ("unknown security mode", {"agent": {"securityMode": "root"}}),
        ("server disabled without a server URL", {"server": {"enabled": False}}),
        ("a server URL that is neither http nor https", {"agent": {"serverUrl": "ftp://x"}}),
    ]:
        try:
            render(values, label)
            fail(f"helm template accepted {label}")
        except helm.HelmError:
            print(f"ok: helm template refuses {label}")
    return chart_caps


# All the agent asks the API server: the pods of its node (GET /api/v1/pods?fieldSelector=...).
AGENT_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]


def check_agent_role(role, origin):
    check(
        role.get("rules") == AGENT_RULES,
        f"{origin}: the agent's ClusterRole grants {role.get('rules')}, expected {AGENT_RULES}",
    )


def check_manifests(kube_version, chart_caps):
    files = sorted(MANIFESTS.rglob("*.yaml")) + sorted(MANIFESTS.rglob("*.yml"))
    check(files, f"no manifests under {MANIFESTS}")
    all_docs = {}
    for path in files:
        origin = str(path.relative_to(DEPLOY.parent))
        docs = documents(path.read_text(), origin)
        check(docs, f"{origin}: no Kubernetes objects")
        valid = all([validate_schema(doc, origin, kube_version) for doc in docs])
        for doc in docs:
            if doc.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                check(
                    doc.get("metadata", {}).get("namespace") == "profiler",
                    f"{origin}: {doc.get('kind')} outside namespace profiler",
                )
        all_docs[path.relative_to(MANIFESTS).as_posix()] = docs
        if valid:
            print(f"ok: {origin}: {len(docs)} objects valid for Kubernetes {kube_version}")

    top = [doc for name, docs in all_docs.items() if "/" not in name for doc in docs]
    kinds = sorted(doc["kind"] for doc in top)
    check(
        kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                         "DaemonSet", "PersistentVolumeClaim", "Deployment", "Service"]),
        f"deploy/kubernetes/: unexpected set of objects {kinds}",
    )
    names = sorted(all_docs)
    check(names[0].startswith("00-") and "Namespace" in [d["kind"] for d in all_docs[names[0]]],
          "the Namespace must come first in `kubectl apply -f deploy/kubernetes/` order")
    role = one(top, "ClusterRole", "deploy/kubernetes/")
    if role:
        check_agent_role(role, "deploy/kubernetes/")
    daemonset = one(top, "DaemonSet", "deploy/kubernetes/")
    if daemonset:
        check_agent(daemonset, "deploy/kubernetes/ agent", "privileged", expect_auth=True)
    check_server(top, "deploy/kubernetes/ server", expect_auth=True)
    least = all_docs.get("least-privilege/agent-daemonset.yaml", [])
    check(least, "deploy/kubernetes/least-privilege/agent-daemonset.yaml is missing")
    if least:
        lp = one(least, "DaemonSet", "least-privilege")
        check_agent(lp, "deploy/kubernetes/least-privilege", "capabilities", expect_auth=True)
        if daemonset:
            check(
                lp["metadata"]["name"] == daemonset["metadata"]["name"],
                "the least-privilege DaemonSet must replace the privileged one (same name)",
            )
        if chart_caps is not None:
            check(
                lp["spec"]["template"]["spec"]["containers"][0]["securityContext"][
                    "capabilities"]["add"] == chart_caps,
                "the chart and deploy/kubernetes/least-privilege grant different capabilities",
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kube-version", default="1.31.0")
    args = parser.parse_args()
    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk), kubernetes-validate schemas "
          f"{kubernetes_validate.all_versions()[0]}..{kubernetes_validate.latest_version()}")
    chart_caps = check_chart(args.kube_version)
    check_manifests(args.kube_version, chart_caps)
    if failures:
        print(f"{len(failures)} problem(s) in deploy/")
        return 1
    print("deploy/: all manifests valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
