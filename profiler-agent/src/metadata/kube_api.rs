//! The Kubernetes API server, asked with the agent pod's service account for the pods of this
//! node: their owners (the workload) and the annotation and labels that name a service.
//!
//! [`KubeApi`] is a small blocking HTTPS client (rustls with the cluster's CA, one request per
//! connection) for the one call the agent makes:
//! `GET /api/v1/pods?fieldSelector=spec.nodeName=NODE&resourceVersion=0`. `resourceVersion=0`
//! lets the API server answer from its watch cache instead of etcd. [`PodSource`] makes that call
//! on its own thread when a process of an unknown pod shows up (at most every
//! [`MIN_FETCH_INTERVAL`]) and every [`RESYNC_INTERVAL`], and hands out the latest [`PodIndex`].
//! A refused token, missing RBAC or an unreachable API server only cost the names: the kubelet's
//! log directories ([`super::kubelet_logs`]) still give pod, namespace and container names.

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use super::pod_list::PodIndex;
use crate::{
    capture::http1,
    export::http::{ServerUrl, UrlError},
    tls::{self, TlsError, TlsTarget},
};

/// Where Kubernetes mounts the pod's service account: `token`, `ca.crt`, `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read; a node's pods list is a few MB at most (110 pods by default).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Least time between two listings.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Listing again without being asked picks up label and annotation changes.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Wait after a failed listing (the API server may be restarting; RBAC may be fixed later).
const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// `--kube-api`: whether and where the agent asks the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeApiMode {
    /// The cluster's API server when running in a pod (`KUBERNETES_SERVICE_HOST` set).
    Auto,
    Off,
    /// `https://HOST[:PORT]`.
    Url(String),
}

impl std::str::FromStr for KubeApiMode {
    type Err = String;

    fn from_str(text: &str) -> Result<KubeApiMode, String> {
        match text {
            "auto" => Ok(KubeApiMode::Auto),
            "off" => Ok(KubeApiMode::Off),
            url if url.starts_with("https://") => Ok(KubeApiMode::Url(url.to_string())),
            _ => Err(format!("`{text}` is not auto, off or an https:// URL")),
        }
    }
}

/// Starts listing this node's pods as `mode` asks. Problems are printed as warnings and leave
/// the agent without API names (`None`), never stop it.
pub fn start_pod_source(
    mode: &KubeApiMode,
    credentials: &Path,
    label_service_names: bool,
) -> Option<Arc<PodSource>> {
    let api = match mode {
        KubeApiMode::Off => return None,
        KubeApiMode::Auto => KubeApi::in_cluster(credentials),
        KubeApiMode::Url(url) => KubeApi::from_url(url, credentials).map(Some),
    };
    let api = match api {
        Ok(api) => api?,
        Err(error) => {
            eprintln!(
                "warning: kubernetes api off: {error}; pod names come from the kubelet's log \
                 directories only"
            );
            return None;
        }
    };
    if std::env::var_os("NODE_NAME").is_none() {
        eprintln!(
            "warning: NODE_NAME is not set (the DaemonSet sets it from spec.nodeName): listing \
             the pods of the node named like this host"
        );
    }
    let Some(node) = super::node_name() else {
        eprintln!("warning: kubernetes api off: neither NODE_NAME nor the hostname is readable");
        return None;
    };
    Some(PodSource::start(api, node, label_service_names))
}

