//! Helpers for the end-to-end tests of `profiler-agent` (start reading at `tests/record.rs`).
//!
//! The tests drive the real binary: [`agent_binary`] builds it once per test binary,
//! [`fixture`] compiles the C programs of `fixtures/` with frame pointers, [`run_agent`] runs the
//! agent with a timeout, and [`parse_folded`] / [`Summary::parse`] read what it wrote.
//!
//! Root-only tests start with [`require_sampler`] (or [`require_root`]), tests of a fixture also
//! with [`require_gcc`] or [`require_tool`]: each returns `false` after printing
//! `skipping: <reason>` when the test cannot run here, and panics instead when the `CI`
//! environment variable is set, because CI runs as root on a BPF-capable kernel with the tools
//! installed.
//!
//! The capture tests (`tests/http.rs`, `tests/grpc.rs`) record with [`start_recording`] and read
//! what the agent wrote with [`read_spans`], [`attr`] and [`http_summary`].

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, OnceLock, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long one agent run may take before the test kills it and fails: a hang, not slowness
/// (recordings in the tests last a few seconds).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    root.canonicalize().unwrap_or_else(|error| {
        panic!(
            "cannot resolve the workspace root {}: {error}",
            root.display()
        )
    })
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Whether the tests run in CI (`CI` set to anything but empty, `0` or `false`), where a test
/// that cannot run must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// Gives up on `test` for `reason`: prints `skipping: <test>: <reason>` and returns `false`, or
/// panics under CI.
pub fn skip(test: &str, reason: &str) -> bool {
    if in_ci() {
        panic!("{test}: cannot run under CI: {reason}");
    }
    // Straight to stderr: libtest captures `println!` and `eprintln!` of passing tests, and a skip
    // should be seen.
    let _ = writeln!(std::io::stderr(), "skipping: {test}: {reason}");
    false
}

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|error| panic!("cannot read /proc/self/status: {error}"));
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status:\n{status}"));
    effective_uid == "0"
}

/// `true` when `test` may go on as root; otherwise prints `skipping: <reason>` and returns
/// `false` (panics under CI).
pub fn require_root(test: &str) -> bool {
    is_root()
        || skip(
            test,
            "needs root to load eBPF programs (run the tests as root)",
        )
}

/// `true` when `test` may record: root, and the agent starts its sampler here. The first call
/// builds the agent and records the whole machine for 0.2 s to find out. When the sampler cannot
/// start (the agent was built without its eBPF object, the kernel refuses the programs), prints
/// `skipping: <the agent's error>` and returns `false`, or panics under CI. Any other failure of
/// that probe is a bug and panics.
pub fn require_sampler(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let dir = TempDir::new("sampler-probe");
        let output_file = dir.path().join("probe.folded");
        let output = run_agent([
            OsStr::new("record"),
            OsStr::new("--all"),
            OsStr::new("--duration"),
            OsStr::new("0.2"),
            OsStr::new("--quiet"),
            OsStr::new("-o"),
            output_file.as_os_str(),
        ]);
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        match stderr
            .lines()
            .find(|line| line.contains("cannot start the CPU sampler"))
        {
            Some(line) => Err(line.trim_start_matches("error: ").to_string()),
            None => panic!(
                "probing the agent (record --all --duration 0.2) failed with {}:\n{stderr}",
                output.status
            ),
        }
    });
    match probe {
        Ok(()) => true,
        Err(reason) => skip(test, reason),
    }
}

/// The `profiler-agent` binary, built once per test binary with the cargo that runs the tests.
/// A failed build fails every test that needs the agent, with cargo's errors, without rebuilding.
pub fn agent_binary() -> PathBuf {
    workspace_binary("profiler-agent")
}

/// The `profiler-server` binary, built like [`agent_binary`].
pub fn server_binary() -> PathBuf {
    workspace_binary("profiler-server")
}

