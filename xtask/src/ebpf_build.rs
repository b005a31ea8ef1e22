//! Finds the eBPF toolchain and builds `profiler-ebpf` with it.
//!
//! Shared by `cargo xtask build-ebpf` and profiler-agent's build script (included there with
//! `#[path]`), so it uses std only. The facts behind it are in `shared/ebpf-toolchain.md`:
//! Debian's `rustc-web` (which ships `core` for `bpfel-unknown-none`) compiles the crate, and a
//! `bpf-linker` built against the same LLVM major links it. Nothing here installs anything.

use std::{
    env,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

/// The bpf-linker release known to work with aya-ebpf 0.2.1.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's rustc that ships prebuilt `core` for the BPF targets.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's cargo, called by full path because rustup's proxies come first on PATH.
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Where `libstd-rust-web-dev-bpf` puts `core` and `alloc` for the target.
pub const BPF_SYSROOT_LIB: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
/// Debian packages that provide the compiler side.
pub const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// The target triple of the kernel programs.
pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// What is missing to build the kernel programs, with the command that installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Debian's rustc/cargo or the BPF `core` library.
    DebianRust { what: String },
    /// bpf-linker is not in the tools cache.
    Linker { llvm_major: u32, root: PathBuf },
}

impl Missing {
    /// The shell command that installs what is missing.
    pub fn install_command(&self) -> String {
        match self {
            Missing::DebianRust { .. } => format!(
                "apt-get install -y --no-install-recommends {}",
                DEBIAN_PACKAGES.join(" ")
            ),
            Missing::Linker { llvm_major, root } => linker_install_command(*llvm_major, root),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::DebianRust { what } => write!(f, "{what} is missing"),
            Missing::Linker { root, .. } => {
                write!(
                    f,
                    "bpf-linker {BPF_LINKER_VERSION} is not in {}",
                    root.display()
                )
            }
        }
    }
}

/// The shell command that installs bpf-linker for `llvm_major` into `root`.
pub fn linker_install_command(llvm_major: u32, root: &Path) -> String {
    format!(
        "LLVM_PREFIX=/usr/lib/llvm-{llvm_major} cargo install --locked bpf-linker@{BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{llvm_major} --root {}",
        root.display()
    )
}

/// A complete toolchain for the kernel programs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// Directory holding the `bpf-linker` binary (put first on the child's PATH).
    pub linker_dir: PathBuf,
}

/// Directory caching tools built for this project: `$PROFILER_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/profiler-tools`, else `~/.cache/profiler-tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = env::var_os("PROFILER_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("profiler-tools");
    }
    let home = env::var_os("HOME").unwrap_or_else(|| OsString::from("/root"));
    PathBuf::from(home).join(".cache/profiler-tools")
}

/// Where bpf-linker for `llvm_major` is installed (`cargo install --root`).
pub fn linker_root(llvm_major: u32) -> PathBuf {
    tools_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{llvm_major}"))
}

/// The LLVM major version of Debian's rustc (`rustc -vV` → `LLVM version: 22.1.8`).
pub fn rustc_llvm_major() -> Result<u32, Missing> {
    let missing = || Missing::DebianRust {
        what: format!("Debian's rustc ({DEBIAN_RUSTC})"),
    };
    let output = Command::new(DEBIAN_RUSTC)
        .arg("-vV")
        .output()
        .map_err(|_| missing())?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.trim().parse().ok())
        .ok_or_else(missing)
}

/// Checks every piece of the toolchain, returning the first one missing.
pub fn find_toolchain() -> Result<Toolchain, Missing> {
    if !Path::new(DEBIAN_CARGO).exists() {
        return Err(Missing::DebianRust {
            what: format!("Debian's cargo ({DEBIAN_CARGO})"),
        });
    }
    let llvm_major = rustc_llvm_major()?;
    if !Path::new(BPF_SYSROOT_LIB).is_dir() {
        return Err(Missing::DebianRust {
            what: format!("the {BPF_TARGET} core library ({BPF_SYSROOT_LIB})"),
        });
    }
    let root = linker_root(llvm_major);
    let linker_dir = root.join("bin");
    if !linker_dir.join("bpf-linker").is_file() {
        return Err(Missing::Linker { llvm_major, root });
    }
    Ok(Toolchain { linker_dir })
}

/// The eBPF crate's directory.
pub fn ebpf_crate_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("profiler-ebpf")
}

/// The stable target directory of the eBPF build: `$CARGO_TARGET_DIR/ebpf` or `target/ebpf`.
pub fn ebpf_target_dir(workspace_root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root.join("target"))
        .join("ebpf")
}

/// Path of the linked object after a release build.
pub fn ebpf_object_path(workspace_root: &Path) -> PathBuf {
    ebpf_target_dir(workspace_root)
        .join(BPF_TARGET)
        .join("release")
        .join("profiler-ebpf")
}

/// Builds the kernel programs (release profile) and returns the object's path. On failure the
/// error holds cargo's output.
pub fn build(workspace_root: &Path, toolchain: &Toolchain) -> Result<PathBuf, String> {
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(ebpf_crate_dir(workspace_root))
        .args(["build", "--release", "--target-dir"])
        .arg(ebpf_target_dir(workspace_root));
    // The parent may be a cargo build script or a rustup-managed cargo: none of its settings
    // must leak into the child, which builds for another target with another compiler.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let inherited = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key.as_ref(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTUP_TOOLCHAIN"
                    | "RUSTDOC"
                    | "RUSTC_LINKER"
                    | "DEBUG"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "NUM_JOBS"
            );
        if inherited {
            cmd.env_remove(key.as_ref());
        }
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![toolchain.linker_dir.clone()];
    paths.extend(env::split_paths(&path));
    let joined = env::join_paths(paths).map_err(|e| format!("cannot build PATH: {e}"))?;
    cmd.env("PATH", joined)
        .env("RUSTC", DEBIAN_RUSTC)
        // aya-ebpf enables an unstable feature on the BPF target; scoped to that crate.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf");
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {DEBIAN_CARGO}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building profiler-ebpf failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let object = ebpf_object_path(workspace_root);
    if !object.is_file() {
        return Err(format!(
            "cargo succeeded but {} does not exist",
            object.display()
        ));
    }
    Ok(object)
}
