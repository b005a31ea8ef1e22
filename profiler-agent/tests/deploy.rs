//! Offline checks of `deploy/` (no docker, no cluster, no root):
//!
//! - the Dockerfiles, parsed here: stages, base images, what the build stage runs, what the
//!   runtime stage holds, users and entry points;
//! - the Helm chart and the plain manifests, through `deploy/tests/validate.py`: `helm lint` and
//!   `helm template` (helm-python-sdk) and the Kubernetes 1.31 schemas (kubernetes-validate,
//!   strict). Without those Python modules the test prints `skipping: ...`, and fails under CI:
//!   `python3 -m pip install kubernetes-validate==1.37.0 helm-python-sdk==0.2.2`.
//!   `PROFILER_PYTHON` picks another interpreter (e.g. a virtualenv's).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("profiler-agent lives inside the workspace")
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "0" | "false"))
}

/// Prints `skipping: <test>: <reason>`, or panics under CI.
fn skip(test: &str, reason: &str) {
    assert!(!in_ci(), "{test} cannot run under CI: {reason}");
    eprintln!("skipping: {test}: {reason}");
}

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its `FROM` line and the instructions after it.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }

    /// Every `RUN` joined, to look for commands in order.
    fn runs(&self) -> String {
        self.all("RUN").join("\n")
    }
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (and parser directives) are dropped, also inside continuations.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("unexpected FROM {}", instruction.args),
            };
            stages.push(Stage {
                image: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{} before the first FROM", instruction.keyword))
                .instructions
                .push(instruction);
        }
    }
    stages
}

/// The strings of an exec-form (JSON array) instruction, e.g. `["/bin/x", "run"]`.
fn exec_form(args: &str) -> Vec<String> {
    let inner = args
        .trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("`{args}` is not in exec form (a JSON array)"));
    inner
        .split(',')
        .map(|item| {
            let item = item.trim();
            item.strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("`{item}` in `{args}` is not a string"))
                .to_string()
        })
        .collect()
}

/// The packages of every `apt-get install` in `runs`.
fn apt_packages(runs: &str) -> Vec<String> {
    let mut packages = Vec::new();
    for part in runs.split("apt-get install").skip(1) {
        let command = part.split(['&', ';', '\n', '|']).next().unwrap_or_default();
        packages.extend(
            command
                .split_whitespace()
                .filter(|word| !word.starts_with('-'))
                .map(String::from),
        );
    }
    packages
}

fn load(name: &str) -> Vec<Stage> {
    let path = workspace_root().join("deploy/docker").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let ignore = path.with_file_name(format!("{name}.dockerignore"));
    let ignore = std::fs::read_to_string(&ignore)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", ignore.display()));
    assert!(
        ignore.lines().any(|line| line.trim() == "target/"),
        "{name}.dockerignore must keep target/ out of the build context"
    );
    parse_dockerfile(&text)
}