/// The binary of the workspace package `package` (named like it), built once per test binary.
fn workspace_binary(package: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let built = built
        .get_or_insert_with(HashMap::new)
        .entry(package.to_string())
        .or_insert_with(|| build_binary(package));
    match built {
        Ok(binary) => binary.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn build_binary(package: &str) -> Result<PathBuf, String> {
    let started = Instant::now();
    let output = Command::new(env!("CARGO"))
        .args(["build", "-p", package, "--bin", package])
        .current_dir(workspace_root())
        .output()
        .map_err(|error| format!("cannot run {}: {error}", env!("CARGO")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.trim_start().starts_with("Compiling "))
            .collect();
        return Err(format!(
            "cargo build -p {package} failed with {}:\n{}",
            output.status,
            errors.join("\n")
        ));
    }
    let binary = target_dir().join("debug").join(package);
    if !binary.is_file() {
        return Err(format!(
            "cargo built {package} but {} does not exist (is the target directory configured \
             elsewhere than $CARGO_TARGET_DIR?)",
            binary.display()
        ));
    }
    eprintln!(
        "built {} in {:.1} s",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// The fixture `fixtures/<name>.c` compiled with `gcc -O2 -fno-omit-frame-pointer` (once per
/// test binary) into `<target>/tmp/fixtures/<name>`. Tests check [`require_gcc`] first.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/{name}.c"));
    let dir = target_dir().join("tmp/fixtures");
    fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    let binary = dir.join(name);
    // Compile to a name of our own and rename: another test binary may build the same fixture
    // at the same time, or run the previous build.
    let partial = dir.join(format!("{name}.{}.partial", std::process::id()));
    let output = Command::new("gcc")
        .args(["-O2", "-fno-omit-frame-pointer", "-o"])
        .arg(&partial)
        .arg(&source)
        .output()
        .unwrap_or_else(|error| panic!("cannot run gcc: {error}"));
    assert!(
        output.status.success(),
        "gcc failed to build {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::rename(&partial, &binary).unwrap_or_else(|error| {
        panic!(
            "cannot rename {} to {}: {error}",
            partial.display(),
            binary.display()
        )
    });
    built.insert(name.to_string(), binary.clone());
    binary
}

/// `true` when gcc, which builds the fixtures, is installed; otherwise prints `skipping: ...`
/// and returns `false` (panics under CI).
pub fn require_gcc(test: &str) -> bool {
    let installed = Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    installed || skip(test, "gcc is not installed (it builds the C fixtures)")
}

/// Runs the agent with `args`, stdout and stderr captured, killing it (and panicking) after
/// [`AGENT_TIMEOUT`].
pub fn run_agent<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(agent_binary());
    command.args(args);
    run_with_timeout(&mut command, AGENT_TIMEOUT)
}

/// Runs `command` with stdout and stderr captured; kills it and panics after `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let what = format!("{command:?}");
    wait_with_timeout(spawn_captured(command), timeout, &what)
}

/// Starts `command` with stdin on /dev/null and stdout and stderr piped, for
/// [`wait_with_timeout`].
pub fn spawn_captured(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"))
}

/// Collects the output of `child` (started by [`spawn_captured`]); kills it and panics if it
/// runs longer than `timeout` from now. `what` names the child in the panic messages.
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                // A read error just truncates what the assertions get to see.
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "{what} did not finish within {} s; stderr so far:\n{}",
                    timeout.as_secs(),
                    String::from_utf8_lossy(&stderr)
                );
            }
            Err(error) => panic!("cannot wait for {what}: {error}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader does not panic"),
        stderr: stderr.join().expect("the stderr reader does not panic"),
    }
}

/// One line of folded stacks: the frames root first (the thread name, user frames, kernel
/// frames ending in `_[k]`) and the sample count.
pub type FoldedStack = (Vec<String>, u64);

/// Parses folded stacks (`comm;outer;...;leaf COUNT` per line), panicking on a malformed line.
pub fn parse_folded(text: &str) -> Vec<FoldedStack> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line {} has no count: {line:?}", index + 1));
            let count = count.parse().unwrap_or_else(|error| {
                panic!(
                    "folded line {} has a bad count ({error}): {line:?}",
                    index + 1
                )
            });
            let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            assert!(
                frames.iter().all(|frame| !frame.is_empty()),
                "folded line {} has an empty frame: {line:?}",
                index + 1
            );
            (frames, count)
        })
        .collect()
}

/// Reads and parses a folded-stacks file.
pub fn read_folded(path: &Path) -> Vec<FoldedStack> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse_folded(&text)
}

/// The stacks whose thread name (first frame) is `comm`.
pub fn stacks_of<'a>(stacks: &'a [FoldedStack], comm: &str) -> Vec<&'a FoldedStack> {
    stacks
        .iter()
        .filter(|(frames, _)| frames[0] == comm)
        .collect()
}

/// The total count of `stacks`.
pub fn total(stacks: &[&FoldedStack]) -> u64 {
    count_where(stacks, |_| true)
}

