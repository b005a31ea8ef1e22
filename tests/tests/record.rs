//! End-to-end tests of `profiler-agent record`: the real binary records the C fixtures of
//! `tests/fixtures/` and the tests check what it wrote.
//!
//! Recording tests need root (they skip with `skipping: <reason>` otherwise, and fail under
//! `CI`); the bad-input tests at the end run as any user except the capability one.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tests::{
    agent_binary, count_where, expect_failure, expect_success, fixture, is_kernel_frame,
    read_folded, require_gcc, require_sampler, run_agent, run_with_timeout, skip, spawn_captured,
    stacks_of, total, wait_with_timeout, Background, FoldedStack, Summary, TempDir,
};

/// Serializes the tests whose assertions depend on how much CPU the fixture gets, so two of them
/// do not share the 2 cores of a small CI machine with each other.
static CPU_MEASUREMENT: Mutex<()> = Mutex::new(());

fn cpu_measurement() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock says nothing about the next one.
    CPU_MEASUREMENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Arguments for the agent, from anything path- or string-like.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(OsString::from($arg)),*]
    };
}

/// The three hot functions of burn3 and the share of its CPU time each one burns.
const BURN3_SHARES: [(&str, f64); 3] = [
    ("burn_alpha", 1.0 / 6.0),
    ("burn_beta", 2.0 / 6.0),
    ("burn_gamma", 3.0 / 6.0),
];

fn has_frame(stack: &FoldedStack, function: &str) -> bool {
    stack.0.iter().any(|frame| frame == function)
}

fn has_unknown_frame(stack: &FoldedStack) -> bool {
    stack.0.iter().any(|frame| frame.starts_with("[unknown]"))
}

/// The wall time burn3 reports on stdout (`done in W s of wall time`).
fn burn3_wall_seconds(stdout: &[u8]) -> f64 {
    let stdout = String::from_utf8_lossy(stdout);
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("done in ")?
                .strip_suffix(" s of wall time")
        })
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("burn3 did not report its wall time; stdout:\n{stdout}"))
}

/// Waits until the agent created the temporary file of output `name` in `dir` (it does so just
/// before it installs its signal handlers and starts the sampler), then lets it record a bit.
fn wait_until_recording(dir: &Path, name: &str, started: Instant) {
    let prefix = format!(".{name}.");
    let created = || {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        })
    };
    while !created() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
}

fn show(stacks: &[&FoldedStack]) -> String {
    stacks
        .iter()
        .map(|(frames, count)| format!("  {} {count}\n", frames.join(";")))
        .collect()
}

