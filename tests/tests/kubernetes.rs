//! Kubernetes metadata end to end (root): a process moved into a cgroup laid out as the kubelet
//! lays out a pod's container (cgroupfs driver), an API server played by a Go `net/http` TLS
//! server (the HTTP stack kube-apiserver is built on) listing that pod, and `profiler-agent run`
//! uploading to a real `profiler-server` behind nginx terminating TLS (as an ingress would). The
//! stored profiles must carry the pod's names, its workload from the owner reference, and the
//! service name from its annotation.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    agent_binary, eventually, fixture, free_port, http_get, require_gcc, require_sampler,
    require_tool, spawn_captured, wait_with_timeout, workspace_root, Background, TempDir,
    AGENT_TIMEOUT,
};

const POD_UID: &str = "6f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8";
const CONTAINER_ID: &str = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e";
const NODE: &str = "node-7";

/// Lists `pods.json` on `GET /api/v1/pods` for a bearer token, over TLS; logs each request to
/// stderr. Writes without a Content-Length, so the listing goes out chunked as the API
/// server's do.
const GO_API_SERVER: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	pods, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/api/v1/pods", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(os.Stderr, "request %s %s\n", r.URL.String(), r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer "+os.Args[5] {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i < len(pods); i += 1000 {
			end := i + 1000
			if end > len(pods) {
				end = len(pods)
			}
			w.Write(pods[i:end])
			w.(http.Flusher).Flush()
		}
	})
	err = http.ListenAndServeTLS("127.0.0.1:"+os.Args[4], os.Args[2], os.Args[3], nil)
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
"#;

/// One pod of a Deployment, named by annotation, running container `burner` with
/// [`CONTAINER_ID`] (and a sidecar, to be told apart).
fn pod_list() -> String {
    serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1234"},
        "items": [{
            "metadata": {
                "name": "checkout-5c8f7d9b6-q7x2z",
                "namespace": "shop",
                "uid": POD_UID,
                "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "5c8f7d9b6"},
                "annotations": {"resource.opentelemetry.io/service.name": "checkout-api"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5c8f7d9b6",
                    "uid": "11111111-2222-4333-8444-555555555555", "controller": true
                }]
            },
            "spec": {"nodeName": NODE, "containers": [{"name": "burner"}, {"name": "envoy"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "envoy", "containerID": format!("containerd://{}", "ab".repeat(32))},
                    {"name": "burner", "containerID": format!("containerd://{CONTAINER_ID}")}
                ]
            }
        }]
    })
    .to_string()
}

/// A cgroup `kubepods/besteffort/pod<uid>/<container id>` in the first hierarchy found (cgroup
/// v2 at /sys/fs/cgroup, or the v2 or `pids` v1 hierarchy of a hybrid layout), removed on drop.
struct PodCgroup {
    root: PathBuf,
    leaf: PathBuf,
}

impl PodCgroup {
    fn create() -> PodCgroup {
        let root = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/pids",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|root| root.join("cgroup.procs").exists())
        .expect("no cgroup hierarchy under /sys/fs/cgroup to move the fixture into");
        let leaf = root.join(format!("kubepods/besteffort/pod{POD_UID}/{CONTAINER_ID}"));
        fs::create_dir_all(&leaf)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", leaf.display()));
        PodCgroup { root, leaf }
    }

    fn enter(&self, pid: u32) {
        let procs = self.leaf.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut file| file.write_all(pid.to_string().as_bytes()))
            .unwrap_or_else(|error| {
                panic!("cannot move pid {pid} into {}: {error}", procs.display())
            });
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Innermost first; a cgroup with processes left refuses (the fixture is gone by now).
        let mut dir = self.leaf.clone();
        while dir != self.root {
            let _ = fs::remove_dir(&dir);
            if !dir.pop() {
                break;
            }
        }
    }
}