/// The total count of the stacks for which `keep` holds.
pub fn count_where(stacks: &[&FoldedStack], keep: impl Fn(&FoldedStack) -> bool) -> u64 {
    stacks
        .iter()
        .filter(|stack| keep(stack))
        .map(|(_, count)| count)
        .sum()
}

/// Whether a frame is a kernel frame (folded stacks suffix them with `_[k]`).
pub fn is_kernel_frame(frame: &str) -> bool {
    frame.ends_with("_[k]")
}

/// The first line of the agent's summary: `recorded 3.0 s at 99 Hz (reason): N samples from M
/// processes (T threads)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub seconds: f64,
    pub end_reason: String,
    pub samples: u64,
    pub processes: u64,
}

impl Summary {
    /// Finds and parses the summary in the agent's stderr, panicking with the stderr if absent.
    pub fn parse(stderr: &str) -> Summary {
        let parse = |line: &str| -> Option<Summary> {
            let rest = line.strip_prefix("recorded ")?;
            let (seconds, rest) = rest.split_once(" s at ")?;
            let (_, rest) = rest.split_once(" (")?;
            let (end_reason, rest) = rest.split_once("): ")?;
            let (samples, rest) = rest.split_once(" samples from ")?;
            let (processes, _) = rest.split_once(" processes")?;
            Some(Summary {
                seconds: seconds.parse().ok()?,
                end_reason: end_reason.to_string(),
                samples: samples.parse().ok()?,
                processes: processes.parse().ok()?,
            })
        };
        stderr.lines().find_map(parse).unwrap_or_else(|| {
            panic!("no `recorded ...` summary line in the agent's stderr:\n{stderr}")
        })
    }
}

/// Panics with the agent's stderr unless it exited successfully; returns the stderr.
pub fn expect_success(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what}: the agent failed with {}; stderr:\n{stderr}",
        output.status
    );
    stderr
}

/// Panics unless the agent failed with an `error: ...` line; returns the stderr.
pub fn expect_failure(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "{what}: the agent succeeded but should have failed; stderr:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|line| line.starts_with("error: ")),
        "{what}: the agent failed ({}) without an `error: ...` line; stderr:\n{stderr}",
        output.status
    );
    stderr
}

/// `true` when `program` runs (`program args` exits 0); else skips (fails under CI).
pub fn require_tool(test: &str, program: &str, args: &[&str], package: &str) -> bool {
    let runs = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success());
    runs || skip(
        test,
        &format!("{program} is not installed (apt-get install {package})"),
    )
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("cannot find a free port: {error}"))
}

/// `profiler-agent record --spans` of `command`, writing into `dir`.
pub fn start_recording(dir: &Path, frequency_hz: u32, command: &[&str]) -> Child {
    let mut agent = Command::new(agent_binary());
    agent
        .arg("record")
        .arg("-q")
        .arg("-F")
        .arg(frequency_hz.to_string())
        .arg("--spans")
        .arg(dir.join("spans.jsonl"))
        .arg("-o")
        .arg(dir.join("profile.pb.gz"))
        .arg("--")
        .args(command);
    spawn_captured(&mut agent)
}

/// The spans a recording of [`start_recording`] wrote into `dir`, one JSON object each.
pub fn read_spans(dir: &Path) -> Vec<Value> {
    let path = dir.join("spans.jsonl");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("bad span line {line:?}: {error}"))
        })
        .collect()
}

/// The attribute `name` of a span (`Null` when absent).
pub fn attr<'a>(span: &'a Value, name: &str) -> &'a Value {
    &span["attributes"][name]
}

/// How long a span lasted, in milliseconds (NaN when the field is missing).
pub fn duration_ms(span: &Value) -> f64 {
    span["duration_ms"].as_f64().unwrap_or(f64::NAN)
}

/// The agent's `http:` summary line.
pub fn http_summary(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|line| line.starts_with("http: "))
        .unwrap_or_else(|| panic!("no `http:` summary in the agent's stderr:\n{stderr}"))
}