/// Why the API server could not be asked, or what it answered instead of pods.
#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("bad api server url `{url}`: {why}")]
    Url { url: String, why: &'static str },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("request to {address} failed: {source}")]
    Io {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} answered {status}{hint}: {body}")]
    Status {
        address: String,
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("bad response from {address}: {why}")]
    Response { address: String, why: String },
    #[error("bad pod list from {address}: {source}")]
    Json {
        address: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client for one API server, authenticated by a service account token file.
pub struct KubeApi {
    host: String,
    port: u16,
    tls: TlsTarget,
    /// Read before each request: projected service account tokens are rotated by the kubelet.
    token_file: PathBuf,
}

impl KubeApi {
    /// The API server of the cluster this pod runs in (`KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`), with the service account files in `credentials`. `Ok(None)`
    /// outside a cluster.
    pub fn in_cluster(credentials: &Path) -> Result<Option<KubeApi>, KubeApiError> {
        let Some(host) = std::env::var("KUBERNETES_SERVICE_HOST")
            .ok()
            .filter(|host| !host.is_empty())
        else {
            return Ok(None);
        };
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()
            .and_then(|port| port.parse().ok())
            .unwrap_or(443);
        KubeApi::new(&host, port, credentials).map(Some)
    }

    /// The API server at `https://HOST[:PORT]` (port 443 by default; an IPv6 host in brackets).
    pub fn from_url(url: &str, credentials: &Path) -> Result<KubeApi, KubeApiError> {
        let bad = |why| KubeApiError::Url {
            url: url.to_string(),
            why,
        };
        let server =
            ServerUrl::parse(url).map_err(|UrlError::Unsupported { reason, .. }| bad(reason))?;
        if !server.tls {
            return Err(bad("it must start with https://"));
        }
        if !server.base_path.is_empty() {
            return Err(bad("only https://HOST[:PORT] is supported, without a path"));
        }
        KubeApi::new(&server.host, server.port, credentials)
    }

    /// `host` (a name or an IP address, without brackets) and `port`, with `ca.crt` and `token`
    /// read from `credentials`.
    pub fn new(host: &str, port: u16, credentials: &Path) -> Result<KubeApi, KubeApiError> {
        let token_file = credentials.join("token");
        read_token(&token_file)?;
        Ok(KubeApi {
            host: host.to_string(),
            port,
            tls: TlsTarget::new(Some(&credentials.join("ca.crt")), host)?,
            token_file,
        })
    }

    /// `HOST:PORT` (`[HOST]:PORT` for IPv6), for messages and the `Host` header.
    pub fn address(&self) -> String {
        tls::authority(&self.host, self.port)
    }

    /// The pods scheduled on `node`.
    pub fn node_pods(
        &self,
        node: &str,
        label_service_names: bool,
    ) -> Result<PodIndex, KubeApiError> {
        // Node names are DNS subdomains; anything else is escaped rather than trusted.
        let node: String = node
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let body = self.get(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}&resourceVersion=0"
        ))?;
        PodIndex::from_json(&body, label_service_names).map_err(|source| KubeApiError::Json {
            address: self.address(),
            source,
        })
    }

    /// GETs `path` and returns the body of a 200 answer.
    fn get(&self, path: &str) -> Result<Vec<u8>, KubeApiError> {
        let address = self.address();
        let token = read_token(&self.token_file)?;
        let io_error = |source| KubeApiError::Io {
            address: address.clone(),
            source,
        };
        let mut stream = tls::connect(
            &self.host,
            self.port,
            Some(&self.tls),
            CONNECT_TIMEOUT,
            IO_TIMEOUT,
        )
        .map_err(|source| KubeApiError::Connect {
            address: address.clone(),
            source,
        })?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: profiler-agent/{}\r\n\
             Accept: application/json\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
        );
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(io_error)?;
        let mut raw = Vec::new();
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buffer[..n]);
                    if raw.len() > MAX_RESPONSE_BYTES {
                        return Err(KubeApiError::Response {
                            address,
                            why: format!("longer than {MAX_RESPONSE_BYTES} bytes"),
                        });
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // A peer closing without TLS close_notify: whether the response is whole is
                // decided from its framing below.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(error) => return Err(io_error(error)),
            }
        }
        let (status, body) = response_body(&raw).map_err(|why| KubeApiError::Response {
            address: address.clone(),
            why,
        })?;
        if status != 200 {
            let hint = match status {
                401 => " (the service account token was refused)",
                403 => {
                    " (the service account may not list pods: apply the ClusterRole in \
                     deploy/kubernetes/10-agent-rbac.yaml, or set agent.rbac.create in the chart)"
                }
                _ => "",
            };
            let text = String::from_utf8_lossy(&body);
            return Err(KubeApiError::Status {
                address,
                status,
                hint,
                body: text.chars().take(300).collect(),
            });
        }
        Ok(body)
    }
}