/// Checks shared by both images; returns the (build, runtime) stages.
fn check_common<'a>(name: &str, stages: &'a [Stage], binary: &str) -> (&'a Stage, &'a Stage) {
    assert_eq!(stages.len(), 2, "{name}: a build and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);
    assert_eq!(
        build.image, "rust:1.95-bookworm",
        "{name}: build stage image"
    );
    assert_eq!(
        build.name.as_deref(),
        Some("build"),
        "{name}: build stage name"
    );
    assert_eq!(
        runtime.image, "debian:bookworm-slim",
        "{name}: runtime image"
    );
    let runs = build.runs();
    let cargo_build = format!("cargo build --release --locked -p {binary}");
    assert!(
        runs.contains(&cargo_build),
        "{name}: the build stage must run `{cargo_build}`"
    );
    assert!(
        build.all("COPY").contains(&". ."),
        "{name}: the build stage copies the workspace"
    );

    // The runtime stage: CA certificates, the binary, nothing else.
    assert_eq!(
        apt_packages(&runtime.runs()),
        vec!["ca-certificates"],
        "{name}: the runtime image installs only ca-certificates"
    );
    let installed = format!("/usr/local/bin/{binary}");
    let copies = runtime.all("COPY");
    assert_eq!(
        copies,
        vec![format!("--from=build /out/{binary} {installed}").as_str()],
        "{name}: the runtime stage copies only the binary from the build stage"
    );
    assert!(
        runs.contains(&format!("cp target/release/{binary} /out/")),
        "{name}: the build stage puts the binary in /out"
    );
    let entrypoint = exec_form(runtime.last("ENTRYPOINT").expect("an ENTRYPOINT"));
    assert_eq!(entrypoint, vec![installed], "{name}: ENTRYPOINT");
    exec_form(runtime.last("CMD").expect("a CMD"));
    (build, runtime)
}

#[test]
fn agent_dockerfile_builds_the_ebpf_object_and_ships_only_the_binary() {
    let stages = load("agent.Dockerfile");
    let (build, runtime) = check_common("agent.Dockerfile", &stages, "profiler-agent");
    let packages = apt_packages(&build.runs());
    for package in [
        "rustc-web",
        "cargo-web",
        "libstd-rust-web-dev-bpf",
        "llvm-22-dev",
    ] {
        assert!(
            packages.iter().any(|p| p == package),
            "agent.Dockerfile: the build stage must install {package} (has {packages:?})"
        );
    }
    let runs = build.runs();
    let ebpf = runs
        .find("cargo xtask build-ebpf")
        .expect("agent.Dockerfile: the build stage runs `cargo xtask build-ebpf`");
    let agent = runs.find("cargo build --release").expect("a cargo build");
    assert!(
        ebpf < agent,
        "the eBPF object is built before the agent embeds it"
    );
    // `cargo xtask` needs the workspace's alias.
    let config = std::fs::read_to_string(workspace_root().join(".cargo/config.toml"))
        .expect("read .cargo/config.toml");
    assert!(
        config.contains("xtask = "),
        "the `cargo xtask` alias is gone"
    );
    // Root: the container's capabilities belong to uid 0.
    let user = runtime.last("USER").unwrap_or("0");
    assert!(
        matches!(user, "0" | "0:0" | "root"),
        "agent.Dockerfile: the agent runs as root, not {user}"
    );
    let cmd = exec_form(runtime.last("CMD").expect("a CMD"));
    assert_eq!(cmd[0], "run", "the agent's default command is `run`");
}

#[test]
fn server_dockerfile_runs_as_a_non_root_user_with_its_data_in_a_volume() {
    let stages = load("server.Dockerfile");
    let (_, runtime) = check_common("server.Dockerfile", &stages, "profiler-server");
    let user = runtime.last("USER").expect("server.Dockerfile: a USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(uid, "0" | "root" | ""),
        "server.Dockerfile: the server must not run as root (USER {user})"
    );
    let runs = runtime.runs();
    assert!(
        runs.contains("useradd --system --uid 10001"),
        "server.Dockerfile: creates the server's user"
    );
    assert!(
        runs.contains("install -d -o profiler -g profiler -m 0750 /var/lib/profiler"),
        "server.Dockerfile: /var/lib/profiler belongs to the server's user"
    );
    assert_eq!(
        runtime.last("VOLUME"),
        Some(r#"["/var/lib/profiler"]"#),
        "server.Dockerfile: data volume"
    );
    let mut ports: Vec<&str> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, vec!["4040", "4317"], "server.Dockerfile: EXPOSE");
    let cmd = exec_form(runtime.last("CMD").expect("a CMD")).join(" ");
    assert_eq!(
        cmd,
        "--data-dir /var/lib/profiler --listen 0.0.0.0:4040 --otlp-listen 0.0.0.0:4317"
    );
}

#[test]
fn dockerfile_parser_joins_continuations_and_drops_comments() {
    let stages = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n  # inside\n  && y\nFROM c\nUSER 1\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("b"));
    assert_eq!(stages[0].last("RUN"), Some("x && y"));
    assert_eq!(stages[1].name, None);
    assert_eq!(stages[1].last("USER"), Some("1"));
    assert_eq!(
        apt_packages("apt-get install -y --no-install-recommends a b && rm x"),
        vec!["a", "b"]
    );
    assert_eq!(exec_form(r#"["/x", "run"]"#), vec!["/x", "run"]);
}

#[test]
fn kubernetes_manifests_and_helm_chart_validate_offline() {
    const TEST: &str = "kubernetes_manifests_and_helm_chart_validate_offline";
    let python = std::env::var("PROFILER_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let root = workspace_root();
    let output = match Command::new(&python)
        .arg(root.join("deploy/tests/validate.py"))
        .args(["--kube-version", "1.31.0"])
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
    {
        Ok(output) => output,
        Err(error) => return skip(TEST, &format!("cannot run {python}: {error}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => eprint!("{stdout}"),
        Some(77) => skip(TEST, stdout.trim().trim_start_matches("skipping: ")),
        _ => panic!(
            "deploy/tests/validate.py failed ({}):\n{stdout}{stderr}",
            output.status
        ),
    }
}