/// A directory of its own for one test, removed on drop unless the test panicked with files in
/// it (then kept and named on stderr, for a look at the profile that failed).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/profiler-tests-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "profiler-tests-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets every user create files in the directory (for a test that drops privileges).
    pub fn make_world_writable(&self) {
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", self.path.display()));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let has_files = fs::read_dir(&self.path).is_ok_and(|mut entries| entries.next().is_some());
        if thread::panicking() && has_files {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A background process killed and reaped on drop, so a failing test leaves nothing running.
pub struct Background {
    child: Child,
}

impl Background {
    /// Starts `program args` with stdout and stdin on /dev/null.
    pub fn spawn<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Background {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Background { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns whether it succeeded.
    pub fn wait_success(mut self) -> bool {
        self.child
            .wait()
            .unwrap_or_else(|error| panic!("cannot wait for pid {}: {error}", self.child.id()))
            .success()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A `profiler-server` keeping its store in `dir/data`, on free loopback ports, once it answers
/// `/readyz`: the process and its API and OTLP ports.
pub fn start_server(dir: &Path) -> (Background, u16, u16) {
    let (api_port, otlp_port) = (free_port(), free_port());
    let server = Background::spawn(
        &server_binary(),
        &[
            "--data-dir".to_string(),
            dir.join("data").display().to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{api_port}"),
            "--otlp-listen".to_string(),
            format!("127.0.0.1:{otlp_port}"),
        ],
    );
    eventually("the profiler server", || {
        (http_get(api_port, "/readyz").0 == 200).then_some(())
    });
    (server, api_port, otlp_port)
}

/// Builds the Go program `source` (standard library only) into `dir/name` and returns its path.
/// Tests check [`require_tool`] for `go` first.
pub fn go_build(dir: &Path, source: &str, name: &str) -> PathBuf {
    let main = dir.join(format!("{name}.go"));
    fs::write(&main, source)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", main.display()));
    let binary = dir.join(name);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&main)
        .env("GOCACHE", target_dir().join("tmp/go-cache"))
        .env("GOPATH", target_dir().join("tmp/go-path"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run go build: {error}"));
    assert!(
        built.status.success(),
        "go build of {} failed:\n{}",
        main.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    binary
}

/// `GET path` on 127.0.0.1:`port` with HTTP/1.0 (the server closes after the answer): the
/// status and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string());
    (status, body)
}

/// Polls `check` every 250 ms until it returns `Some`, for at most 60 s.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU nanoseconds and samples of the profile labelled with `span_id` (and `trace_id`).
pub fn cpu_of_span(path: &Path, span_id: &str, trace_id: &str) -> (i64, i64) {
    let bytes = fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let profile = profiler_pprof::decode(&bytes).expect("a valid pprof");
    let string = |index: i64| {
        profile
            .string_table
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .map_or("", String::as_str)
    };
    let cpu_index = profile
        .sample_type
        .iter()
        .position(|t| string(t.r#type) == "cpu")
        .expect("a cpu sample type");
    let mut total = (0, 0);
    for sample in &profile.sample {
        let label = |key: &str| {
            sample
                .label
                .iter()
                .find(|l| string(l.key) == key)
                .map(|l| string(l.str))
        };
        if label("span_id") == Some(span_id) {
            assert_eq!(
                label("trace_id"),
                Some(trace_id),
                "span and trace labels disagree"
            );
            total.0 += sample.value[cpu_index];
            total.1 += sample.value[0];
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_stacks() {
        let stacks = parse_folded(
            "burn3;main;burn_gamma 101\n\
             syscalls;read_zero_loop;do_syscall_64_[k];read_zero_[k] 7\n\
             \n\
             my app;[unknown] ([vdso]) 1\n",
        );
        assert_eq!(
            stacks,
            vec![
                (
                    vec!["burn3".into(), "main".into(), "burn_gamma".into()],
                    101
                ),
                (
                    vec![
                        "syscalls".into(),
                        "read_zero_loop".into(),
                        "do_syscall_64_[k]".into(),
                        "read_zero_[k]".into()
                    ],
                    7
                ),
                (vec!["my app".into(), "[unknown] ([vdso])".into()], 1),
            ]
        );
        assert!(is_kernel_frame(&stacks[1].0[3]));
        assert!(!is_kernel_frame(&stacks[1].0[1]));
    }

    #[test]
    #[should_panic(expected = "has no count")]
    fn rejects_a_line_without_count() {
        parse_folded("burn3;main\n");
    }

    #[test]
    fn parses_the_summary() {
        let stderr = "command finished: exit status: 0\n\
                      recorded 3.0 s at 99 Hz (command exited): 202 samples from 1 processes \
                      (1 threads)\n\
                      samples lost: 0\n";
        assert_eq!(
            Summary::parse(stderr),
            Summary {
                seconds: 3.0,
                end_reason: "command exited".into(),
                samples: 202,
                processes: 1
            }
        );
    }
}
