//! A minimal W3C WebDriver client for the browser test: Debian's `chromedriver` drives
//! headless Debian `chromium`, spoken to over plain HTTP/1.1 on loopback with `std::net` and
//! `serde_json`. No browser download, no Node, no WebDriver crate: the two apt packages are the
//! whole setup.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::common::http;

/// The key W3C WebDriver uses for element references in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags that work in containers and CI: no sandbox (root), no GPU, no network chatter.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

/// Calls `probe` every 100 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A free loopback address (bound, then released for chromedriver to take).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
}

/// A `chromedriver` child process, killed on drop.
pub struct Chromedriver {
    child: Child,
    addr: SocketAddr,
}

impl Chromedriver {
    pub fn start(binary: &Path, log: &Path) -> Self {
        let addr = free_addr();
        let log_file = fs::File::create(log).expect("create chromedriver log");
        let child = Command::new(binary)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let driver = Self { child, addr };
        let ready = poll(Duration::from_secs(30), || {
            TcpStream::connect(addr).ok()?;
            let status = http(addr, "GET", "/status", &[], b"");
            (status.json()["value"]["ready"] == json!(true)).then_some(())
        });
        assert!(
            ready.is_some(),
            "chromedriver did not become ready in 30 s; see {}",
            log.display()
        );
        driver
    }

    /// Opens a headless Chromium session.
    pub fn session(&self, chromium: &Path, artifacts: PathBuf) -> Session {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": CHROMIUM_ARGS},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 30_000, "pageLoad": 60_000},
        }}});
        let value = command(self.addr, "POST", "/session", Some(&capabilities));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"))
            .to_string();
        Session {
            driver: self.addr,
            id,
            artifacts,
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a WebDriver command and returns its `value`, panicking with the driver's message.
fn command(driver: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let response = http(
        driver,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let mut json = response.json();
    if response.status != 200 {
        panic!(
            "WebDriver {method} {path} failed with {}: {} {}",
            response.status, json["value"]["error"], json["value"]["message"]
        );
    }
    json["value"].take()
}

/// One browser session; closed on drop.
pub struct Session {
    driver: SocketAddr,
    id: String,
    artifacts: PathBuf,
}

impl Session {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(
            self.driver,
            method,
            &format!("/session/{}{path}", self.id),
            body.as_ref(),
        )
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn back(&self) {
        self.cmd("POST", "/back", Some(json!({})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> String {
        self.wait_for(
            &format!("an element matching {css}"),
            "return document.querySelector(arguments[0]) !== null",
            json!([css]),
        );
        let value = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference in {value}"))
            .to_string()
    }

    /// Clicks the element matching `css` like a user (scrolls it into view, real pointer events).
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Moves the mouse over the centre of the element matching `css`.
    pub fn hover(&self, css: &str) {
        let element = self.find(css);
        self.pointer(json!([{"type": "pointerMove", "origin": {ELEMENT_KEY: element}, "x": 0, "y": 0, "duration": 0}]),
        );
    }

    /// Clicks with the mouse inside the element matching `css`, at `fraction` of its width from
    /// the left, halfway down.
    pub fn click_at(&self, css: &str, fraction: f64) {
        let element = self.find(css);
        let width = self.execute(
            "return document.querySelector(arguments[0]).getBoundingClientRect().width",
            json!([css]),
        );
        let width = width
            .as_f64()
            .unwrap_or_else(|| panic!("no width for {css}: {width}"));
        // Pointer offsets are relative to the element's centre and must be integers.
        let x = ((fraction - 0.5) * width).round() as i64;
        let origin = json!({ ELEMENT_KEY: element });
        self.pointer(json!([
            {"type": "pointerMove", "origin": origin, "x": x, "y": 0, "duration": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]));
    }

    /// Performs mouse `actions` (W3C "perform actions"), then releases the input state.
    fn pointer(&self, actions: Value) {
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": {"pointerType": "mouse"},
                "actions": actions,
            }]})),
        );
        self.cmd("DELETE", "/actions", None);
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Polls `script` until it returns something truthy (30 s), and returns that. On timeout it
    /// saves a screenshot and panics with the URL and the page's text.
    pub fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let value = poll(Duration::from_secs(30), || {
            let value = self.execute(script, args.clone());
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            truthy.then_some(value)
        });
        value.unwrap_or_else(|| {
            let shot = self.screenshot("failure");
            let text = self.execute("return document.body.innerText.slice(0, 3000)", json!([]));
            panic!(
                "timed out after 30 s waiting for {what}\nurl: {}\nscreenshot: {}\npage text:\n{}\nbrowser console: {:?}",
                self.url(),
                shot.display(),
                text.as_str().unwrap_or_default(),
                self.console()
            )
        })
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(encoded.as_str().unwrap_or_default());
        fs::create_dir_all(&self.artifacts).expect("create the artifacts directory");
        let path = self.artifacts.join(format!("{name}.png"));
        fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The browser console since the last call (chromedriver's log endpoint): `(level, message)`.
    pub fn console(&self) -> Vec<(String, String)> {
        let value = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })));
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Session {
    /// Ends the session, which quits Chromium. Never panics: it also runs while a failed test
    /// unwinds.
    fn delete(&self) -> std::io::Result<()> {
        let mut stream = TcpStream::connect(self.driver)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.id, self.driver
        )?;
        // The answer comes once Chromium has quit.
        stream.read(&mut [0; 512]).map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver returns screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue, // padding and line breaks
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_decodes_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
