//! Uploads profiles to the server over HTTP/1.1 from a background thread.
//!
//! The queue is bounded in bytes: when the server is down, profiles wait (the thread retries
//! with exponential backoff up to a minute) and the oldest are dropped, and counted, once the
//! queue is full. A 4xx answer other than 408/429 means the server will never take that
//! profile: it is dropped and counted. `https://` servers are reached over TLS ([`crate::tls`]),
//! trusting the system's CA bundle or the certificates given with `--server-ca`.

use std::{
    collections::VecDeque,
    io::{self, BufRead, BufReader, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::tls::{self, TlsTarget};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Errors of configuring the uploader.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("server URL `{url}` is not supported: {reason}")]
    Unsupported { url: String, reason: &'static str },
}

/// Where the server listens: `http[s]://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// `https://`: uploads go over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl ServerUrl {
    /// The host as it appears in a URL: IPv6 addresses in brackets.
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    pub fn parse(url: &str) -> Result<ServerUrl, UrlError> {
        let unsupported = |reason| UrlError::Unsupported {
            url: url.to_string(),
            reason,
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(unsupported("it must start with http:// or https://")),
        };
        let (authority, path) = match rest.find('/') {
            Some(index) => rest.split_at(index),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(unsupported("it needs a host (and no user info)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse()
                    .map_err(|_| unsupported("the port is not a number"))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        Ok(ServerUrl {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    fn host_header(&self) -> String {
        tls::authority(&self.host, self.port)
    }
}

/// One profile to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub service_name: String,
    /// Covered time range, seconds since the Unix epoch.
    pub from_unix_s: u64,
    pub until_unix_s: u64,
    /// Extra labels for every sample (`key=value` query parameters).
    pub labels: Vec<(String, String)>,
    /// gzip-compressed pprof.
    pub body: Vec<u8>,
}

/// Counters of the uploader, readable at any time.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped because the server rejected them (4xx).
    pub dropped_rejected: AtomicU64,
    pub queued_bytes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Upload>,
    bytes: usize,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: UploadStats,
}

/// The background uploader.
pub struct Uploader {
    shared: Arc<Shared>,
    max_queue_bytes: usize,
    thread: Option<JoinHandle<()>>,
}

impl Uploader {
    /// Starts the upload thread; `tls` is what an `https://` server is checked against.
    pub fn start(
        url: ServerUrl,
        tls: Option<TlsTarget>,
        auth_token: Option<String>,
        max_queue_bytes: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stats: UploadStats::default(),
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("uploader".into())
            .spawn(move || upload_loop(&worker, &url, tls.as_ref(), auth_token.as_deref()))
            .ok();
        Uploader {
            shared,
            max_queue_bytes,
            thread,
        }
    }

    /// Queues a profile, dropping the oldest ones if the queue would exceed its bound.
    pub fn push(&self, upload: Upload) {
        let mut queue = lock(&self.shared.queue);
        queue.bytes += upload.body.len();
        queue.items.push_back(upload);
        while queue.bytes > self.max_queue_bytes && queue.items.len() > 1 {
            if let Some(old) = queue.items.pop_front() {
                queue.bytes -= old.body.len();
                self.shared
                    .stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared
            .stats
            .queued_bytes
            .store(queue.bytes as u64, Ordering::Relaxed);
        drop(queue);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> &UploadStats {
        &self.shared.stats
    }

    /// Profiles still waiting.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).items.len()
    }

    /// Tries to send what is queued for up to `grace`, then stops the thread. Returns how many
    /// profiles were sent in all and how many were left unsent.
    pub fn shutdown(mut self, grace: Duration) -> (u64, usize) {
        let deadline = Instant::now() + grace;
        while self.queued() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (
            self.shared.stats.sent.load(Ordering::Relaxed),
            self.queued(),
        )
    }
}

fn lock(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave the queue inconsistent: keep going.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn upload_loop(shared: &Shared, url: &ServerUrl, tls: Option<&TlsTarget>, token: Option<&str>) {
    let mut backoff = Duration::ZERO;
    // The last failure printed: each new kind of failure is printed once (the counters and the
    // status line count them all).
    let mut last_failure = String::new();
    loop {
        let next = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.closing {
                    return;
                }
                if let Some(front) = queue.items.front() {
                    break front.clone();
                }
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let outcome = post(url, tls, token, &next);
        let done = match outcome {
            Ok(status) if (200..300).contains(&status) => {
                shared.stats.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
                eprintln!(
                    "warning: the server rejected a profile of {} (HTTP {status}); dropped",
                    next.service_name
                );
                shared
                    .stats
                    .dropped_rejected
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(_) | Err(_) => {
                let failure = match &outcome {
                    Ok(status) => format!("the server answered HTTP {status}"),
                    Err(error) => error.to_string(),
                };
                if failure != last_failure {
                    eprintln!(
                        "warning: uploading to {}://{}: {failure}; retrying",
                        if url.tls { "https" } else { "http" },
                        url.host_header()
                    );
                    last_failure = failure;
                }
                shared.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        let mut queue = lock(&shared.queue);
        if done {
            // The front may have been evicted meanwhile; remove it only if it is still there.
            if queue.items.front() == Some(&next) {
                if let Some(sent) = queue.items.pop_front() {
                    queue.bytes -= sent.body.len();
                }
            }
            shared
                .stats
                .queued_bytes
                .store(queue.bytes as u64, Ordering::Relaxed);
            backoff = Duration::ZERO;
            continue;
        }
        backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
        // Wait, but wake up at once for shutdown.
        let (guard, _) = shared
            .wake
            .wait_timeout_while(queue, backoff, |q| !q.closing)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.closing {
            return;
        }
    }
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request line and headers of an upload.
fn request_head(url: &ServerUrl, token: Option<&str>, upload: &Upload) -> String {
    let mut query = format!(
        "service_name={}&from={}&until={}",
        encode_component(&upload.service_name),
        upload.from_unix_s,
        upload.until_unix_s
    );
    for (key, value) in &upload.labels {
        query.push_str(&format!(
            "&{}={}",
            encode_component(key),
            encode_component(value)
        ));
    }
    let mut head = format!(
        "POST {}/api/v1/profiles?{query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: profiler-agent/{}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.base_path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        upload.body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Sends one upload and returns the HTTP status.
fn post(
    url: &ServerUrl,
    tls: Option<&TlsTarget>,
    token: Option<&str>,
    upload: &Upload,
) -> io::Result<u16> {
    let tls = if url.tls {
        Some(tls.ok_or_else(|| io::Error::other("an https:// server needs a TLS configuration"))?)
    } else {
        None
    };
    let mut stream = tls::connect(&url.host, url.port, tls, CONNECT_TIMEOUT, IO_TIMEOUT)?;
    stream.write_all(request_head(url, token, upload).as_bytes())?;
    stream.write_all(&upload.body)?;
    stream.flush()?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    parse_status(&status_line)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad HTTP status line"))
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{io::Read, net::TcpListener};

    use super::*;

    fn upload(body: &[u8]) -> Upload {
        Upload {
            service_name: "my app".into(),
            from_unix_s: 10,
            until_unix_s: 20,
            labels: vec![("host_name".into(), "node-1".into())],
            body: body.to_vec(),
        }
    }

    #[test]
    fn parses_server_urls() {
        let url = ServerUrl::parse("http://127.0.0.1:4040").expect("url");
        assert_eq!(
            (url.host.as_str(), url.port, url.base_path.as_str()),
            ("127.0.0.1", 4040, "")
        );
        let url = ServerUrl::parse("http://profiler.svc/base/").expect("url");
        assert_eq!(
            (url.host.as_str(), url.port, url.base_path.as_str()),
            ("profiler.svc", 80, "/base")
        );
        let url = ServerUrl::parse("http://[::1]:4040").expect("url");
        assert_eq!((url.host.as_str(), url.port), ("::1", 4040));
        assert_eq!(url.host_header(), "[::1]:4040");
        assert!(!url.tls);
        let url = ServerUrl::parse("https://profiler.example.com/").expect("url");
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.base_path.as_str()),
            (true, "profiler.example.com", 443, "")
        );
        for bad in [
            "https://",
            "ftp://x",
            "http://",
            "http://x:port",
            "http://u@x",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_requests() {
        let url = ServerUrl::parse("http://h:1/p").expect("url");
        let head = request_head(&url, Some("t0k"), &upload(b"abc"));
        assert!(head.starts_with(
            "POST /p/api/v1/profiles?service_name=my%20app&from=10&until=20&host_name=node-1 HTTP/1.1\r\n"
        ));
        assert!(head.contains("\r\nHost: h:1\r\n"));
        assert!(head.contains("\r\nContent-Length: 3\r\n"));
        assert!(head.contains("\r\nAuthorization: Bearer t0k\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(
            parse_status("HTTP/1.1 413 Payload Too Large\r\n"),
            Some(413)
        );
        assert_eq!(parse_status("garbage"), None);
    }

    /// A loopback server answering each connection with the next status of `statuses`, and
    /// returning the bodies it received.
    fn serve(statuses: Vec<u16>) -> (u16, JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let mut bodies = Vec::new();
            for status in statuses {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the body (after the blank line) has Content-Length bytes.
                loop {
                    let n = stream.read(&mut buf).expect("read");
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            bodies.push(request[end + 4..end + 4 + length].to_vec());
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                stream.write_all(reply.as_bytes()).expect("reply");
            }
            bodies
        });
        (port, handle)
    }

    #[test]
    fn retries_until_accepted_and_drops_rejected() {
        // 503 then 200 for the first profile, 400 for the second.
        let (port, server) = serve(vec![503, 200, 400]);
        let url = ServerUrl::parse(&format!("http://127.0.0.1:{port}")).expect("url");
        let uploader = Uploader::start(url, None, None, 1 << 20);
        uploader.push(upload(b"first"));
        uploader.push(upload(b"second"));
        uploader.shutdown(Duration::from_secs(10));
        let bodies = server.join().expect("server thread");
        assert_eq!(
            bodies,
            vec![b"first".to_vec(), b"first".to_vec(), b"second".to_vec()]
        );
    }

    #[test]
    fn bounded_queue_drops_oldest_when_the_server_is_down() {
        // Port 1 on loopback: connection refused, so everything stays queued.
        let url = ServerUrl::parse("http://127.0.0.1:1").expect("url");
        let uploader = Uploader::start(url, None, None, 10);
        for body in [b"aaaa", b"bbbb", b"cccc", b"dddd"] {
            uploader.push(upload(body));
        }
        assert_eq!(uploader.queued(), 2);
        assert_eq!(
            uploader.stats().dropped_queue_full.load(Ordering::Relaxed),
            2
        );
        assert_eq!(uploader.stats().queued_bytes.load(Ordering::Relaxed), 8);
        uploader.shutdown(Duration::ZERO);
    }

    #[test]
    fn uploads_to_an_https_server() {
        let (port, server) = crate::tls::tests::serve(2, |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
        });
        let url = ServerUrl::parse(&format!("https://localhost:{port}/base")).expect("url");
        let tls = TlsTarget::new(Some(&crate::tls::tests::ca_file("upload")), "localhost")
            .expect("test CA");
        let uploader = Uploader::start(url, Some(tls), Some("t0k".into()), 1 << 20);
        uploader.push(upload(b"first"));
        uploader.push(upload(b"second"));
        let (sent, left) = uploader.shutdown(Duration::from_secs(10));
        assert_eq!((sent, left), (2, 0));
        let requests = server.join().expect("server thread");
        assert!(
            requests[0].starts_with("POST /base/api/v1/profiles?service_name=my%20app"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("\r\nAuthorization: Bearer t0k\r\n"));
        assert!(requests[0].ends_with("\r\n\r\nfirst"), "{}", requests[0]);
        assert!(requests[1].ends_with("\r\n\r\nsecond"), "{}", requests[1]);
    }

    #[test]
    fn an_untrusted_https_server_gets_nothing() {
        let (port, server) = crate::tls::tests::serve(1, |_| {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
        });
        let url = ServerUrl::parse(&format!("https://127.0.0.1:{port}")).expect("url");
        // The machine's CAs did not sign the test certificate.
        let Ok(tls) = TlsTarget::new(None, "127.0.0.1") else {
            return;
        };
        let uploader = Uploader::start(url, Some(tls), None, 1 << 20);
        uploader.push(upload(b"secret"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while uploader.stats().failed_attempts.load(Ordering::Relaxed) == 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(uploader.stats().failed_attempts.load(Ordering::Relaxed) >= 1);
        assert_eq!(uploader.stats().sent.load(Ordering::Relaxed), 0);
        let (_, left) = uploader.shutdown(Duration::ZERO);
        assert_eq!(left, 1);
        let requests = server.join().expect("server thread");
        assert!(!requests[0].contains("secret"), "{}", requests[0]);
    }
}