/// The values of label `name` in the server's profiles of the last 10 minutes.
fn label_values(api_port: u16, name: &str) -> Vec<String> {
    let (_, body) = http_get(
        api_port,
        &format!("/api/v1/labels/{name}/values?from=now-10m&until=now%2B1m"),
    );
    let values: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    values["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|value| value.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// nginx terminating TLS with the test certificate on `tls_port` in front of 127.0.0.1:`port`.
fn tls_proxy(dir: &Path, testdata: &Path, tls_port: u16, port: u16) -> Background {
    let config = dir.join("nginx.conf");
    fs::write(
        &config,
        format!(
            "master_process off;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  \
             server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    client_max_body_size 64m;\n    \
             location / {{ proxy_pass http://127.0.0.1:{port}; }}\n  }}\n}}\n",
            dir = dir.display(),
            cert = testdata.join("server.crt").display(),
            key = testdata.join("server.key").display(),
        ),
    )
    .expect("nginx.conf");
    Background::spawn(
        Path::new("nginx"),
        &[
            "-p".to_string(),
            dir.display().to_string(),
            "-c".to_string(),
            config.display().to_string(),
            "-e".to_string(),
            dir.join("nginx.log").display().to_string(),
        ],
    )
}

#[test]
fn run_in_a_pod_names_profiles_from_the_api_server_and_uploads_over_tls() {
    const TEST: &str = "run_in_a_pod_names_profiles_from_the_api_server_and_uploads_over_tls";
    if !require_sampler(TEST)
        || !require_gcc(TEST)
        || !require_tool(TEST, "go", &["version"], "golang-go")
        || !require_tool(TEST, "nginx", &["-v"], "nginx-light")
    {
        return;
    }
    let dir = TempDir::new("kubernetes");
    let testdata = workspace_root().join("profiler-agent/src/metadata/testdata");
    let credentials = dir.path().join("serviceaccount");
    fs::create_dir_all(&credentials).expect("credentials dir");
    fs::copy(testdata.join("ca.crt"), credentials.join("ca.crt")).expect("ca.crt");
    let token = "e2e-token-4f1c";
    fs::write(credentials.join("token"), token).expect("token");
    fs::write(dir.path().join("pods.json"), pod_list()).expect("pods.json");

    let api_server = tests::go_build(dir.path(), GO_API_SERVER, "apiserver");
    let kube_port = free_port();
    let mut api = Command::new(&api_server);
    api.arg(dir.path().join("pods.json"))
        .arg(testdata.join("server.crt"))
        .arg(testdata.join("server.key"))
        .arg(kube_port.to_string())
        .arg(token)
        .stdout(Stdio::null());
    let api = spawn_captured(&mut api);

    let (_server, api_port, _) = tests::start_server(dir.path());
    let tls_port = free_port();
    let _proxy = tls_proxy(dir.path(), &testdata, tls_port, api_port);
    eventually("nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });

    let cgroup = PodCgroup::create();
    let burner = Background::spawn(&fixture("burn3"), &["60"]);
    cgroup.enter(burner.pid());

    let mut agent = Command::new(agent_binary());
    agent
        .args([
            "run",
            "--server",
            &format!("https://localhost:{tls_port}"),
            "--server-ca",
        ])
        .arg(testdata.join("ca.crt"))
        .args([
            "--pid",
            &burner.pid().to_string(),
            "--no-http",
            "-F",
            "99",
            "--upload-interval",
            "2",
            "--telemetry-listen",
            "off",
            "--kube-api",
            &format!("https://127.0.0.1:{kube_port}"),
            "--kube-credentials",
        ])
        .arg(&credentials)
        .env("NODE_NAME", NODE);
    let agent = spawn_captured(&mut agent);

    let services = eventually("profiles of service checkout-api", || {
        let (_, body) = http_get(api_port, "/api/v1/services?from=now-10m&until=now%2B1m");
        let services: Value = serde_json::from_str(&body).ok()?;
        let names: Vec<String> = services["services"]
            .as_array()?
            .iter()
            .filter_map(|service| service["name"].as_str().map(String::from))
            .collect();
        names
            .iter()
            .any(|name| name == "checkout-api")
            .then_some(names)
    });
    assert_eq!(
        services,
        ["checkout-api"],
        "one service, named by the annotation"
    );
    for (label, value) in [
        ("k8s_pod_name", "checkout-5c8f7d9b6-q7x2z"),
        ("k8s_namespace_name", "shop"),
        ("k8s_container_name", "burner"),
        ("k8s_deployment_name", "checkout"),
        ("k8s_pod_uid", POD_UID),
        ("container_id", CONTAINER_ID),
        ("k8s_node_name", NODE),
    ] {
        assert_eq!(label_values(api_port, label), [value], "label {label}");
    }

    drop(burner);
    let status = Command::new("kill")
        .args(["-INT", &agent.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let output = wait_with_timeout(agent, AGENT_TIMEOUT, "profiler-agent run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "kubernetes api: 1 pods of node {NODE} from 127.0.0.1:{kube_port}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("warning: kubernetes api"), "{stderr}");
    drop(cgroup);

    let _ = Command::new("kill").arg(api.id().to_string()).status();
    let api_output = wait_with_timeout(api, Duration::from_secs(10), "the Go API server");
    let api_log = String::from_utf8_lossy(&api_output.stderr);
    assert!(
        api_log.contains(&format!(
            "request /api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}&resourceVersion=0 Bearer {token}"
        )),
        "{api_log}"
    );
}