#[test]
fn cpu_shares_match_the_fixture() {
    const TEST: &str = "cpu_shares_match_the_fixture";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("shares");
    let output_file = dir.path().join("burn3.folded");
    let _cpu = cpu_measurement();

    let output = run_agent(args![
        "record",
        "-q",
        "-F",
        "99",
        "-o",
        &output_file,
        "--",
        &burn3,
        "6"
    ]);
    let stderr = expect_success(TEST, &output);
    let stacks = read_folded(&output_file);
    let fixture_stacks = stacks_of(&stacks, "burn3");
    let fixture_samples = total(&fixture_stacks);
    // 6 s of CPU time at 99 Hz is about 594 samples.
    assert!(
        fixture_samples >= 300,
        "only {fixture_samples} burn3 samples for 6 s of CPU at 99 Hz (expected about 594); \
         stderr:\n{stderr}\nstacks:\n{}",
        show(&fixture_stacks)
    );
    let in_function =
        |function: &str| count_where(&fixture_stacks, |stack| has_frame(stack, function));
    let burning: u64 = BURN3_SHARES
        .iter()
        .map(|(function, _)| in_function(function))
        .sum();
    assert!(
        burning > 0,
        "no burn3 sample in burn_alpha/beta/gamma:\n{}",
        show(&fixture_stacks)
    );

    let mut report = format!("{fixture_samples} burn3 samples, {burning} in the burn functions:");
    let mut failures = Vec::new();
    for (function, expected) in BURN3_SHARES {
        let share = in_function(function) as f64 / burning as f64;
        report += &format!(
            " {function} {:.1}% (expected {:.1}%)",
            share * 100.0,
            expected * 100.0
        );
        if (share - expected).abs() > 0.05 {
            failures.push(function);
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "shares off by more than 5 points for {failures:?}: {report}\nstacks:\n{}",
        show(&fixture_stacks)
    );
}

#[test]
fn kernel_frames_follow_the_user_frame_that_made_the_syscall() {
    const TEST: &str = "kernel_frames_follow_the_user_frame_that_made_the_syscall";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let syscalls = fixture("syscalls");
    let dir = TempDir::new("kernel");
    let output_file = dir.path().join("syscalls.folded");
    let _cpu = cpu_measurement();

    let output = run_agent(args![
        "record",
        "-q",
        "-o",
        &output_file,
        "--",
        &syscalls,
        "3"
    ]);
    let stderr = expect_success(TEST, &output);
    let stacks = read_folded(&output_file);
    let fixture_stacks = stacks_of(&stacks, "syscalls");
    let samples = total(&fixture_stacks);
    assert!(
        samples > 0,
        "no samples of the syscalls fixture; stderr:\n{stderr}"
    );

    let kernel_under_loop = fixture_stacks.iter().any(|(frames, _)| {
        frames
            .iter()
            .position(|frame| frame == "read_zero_loop")
            .is_some_and(|at| frames[at + 1..].iter().any(|frame| is_kernel_frame(frame)))
    });
    assert!(
        kernel_under_loop,
        "no stack has a `_[k]` frame under read_zero_loop:\n{}",
        show(&fixture_stacks)
    );
    let with_kernel = count_where(&fixture_stacks, |(frames, _)| {
        frames.iter().any(|frame| is_kernel_frame(frame))
    });
    let share = with_kernel as f64 / samples as f64;
    println!(
        "{with_kernel} of {samples} syscalls samples ({:.1}%) have kernel frames",
        share * 100.0
    );
    assert!(
        share > 0.5,
        "only {with_kernel} of {samples} samples of a fixture that lives in read(2) have kernel \
         frames:\n{}",
        show(&fixture_stacks)
    );
}

#[test]
fn recording_a_command_ends_when_it_exits() {
    const TEST: &str = "recording_a_command_ends_when_it_exits";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("command");
    let output_file = dir.path().join("burn3.folded");

    let started = Instant::now();
    let output = run_agent(args!["record", "-q", "-o", &output_file, "--", &burn3, "2"]);
    let elapsed = started.elapsed().as_secs_f64();
    let stderr = expect_success(TEST, &output);
    let summary = Summary::parse(&stderr);
    // burn3 burns 2 s of CPU time, which takes longer on a busy machine: compare with its own
    // wall time rather than with a fixed limit.
    let burn3_wall = burn3_wall_seconds(&output.stdout);
    println!(
        "record -- burn3 2: burn3 ran {burn3_wall:.1} s, the agent recorded {:.1} s and ran \
         {elapsed:.1} s ({} samples)",
        summary.seconds, summary.samples
    );
    assert_eq!(summary.end_reason, "command exited", "stderr:\n{stderr}");
    assert!(
        stderr.contains("command finished: exit status: 0"),
        "the summary does not report the command's exit status; stderr:\n{stderr}"
    );
    assert!(
        summary.seconds - burn3_wall < 3.0,
        "the recording went on {:.1} s after the command exited; stderr:\n{stderr}",
        summary.seconds - burn3_wall
    );
    // Idle, that is well under 10 s: 2 s of burn3 plus the agent's start, symbolization and write.
    assert!(
        elapsed - burn3_wall < 6.0,
        "the agent ran {elapsed:.1} s for a command of {burn3_wall:.1} s; stderr:\n{stderr}"
    );
    assert!(
        stacks_of(&read_folded(&output_file), "burn3")
            .iter()
            .any(|stack| has_frame(stack, "burn_gamma")),
        "no burn_gamma in the profile"
    );
}

#[test]
fn recording_pids_ends_when_they_exit_and_keeps_their_symbols() {
    const TEST: &str = "recording_pids_ends_when_they_exit_and_keeps_their_symbols";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("pid");
    let output_file = dir.path().join("burn3.folded");
    let _cpu = cpu_measurement();

    let process = Background::spawn(&burn3, &["3"]);
    let pid = process.pid().to_string();
    // Reap burn3 as soon as it exits, as a parent would, so its /proc entry goes away.
    let reaper = std::thread::spawn(move || (process.wait_success(), Instant::now()));
    let started = Instant::now();
    let output = run_agent(args![
        "record",
        "-q",
        "--pid",
        &pid,
        "--duration",
        "20",
        "-o",
        &output_file
    ]);
    let ended = Instant::now();
    let (burn3_succeeded, burn3_exited) = reaper.join().expect("the reaper does not panic");
    assert!(burn3_succeeded, "burn3 failed");
    let stderr = expect_success(TEST, &output);
    let summary = Summary::parse(&stderr);
    // burn3 burns 3 s of CPU time, longer in wall time on a busy machine: measure from its exit.
    let after_exit = ended.saturating_duration_since(burn3_exited).as_secs_f64();
    println!(
        "record --pid (burn3 3): {} after {:.1} s, {after_exit:.1} s after burn3 exited, {} \
         samples",
        summary.end_reason,
        (ended - started).as_secs_f64(),
        summary.samples
    );
    // Not "duration reached": the agent did not wait for its 20 s.
    assert_eq!(
        summary.end_reason, "all processes exited",
        "stderr:\n{stderr}"
    );
    assert!(
        after_exit < 5.0,
        "the agent ran {after_exit:.1} s after the last process exited; stderr:\n{stderr}"
    );

    let stacks = read_folded(&output_file);
    let fixture_stacks = stacks_of(&stacks, "burn3");
    let samples = total(&fixture_stacks);
    assert!(samples > 0, "no burn3 samples; stderr:\n{stderr}");
    assert!(
        fixture_stacks
            .iter()
            .any(|stack| has_frame(stack, "burn_gamma")),
        "burn_gamma is not symbolized after burn3 exited:\n{}",
        show(&fixture_stacks)
    );
    let unknown = count_where(&fixture_stacks, has_unknown_frame);
    println!("{unknown} of {samples} burn3 samples have [unknown] frames");
    assert!(
        (unknown as f64) < 0.1 * samples as f64,
        "{unknown} of {samples} burn3 samples have [unknown] frames:\n{}",
        show(&fixture_stacks)
    );
}

#[test]
fn recording_all_sees_every_process() {
    const TEST: &str = "recording_all_sees_every_process";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let syscalls = fixture("syscalls");
    let dir = TempDir::new("all");
    let output_file = dir.path().join("all.folded");

    // Both outlast the recording (plus the agent's start); they are killed on drop.
    let _burn3 = Background::spawn(&burn3, &["30"]);
    let _syscalls = Background::spawn(&syscalls, &["30"]);
    let output = run_agent(args![
        "record",
        "-q",
        "--all",
        "--duration",
        "3",
        "-o",
        &output_file
    ]);
    let stderr = expect_success(TEST, &output);
    let summary = Summary::parse(&stderr);
    assert_eq!(summary.end_reason, "duration reached", "stderr:\n{stderr}");

    let stacks = read_folded(&output_file);
    let mut comms: Vec<&str> = stacks
        .iter()
        .map(|(frames, _)| frames[0].as_str())
        .collect();
    comms.sort_unstable();
    comms.dedup();
    println!(
        "--all: {} samples from {} processes, {} thread names",
        summary.samples,
        summary.processes,
        comms.len()
    );
    for (comm, function) in [("burn3", "burn_gamma"), ("syscalls", "read_zero_loop")] {
        assert!(
            stacks_of(&stacks, comm)
                .iter()
                .any(|stack| has_frame(stack, function)),
            "--all recorded no {comm} stack with {function}; thread names: {comms:?}"
        );
    }
    assert!(
        summary.processes > 1,
        "--all reports {} process; stderr:\n{stderr}",
        summary.processes
    );
}

#[test]
fn pprof_output_reads_in_go_tool_pprof() {
    const TEST: &str = "pprof_output_reads_in_go_tool_pprof";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    if Command::new("go").arg("version").output().is_err() {
        skip(
            TEST,
            "go is not installed (`go tool pprof` is the reference pprof reader)",
        );
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("pprof");
    let output_file = dir.path().join("burn3.pb.gz");

    let output = run_agent(args!["record", "-q", "-o", &output_file, "--", &burn3, "2"]);
    expect_success(TEST, &output);
    let pprof = run_with_timeout(
        Command::new("go")
            .args(["tool", "pprof", "-top"])
            .arg(&output_file)
            .env("PPROF_TMPDIR", dir.path()),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&pprof.stdout);
    let stderr = String::from_utf8_lossy(&pprof.stderr);
    assert!(
        pprof.status.success(),
        "go tool pprof -top failed with {}:\n{stdout}\n{stderr}",
        pprof.status
    );
    // The rows follow the `flat  flat%   sum%        cum   cum%` header, largest flat first.
    let top_function = stdout
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .nth(1)
        .and_then(|row| row.split_whitespace().last());
    assert_eq!(
        top_function,
        Some("burn_gamma"),
        "burn_gamma (half of burn3's CPU) is not the top function:\n{stdout}"
    );
}

#[test]
fn svg_output_is_a_flame_graph() {
    const TEST: &str = "svg_output_is_a_flame_graph";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("svg");
    let output_file = dir.path().join("burn3.svg");

    let output = run_agent(args!["record", "-q", "-o", &output_file, "--", &burn3, "1"]);
    expect_success(TEST, &output);
    let svg = fs::read_to_string(&output_file)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", output_file.display()));
    let head: String = svg.chars().take(200).collect();
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "not an SVG document: {head}"
    );
    let tail: String = {
        let reversed: Vec<char> = svg.trim_end().chars().rev().take(200).collect();
        reversed.into_iter().rev().collect()
    };
    assert!(tail.ends_with("</svg>"), "the SVG is truncated: ...{tail}");
    assert!(
        svg.contains("burn_gamma"),
        "no burn_gamma in the flame graph"
    );
}

#[test]
fn a_stop_signal_ends_the_recording_and_writes_the_profile() {
    const TEST: &str = "a_stop_signal_ends_the_recording_and_writes_the_profile";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("signal");
    let process = Background::spawn(&burn3, &["60"]);
    let pid = process.pid().to_string();

    for signal in ["INT", "TERM"] {
        let output_file = dir.path().join(format!("sig{signal}.folded"));
        let started = Instant::now();
        let agent = spawn_captured(Command::new(agent_binary()).args(args![
            "record",
            "-q",
            "--pid",
            &pid,
            "--duration",
            "60",
            "-o",
            &output_file
        ]));
        wait_until_recording(dir.path(), &format!("sig{signal}.folded"), started);
        let kill = Command::new("kill")
            .args(["-s", signal, &agent.id().to_string()])
            .status()
            .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
        assert!(kill.success(), "kill -s {signal} failed");
        let output = wait_with_timeout(agent, Duration::from_secs(60), "the signalled agent");
        let elapsed = started.elapsed().as_secs_f64();
        let stderr = expect_success(&format!("{TEST} (SIG{signal})"), &output);
        let summary = Summary::parse(&stderr);
        println!(
            "SIG{signal}: the agent ended after {elapsed:.1} s ({}), {} samples",
            summary.end_reason, summary.samples
        );
        assert_eq!(summary.end_reason, "interrupted", "stderr:\n{stderr}");
        assert!(
            stacks_of(&read_folded(&output_file), "burn3")
                .iter()
                .any(|stack| has_frame(stack, "burn_gamma")),
            "the profile written after SIG{signal} has no burn_gamma; stderr:\n{stderr}"
        );
    }
}

// Bad input: the agent refuses with a message saying what is wrong.

#[test]
fn unknown_pid_is_an_error() {
    let pid_max = fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("reading /proc/sys/kernel/pid_max")
        .trim()
        .parse::<u32>()
        .expect("pid_max is a number");
    let pid = (pid_max + 1).to_string();
    let dir = TempDir::new("unknown-pid");
    let output = run_agent(args![
        "record",
        "--pid",
        &pid,
        "-d",
        "1",
        "-o",
        dir.path().join("x.folded")
    ]);
    let stderr = expect_failure("--pid above pid_max", &output);
    assert!(
        stderr.contains(&pid) && stderr.contains("does not exist"),
        "the error does not say that process {pid} does not exist:\n{stderr}"
    );
}

#[test]
fn unwritable_output_is_an_error() {
    let output = run_agent(args![
        "record",
        "--all",
        "-d",
        "1",
        "-o",
        "/proc/no-such-dir/x.svg"
    ]);
    let stderr = expect_failure("output in a missing directory", &output);
    assert!(
        stderr.contains("cannot write") && stderr.contains("/proc/no-such-dir/x.svg"),
        "the error does not name the unwritable output:\n{stderr}"
    );
}

/// `program` run by setpriv (util-linux) as user nobody, without any capability.
fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(program);
    command
}