fn read_token(path: &Path) -> Result<String, KubeApiError> {
    let token = fs::read_to_string(path).map_err(|source| KubeApiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(token.trim().to_string())
}

/// The status and the (de-chunked) body of a whole HTTP/1.1 response.
fn response_body(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head = http1::parse_response(raw).map_err(|error| error.to_string())?;
    if !head.head_complete {
        return Err("the connection closed inside the response head".to_string());
    }
    let body = &raw[head.head_len..];
    let body = if head.chunked {
        http1::decode_chunked(body).map_err(|error| format!("chunked body: {error}"))?
    } else if let Some(length) = head.content_length {
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        body.get(..length)
            .ok_or_else(|| format!("body has {} of {length} bytes", body.len()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((head.status, body))
}

/// The pods of this node, listed by a background thread when asked.
#[derive(Debug)]
pub struct PodSource {
    state: Mutex<SourceState>,
    changed: Condvar,
    /// [`MIN_FETCH_INTERVAL`], shorter in tests.
    min_interval: Duration,
}

#[derive(Debug)]
struct SourceState {
    index: Arc<PodIndex>,
    /// Bumped by every successful listing.
    generation: u64,
    /// When the last successful listing started.
    listing_started: Option<Instant>,
    /// A listing finished (or failed) at least once.
    tried: bool,
    /// Someone asked for a listing.
    wanted: bool,
    last_error: Option<String>,
    stats: PodSourceStats,
}

/// What the listings did so far, for the agent's own metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodSourceStats {
    pub listings_ok: u64,
    pub listings_failed: u64,
    /// Pods of the last good listing.
    pub pods: u64,
}

impl PodSource {
    /// Starts the thread listing `node`'s pods from `api`; the first listing starts at once.
    pub fn start(api: KubeApi, node: String, label_service_names: bool) -> Arc<PodSource> {
        PodSource::start_with_interval(api, node, label_service_names, MIN_FETCH_INTERVAL)
    }

    fn start_with_interval(
        api: KubeApi,
        node: String,
        label_service_names: bool,
        min_interval: Duration,
    ) -> Arc<PodSource> {
        let source = Arc::new(PodSource {
            state: Mutex::new(SourceState {
                index: Arc::new(PodIndex::default()),
                generation: 0,
                listing_started: None,
                tried: false,
                wanted: true,
                last_error: None,
                stats: PodSourceStats::default(),
            }),
            changed: Condvar::new(),
            min_interval,
        });
        let shared = source.clone();
        let spawned = thread::Builder::new()
            .name("kube-api".to_string())
            .spawn(move || shared.run(&api, &node, label_service_names));
        if let Err(error) = spawned {
            eprintln!("warning: kubernetes api: cannot start its thread: {error}");
            source.lock().tried = true;
        }
        source
    }

    /// The latest listing and its generation (0: none yet).
    pub fn snapshot(&self) -> (Arc<PodIndex>, u64) {
        let state = self.lock();
        (state.index.clone(), state.generation)
    }

    /// Whether the last successful listing started before `at` (or there is none yet).
    pub fn listed_before(&self, at: Instant) -> bool {
        self.lock()
            .listing_started
            .is_none_or(|started| started < at)
    }

    /// Asks for a listing soon (a process of a pod not in the last one showed up).
    pub fn request(&self) {
        let mut state = self.lock();
        if !state.wanted {
            state.wanted = true;
            self.changed.notify_all();
        }
    }

    /// Waits up to `timeout` for the first listing to finish (or fail).
    pub fn wait_first(&self, timeout: Duration) {
        let state = self.lock();
        let _unused = self
            .changed
            .wait_timeout_while(state, timeout, |state| !state.tried);
    }

    /// Counts of listings so far.
    pub fn stats(&self) -> PodSourceStats {
        self.lock().stats
    }

    /// The last listing's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, SourceState> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self, api: &KubeApi, node: &str, label_service_names: bool) {
        let mut listed_at: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let result = api.node_pods(node, label_service_names);
            let mut state = self.lock();
            state.tried = true;
            let pause = match result {
                Ok(index) => {
                    if state.generation == 0 || state.last_error.is_some() {
                        eprintln!(
                            "kubernetes api: {} pods of node {node} from {} (workloads, \
                             service names from annotations{})",
                            index.len(),
                            api.address(),
                            if label_service_names {
                                " and labels"
                            } else {
                                ""
                            }
                        );
                    }
                    state.stats.listings_ok += 1;
                    state.stats.pods = index.len() as u64;
                    state.index = Arc::new(index);
                    state.generation += 1;
                    state.listing_started = Some(started);
                    state.last_error = None;
                    listed_at = Some(Instant::now());
                    self.min_interval
                }
                Err(error) => {
                    let message = error.to_string();
                    if state.last_error.as_ref() != Some(&message) {
                        eprintln!(
                            "warning: kubernetes api: {message}; pod names come from the \
                             kubelet's log directories only, retrying every {} s",
                            RETRY_INTERVAL.as_secs()
                        );
                    }
                    state.last_error = Some(message);
                    state.stats.listings_failed += 1;
                    RETRY_INTERVAL
                }
            };
            state.wanted = false;
            self.changed.notify_all();
            drop(state);
            thread::sleep(pause);
            // Sleep until asked, or until the listing is due for a resync.
            let mut state = self.lock();
            while !state.wanted && listed_at.is_some_and(|at| at.elapsed() < RESYNC_INTERVAL) {
                let wait = listed_at
                    .map(|at| RESYNC_INTERVAL.saturating_sub(at.elapsed()))
                    .unwrap_or_default();
                state = self
                    .changed
                    .wait_timeout(state, wait)
                    .map(|(state, _)| state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use crate::metadata::pod_list::tests::POD_LIST;
    pub use crate::tls::tests::serve;
    use crate::tls::tests::{CA, SERVER_CERT};
    pub const TOKEN: &str = "test-token-Zm9vYmFy";

    /// A service account directory (`ca.crt`, `token`) trusting the test CA.
    pub fn credentials(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "profiler-kube-credentials-{name}-{}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create credentials dir");
        fs::write(dir.join("ca.crt"), CA).expect("write ca.crt");
        fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("write token");
        dir
    }

    /// A chunked 200 response carrying `body` in 1000-byte chunks.
    pub fn chunked_ok(body: &str) -> Vec<u8> {
        let mut response =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for chunk in body.as_bytes().chunks(1000) {
            response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            response.extend_from_slice(chunk);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        response
    }

    #[test]
    fn lists_the_pods_of_a_node_over_tls() {
        let (port, server) = serve(1, |_| chunked_ok(POD_LIST));
        let api = KubeApi::from_url(&format!("https://localhost:{port}"), &credentials("list"))
            .expect("client");
        let index = api.node_pods("node-1", true).expect("pods");
        assert_eq!(index.len(), 7);
        let heads = server.join().expect("server");
        let head = &heads[0];
        assert!(
            head.starts_with(
                "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&resourceVersion=0 HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nAuthorization: Bearer {TOKEN}\r\n")),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nHost: localhost:{port}\r\n")),
            "{head}"
        );
    }

    #[test]
    fn reads_content_length_bodies_by_ip_address() {
        let (port, server) = serve(1, |_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{POD_LIST}",
                POD_LIST.len()
            )
            .into_bytes()
        });
        // The certificate names 127.0.0.1 as an IP address, as API server certificates name
        // the service IP that KUBERNETES_SERVICE_HOST gives.
        let api = KubeApi::new("127.0.0.1", port, &credentials("ip")).expect("client");
        assert_eq!(api.node_pods("node-1", false).expect("pods").len(), 7);
        server.join().expect("server");
    }

    #[test]
    fn refusals_explain_themselves() {
        let (port, server) = serve(1, |_| {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods is forbidden: User \"system:serviceaccount:profiler:profiler-agent\" cannot list resource \"pods\"","reason":"Forbidden","code":403}"#;
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        });
        let api = KubeApi::new("127.0.0.1", port, &credentials("forbidden")).expect("client");
        let error = api
            .node_pods("node-1", true)
            .expect_err("forbidden")
            .to_string();
        assert!(error.contains("answered 403"), "{error}");
        assert!(error.contains("10-agent-rbac.yaml"), "{error}");
        assert!(error.contains("cannot list resource"), "{error}");
        server.join().expect("server");
    }

    #[test]
    fn an_unknown_certificate_authority_is_refused() {
        let (port, server) = serve(1, |_| chunked_ok(POD_LIST));
        let dir = credentials("other-ca");
        // A CA that did not sign the server's certificate (the server certificate itself is
        // not a CA).
        fs::write(dir.join("ca.crt"), SERVER_CERT).expect("write ca.crt");
        let api = KubeApi::new("127.0.0.1", port, &dir).expect("client");
        let error = api
            .node_pods("node-1", true)
            .expect_err("untrusted")
            .to_string();
        assert!(error.contains("request to 127.0.0.1"), "{error}");
        server.join().expect("server");
    }

    #[test]
    fn truncated_responses_are_errors() {
        let (port, server) = serve(1, |_| {
            let mut response = chunked_ok(POD_LIST);
            response.truncate(response.len() / 2);
            response
        });
        let api = KubeApi::new("127.0.0.1", port, &credentials("truncated")).expect("client");
        let error = api
            .node_pods("node-1", true)
            .expect_err("truncated")
            .to_string();
        assert!(error.contains("chunked body"), "{error}");
        server.join().expect("server");
    }

    #[test]
    fn bad_urls_and_missing_files_are_errors() {
        let credentials = credentials("urls");
        for url in [
            "http://10.96.0.1",
            "https://",
            "https://host/path",
            "https://host:port",
        ] {
            assert!(KubeApi::from_url(url, &credentials).is_err(), "{url}");
        }
        let missing = Path::new("/nonexistent/serviceaccount");
        let error = KubeApi::new("10.96.0.1", 443, missing)
            .err()
            .expect("missing files");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/serviceaccount/token"),
            "{error}"
        );
        let api = KubeApi::from_url("https://[::1]:6443", &credentials).expect("ipv6");
        assert_eq!(api.address(), "[::1]:6443");
    }

    #[test]
    fn the_source_lists_again_when_asked_and_keeps_the_last_listing_on_errors() {
        let (port, server) = serve(2, |head| {
            if head.contains("Bearer") && !head.contains("second") {
                chunked_ok(POD_LIST)
            } else {
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()
            }
        });
        let dir = credentials("source");
        let api = KubeApi::new("127.0.0.1", port, &dir).expect("client");
        let source = PodSource::start_with_interval(
            api,
            "node-1".to_string(),
            true,
            Duration::from_millis(10),
        );
        source.wait_first(Duration::from_secs(10));
        let (index, generation) = source.snapshot();
        assert_eq!((index.len(), generation), (7, 1));
        assert_eq!(source.last_error(), None);
        // The token is re-read for every request (the kubelet rotates it).
        fs::write(dir.join("token"), "second-token").expect("rotate token");
        source.request();
        let deadline = Instant::now() + Duration::from_secs(10);
        while source.last_error().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let error = source.last_error().expect("the second listing failed");
        assert!(
            error.contains("answered 401 (the service account token was refused)"),
            "{error}"
        );
        assert_eq!(
            source.snapshot().0.len(),
            7,
            "the last good listing is kept"
        );
        let heads = server.join().expect("server");
        assert!(heads[1].contains("Bearer second-token"), "{}", heads[1]);
    }

    proptest::proptest! {
        #[test]
        fn any_response_bytes_are_an_answer_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            head in proptest::sample::select(vec!["", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"]),
        ) {
            let mut raw = head.as_bytes().to_vec();
            raw.extend_from_slice(&bytes);
            if let Ok((_, body)) = response_body(&raw) {
                proptest::prop_assert!(body.len() <= raw.len());
            }
        }
    }
}