/// Why [`as_nobody`] cannot work here: setpriv is missing, or this root lacks CAP_SETUID.
fn cannot_become_nobody() -> Option<String> {
    if let Err(error) = Command::new("setpriv").arg("--version").output() {
        return Some(format!("setpriv (util-linux) cannot run: {error}"));
    }
    let output = run_with_timeout(&mut as_nobody(Path::new("true")), Duration::from_secs(30));
    (!output.status.success()).then(|| {
        format!(
            "setpriv cannot switch to nobody here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

#[test]
fn missing_capabilities_are_named() {
    const TEST: &str = "missing_capabilities_are_named";
    // Root to switch to nobody; and the agent must have its eBPF object, else it refuses before
    // looking at capabilities.
    if !require_sampler(TEST) {
        return;
    }
    if let Some(reason) = cannot_become_nobody() {
        skip(TEST, &reason);
        return;
    }
    let dir = TempDir::new("no-caps");
    dir.make_world_writable();
    // When nobody cannot reach the built agent (a private target directory), run a copy from the
    // temp dir instead.
    let mut agent = agent_binary();
    let runs = run_with_timeout(as_nobody(&agent).arg("--version"), Duration::from_secs(30));
    if !runs.status.success() {
        let copy = dir.path().join("profiler-agent");
        fs::copy(&agent, &copy).unwrap_or_else(|error| panic!("cannot copy the agent: {error}"));
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|error| panic!("cannot chmod {}: {error}", copy.display()));
        agent = copy;
    }
    let output_file = dir.path().join("x.folded");
    let output = run_with_timeout(
        as_nobody(&agent)
            .args(["record", "--all", "--duration", "1", "-o"])
            .arg(&output_file),
        Duration::from_secs(60),
    );
    let stderr = expect_failure("the agent as nobody without capabilities", &output);
    assert!(
        stderr.contains("CAP_BPF"),
        "the error does not name CAP_BPF (if it says `cannot write`, the temp dir is not \
         reachable for nobody):\n{stderr}"
    );
}

#[test]
fn nothing_to_record_is_an_error() {
    let dir = TempDir::new("nothing");
    let output = run_agent(args![
        "record",
        "-d",
        "1",
        "-o",
        dir.path().join("x.folded")
    ]);
    let stderr = expect_failure("record without a target", &output);
    assert!(
        stderr.contains("--pid") && stderr.contains("--all"),
        "the error does not say which targets to give:\n{stderr}"
    );
}

#[test]
fn conflicting_targets_are_an_error() {
    let dir = TempDir::new("conflict");
    let output = run_agent(args![
        "record",
        "--all",
        "--pid",
        "1",
        "-d",
        "1",
        "-o",
        dir.path().join("x.folded")
    ]);
    let stderr = expect_failure("--all with --pid", &output);
    assert!(
        stderr.contains("--pid") && stderr.contains("--all"),
        "the error does not name the conflicting options:\n{stderr}"
    );
}

#[test]
fn missing_command_is_an_error() {
    let dir = TempDir::new("no-command");
    for program in ["/no/such/program", "no-such-program-for-profiler-tests"] {
        let output = run_agent(args![
            "record",
            "-o",
            dir.path().join("x.folded"),
            "--",
            program
        ]);
        let stderr = expect_failure(&format!("-- {program}"), &output);
        assert!(
            stderr.contains(program) && stderr.contains("cannot start the command"),
            "the error does not say that {program} cannot start:\n{stderr}"
        );
    }
}

#[test]
fn stopping_the_agent_ends_the_command_and_writes_the_profile() {
    const TEST: &str = "stopping_the_agent_ends_the_command_and_writes_the_profile";
    if !require_sampler(TEST) || !require_gcc(TEST) {
        return;
    }
    let burn3 = fixture("burn3");
    let dir = TempDir::new("stop-command");
    let output_file = dir.path().join("t.folded");
    let started = Instant::now();
    let agent = spawn_captured(Command::new(agent_binary()).args(args![
        "record",
        "-q",
        "-o",
        &output_file,
        "--",
        &burn3,
        "600"
    ]));
    wait_until_recording(dir.path(), "t.folded", started);
    let kill = Command::new("kill")
        .args(["-s", "TERM", &agent.id().to_string()])
        .status()
        .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
    assert!(kill.success(), "kill -s TERM failed");
    // The agent sends the command SIGTERM and writes the profile; burn3 does not catch it.
    let output = wait_with_timeout(agent, Duration::from_secs(60), "the stopped agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(128 + 15),
        "the agent should exit like its command (killed by SIGTERM); stderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the agent waited for the command instead of ending it"
    );
    assert_eq!(Summary::parse(&stderr).end_reason, "interrupted");
    assert!(
        stacks_of(&read_folded(&output_file), "burn3")
            .iter()
            .any(|stack| has_frame(stack, "burn_gamma")),
        "no burn_gamma in the profile; stderr:\n{stderr}"
    );
}

#[test]
fn the_agent_exits_with_the_command_exit_code() {
    const TEST: &str = "the_agent_exits_with_the_command_exit_code";
    if !require_sampler(TEST) {
        return;
    }
    let dir = TempDir::new("exit-code");
    let output_file = dir.path().join("e.folded");
    let output = run_agent(args![
        "record",
        "-q",
        "-o",
        &output_file,
        "--",
        "sh",
        "-c",
        "exit 3"
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "stderr:\n{stderr}");
    assert!(
        output_file.exists(),
        "the profile was not written; stderr:\n{stderr}"
    );
}

#[test]
fn a_failed_recording_leaves_no_file_and_keeps_an_older_profile() {
    let dir = TempDir::new("failed-keeps-old");
    let output_file = dir.path().join("x.folded");
    fs::write(&output_file, "old;profile 1\n").expect("writing the old profile");
    let output = run_agent(args![
        "record",
        "-o",
        &output_file,
        "--",
        "/no/such/program"
    ]);
    expect_failure("-- /no/such/program", &output);
    assert_eq!(
        fs::read_to_string(&output_file).expect("the old profile is still there"),
        "old;profile 1\n"
    );
    let names: Vec<String> = fs::read_dir(dir.path())
        .expect("listing the output dir")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["x.folded"], "the failed run left files behind");
}

#[test]
fn a_thread_id_is_refused_with_its_process() {
    // A process with a second thread: Python's threading starts a real OS thread.
    let mut process = Command::new("python3")
        .args([
            "-c",
            "import threading, time\n\
             threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
             print('ready', flush=True)\n\
             time.sleep(60)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start python3: {error}"));
    let pid = process.id();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(process.stdout.take().expect("stdout")),
        &mut ready,
    )
    .expect("reading python's output");
    let thread = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("listing the threads")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|tid| *tid != pid.to_string())
        .expect("python has a second thread");
    let dir = TempDir::new("thread-id");
    let output = run_agent(args![
        "record",
        "--pid",
        &thread,
        "-d",
        "1",
        "-o",
        dir.path().join("x.folded")
    ]);
    let _ = process.kill();
    let _ = process.wait();
    let stderr = expect_failure("--pid with a thread id", &output);
    assert!(
        stderr.contains(&format!("use --pid {pid}")),
        "the error does not point to process {pid}:\n{stderr}"
    );
}
