//! `cargo xtask kernel-matrix`: boots Debian's 5.10, 6.1 and 6.12 kernels under QEMU and checks
//! that the CPU sampler's and the HTTP capture's programs load, attach and produce data on each.
//!
//! Inside every guest runs `kernel-check` (`profiler-agent/src/bin/kernel-check.rs`): the
//! agent's own loading code with the same embedded eBPF object, built statically so the guest
//! needs no libc. The steps:
//! 1. install QEMU and a static busybox (Debian packages) when missing;
//! 2. build `kernel-check` statically, with frame pointers, into `target/kernel-matrix`;
//! 3. pack an initramfs: busybox, `tests/kernel-matrix/init`, `kernel-check`, `/dev/console`;
//! 4. per kernel: download the pinned `linux-image-*` package once (never installed; cached
//!    under `~/.cache/profiler-tools/kernels/`), boot it with software emulation, keep the
//!    serial log in `target/kernel-matrix/logs/`, and read `KCHECK` lines from it.
//!
//! The facts behind the choices (no KVM here, single-threaded TCG, 5.10's memlock) are in
//! `shared/ebpf-toolchain.md`, "Kernel matrix under QEMU".

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{apt_install, build_ebpf, cargo, ebpf_build::tools_dir, run_checked, workspace_root};

#[derive(clap::Args)]
pub struct KernelMatrixArgs {
    /// Kernel to boot (repeatable): 5.10, 6.1 or 6.12. Default: all of them.
    #[arg(long = "kernel", value_name = "NAME")]
    kernels: Vec<String>,
    /// Seconds a guest may run before it is stopped and counted as failed.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

/// A Debian release whose archive serves kernel packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Release {
    Bullseye,
    Bookworm,
}

impl Release {
    fn codename(self) -> &'static str {
        match self {
            Release::Bullseye => "bullseye",
            Release::Bookworm => "bookworm",
        }
    }

    /// Its sources list: point releases and security updates (kernels move between the two).
    fn sources_list(self) -> String {
        let codename = self.codename();
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        format!(
            "deb [signed-by={keyring}] http://deb.debian.org/debian {codename} main\n\
             deb [signed-by={keyring}] http://deb.debian.org/debian-security {codename}-security main\n"
        )
    }
}

/// A kernel of the matrix.
struct Kernel {
    /// What `--kernel` takes.
    name: &'static str,
    /// The exact package: Debian replaces these with each point release, so when one is no
    /// longer served the run fails with the current names to pin instead.
    package: &'static str,
    release: Release,
}

const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        package: "linux-image-5.10.0-46-amd64",
        release: Release::Bullseye,
    },
    Kernel {
        name: "6.1",
        package: "linux-image-6.1.0-56-amd64",
        release: Release::Bookworm,
    },
    Kernel {
        name: "6.12",
        package: "linux-image-6.12.117+deb12-amd64",
        release: Release::Bookworm,
    },
];

/// Debian packages the matrix runs with: QEMU, and a busybox that needs no libc in the guest.
const HOST_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];
const BUSYBOX: &str = "/bin/busybox";
const QEMU: &str = "qemu-system-x86_64";
/// The guest's init script, relative to the workspace root.
const INIT_SCRIPT: &str = "tests/kernel-matrix/init";
/// Target dir of the static build: its RUSTFLAGS would invalidate the normal build's cache.
const TARGET_DIR: &str = "target/kernel-matrix";
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

pub fn run(args: KernelMatrixArgs) -> Result<()> {
    let kernels = select(&args.kernels)?;
    let root = workspace_root();
    install_host_tools()?;
    build_ebpf(true)?;
    let checker = build_kernel_check(&root)?;
    let out = root.join(TARGET_DIR);
    let initramfs = out.join("initramfs.cpio");
    write_initramfs(&initramfs, &root.join(INIT_SCRIPT), &checker)?;
    let logs = out.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let mut updated = HashSet::new();
    let mut outcomes = Vec::new();
    for kernel in kernels {
        let vmlinuz = fetch_kernel(kernel, &mut updated)?;
        let log = logs.join(format!("{}.log", kernel.name));
        eprintln!("booting {} ({})", kernel.name, kernel.package);
        let outcome = boot(
            kernel,
            &vmlinuz,
            &initramfs,
            &log,
            Duration::from_secs(args.timeout),
        )?;
        outcome.print_details();
        outcomes.push(outcome);
    }
    print_summary(&outcomes);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure().is_some())
        .map(|o| o.kernel.name)
        .collect();
    if !failed.is_empty() {
        bail!(
            "kernel matrix failed on {} (serial logs in {})",
            failed.join(", "),
            logs.display()
        );
    }
    Ok(())
}

/// One row per kernel and program, then one verdict per kernel.
fn print_summary(outcomes: &[Outcome]) {
    let width = outcomes
        .iter()
        .flat_map(|o| &o.programs)
        .map(|p| p.field("program").len())
        .max()
        .unwrap_or(0)
        .max("program".len());
    println!();
    println!(
        "{:<6} {:<width$} {:<9} {:<9} {:<9} kernel release",
        "kernel", "program", "loaded", "attached", "data"
    );
    for outcome in outcomes {
        for program in &outcome.programs {
            println!(
                "{:<6} {:<width$} {:<9} {:<9} {:<9} {}",
                outcome.kernel.name,
                program.field("program"),
                program.field("loaded"),
                program.field("attached"),
                program.field("data"),
                outcome.release.as_deref().unwrap_or("?")
            );
        }
    }
    for outcome in outcomes {
        let verdict = match outcome.failure() {
            None => "PASS".to_string(),
            Some(reason) => format!("FAIL: {reason}"),
        };
        println!(
            "{} ({}): {verdict} ({:.1} s)",
            outcome.kernel.name,
            outcome.kernel.package,
            outcome.elapsed.as_secs_f64()
        );
    }
}

/// The kernels named with `--kernel`, or all of them.
fn select(names: &[String]) -> Result<Vec<&'static Kernel>> {
    if names.is_empty() {
        return Ok(KERNELS.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            KERNELS.iter().find(|k| k.name == name).with_context(|| {
                let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                format!("unknown kernel `{name}`; known: {}", known.join(", "))
            })
        })
        .collect()
}

fn install_host_tools() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let had_qemu_utils = is_installed("qemu-utils");
    apt_install(&missing)?;
    // Machines of this project come with a newer qemu-utils (qemu-img, qemu-nbd) from
    // bookworm-backports, which bookworm's qemu-system-x86 makes apt remove: put back the
    // qemu-utils of the QEMU just installed, so the machine keeps those tools.
    if had_qemu_utils && !is_installed("qemu-utils") {
        eprintln!("reinstalling qemu-utils, which installing QEMU removed");
        apt_install(&["qemu-utils"])?;
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

/// Builds `kernel-check` as a static binary with frame pointers (its hot function must unwind).
fn build_kernel_check(root: &Path) -> Result<PathBuf> {
    eprintln!("building kernel-check (static, release) into {TARGET_DIR}");
    run_checked(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "profiler-agent",
                "--bin",
                "kernel-check",
            ])
            .args(["--target", HOST_TRIPLE, "--target-dir", TARGET_DIR])
            // With --target, these apply to the binary only, not to build scripts.
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C force-frame-pointers=yes",
            )
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            // Symbols without DWARF: a 5 MB binary instead of 30 MB, which the emulated guests
            // load and symbolize seconds faster (function names are all the checks need).
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0"),
    )?;
    Ok(root
        .join(TARGET_DIR)
        .join(HOST_TRIPLE)
        .join("release/kernel-check"))
}

/// Writes an uncompressed newc cpio archive: the kernel unpacks it as the initramfs. Written
/// here rather than with `cpio`, so `/dev/console` needs no `mknod` on the host; uncompressed,
/// because the guest CPU is emulated and gunzip there costs more than reading the bytes.
fn write_initramfs(path: &Path, init: &Path, checker: &Path) -> Result<()> {
    let read =
        |file: &Path| fs::read(file).with_context(|| format!("cannot read {}", file.display()));
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut cpio = Cpio {
        out: BufWriter::new(file),
        next_inode: 1,
    };
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
    ] {
        cpio.entry(dir, 0o040_755, 0, &[])?;
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    cpio.entry("dev/console", 0o020_600, libc::makedev(5, 1), &[])?;
    cpio.entry("bin/busybox", 0o100_755, 0, &read(Path::new(BUSYBOX))?)?;
    cpio.entry("init", 0o100_755, 0, &read(init)?)?;
    cpio.entry("kernel-check", 0o100_755, 0, &read(checker)?)?;
    cpio.entry("TRAILER!!!", 0, 0, &[])?;
    cpio.out
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A writer of the "new ASCII" cpio format (`070701`), as `Documentation/driver-api/
/// early-userspace/buffer-format.rst` describes for initramfs.
struct Cpio {
    out: BufWriter<File>,
    next_inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: libc::dev_t, data: &[u8]) -> Result<()> {
        let name_size = name.len() + 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0, // mtime
            u32::try_from(data.len()).context("file too large for cpio")?,
            0, // devmajor
            0, // devminor
            libc::major(rdev),
            libc::minor(rdev),
            name_size as u32,
            0, // check
        ];
        self.next_inode += 1;
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        let write = |out: &mut BufWriter<File>, bytes: &[u8]| {
            out.write_all(bytes).context("cannot write the initramfs")
        };
        write(&mut self.out, header.as_bytes())?;
        write(&mut self.out, name.as_bytes())?;
        // The name (header included) and the data are each padded to 4 bytes.
        write(&mut self.out, &[0; 4][..1 + pad4(header.len() + name_size)])?;
        write(&mut self.out, data)?;
        write(&mut self.out, &[0; 4][..pad4(data.len())])
    }
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The kernel image of `kernel`, downloaded and unpacked once into the tools cache.
fn fetch_kernel(kernel: &Kernel, updated: &mut HashSet<Release>) -> Result<PathBuf> {
    let cache = tools_dir().join("kernels");
    let dir = cache.join(kernel.package);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    let apt = AptRoot::new(&cache, kernel.release)?;
    if updated.insert(kernel.release) {
        eprintln!(
            "updating the package lists of {} (private, in {})",
            kernel.release.codename(),
            apt.dir.display()
        );
        run_checked(apt.command("apt-get").args(["update", "-qq"]))?;
    }
    if !apt.serves(kernel.package) {
        bail!(
            "Debian no longer serves {} (a point release replaced it); pin one of these in \
             xtask/src/kernel_matrix.rs:\n{}",
            kernel.package,
            apt.candidates(kernel.name)
        );
    }

    // Download and unpack into a scratch dir, then move only the image into place, so an
    // interrupted run never leaves a half-written cache entry.
    let scratch = cache.join(format!("{}.partial", kernel.package));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    eprintln!("downloading {}", kernel.package);
    run_checked(
        apt.command("apt-get")
            .args(["download", "-qq", kernel.package])
            .current_dir(&scratch),
    )?;
    let deb = fs::read_dir(&scratch)
        .with_context(|| format!("cannot list {}", scratch.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", scratch.display()))?;
    let mut unpack = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tar_input = unpack.stdout.take().context("dpkg-deb has no stdout")?;
    run_checked(
        Command::new("tar")
            .args(["-x", "-C"])
            .arg(&scratch)
            .arg("./boot/")
            .stdin(tar_input),
    )?;
    let status = unpack.wait().context("waiting for dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb --fsys-tarfile {} failed: {status}", deb.display());
    }
    let boot = scratch.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .with_context(|| format!("cannot list {}", boot.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("{} has no {prefix}*", deb.display()))
    };
    let image = find("vmlinuz-")?;
    let config = find("config-")?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::rename(&config, dir.join("config")).context("cannot move the kernel config")?;
    fs::rename(&image, &vmlinuz).context("cannot move the kernel image")?;
    let _ = fs::remove_dir_all(&scratch);
    Ok(vmlinuz)
}

/// A private apt configuration for one Debian release (own sources, lists and cache), so the
/// system's apt sources and state stay untouched.
struct AptRoot {
    dir: PathBuf,
    config: PathBuf,
}

impl AptRoot {
    fn new(cache: &Path, release: Release) -> Result<Self> {
        let dir = cache.join("apt").join(release.codename());
        for sub in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "lists/partial",
            "cache/archives/partial",
        ] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        let write = |path: PathBuf, text: String| {
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(dir.join("etc/sources.list"), release.sources_list())?;
        let d = dir.display();
        let config = dir.join("apt.conf");
        write(
            config.clone(),
            format!(
                "Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
                 Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
                 Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
                 Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
                 Dir::State::Lists \"{d}/lists\";\n\
                 Dir::Cache \"{d}/cache\";\n\
                 Dir::State::status \"/dev/null\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Architectures \"amd64\";\n"
            ),
        )?;
        Ok(AptRoot { dir, config })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("APT_CONFIG", &self.config);
        if crate::is_root() {
            // The private dirs belong to root; apt's `_apt` sandbox user could not write them.
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command
    }

    /// Whether the archive has `package` (at any version).
    fn serves(&self, package: &str) -> bool {
        self.command("apt-cache")
            .args(["show", "--no-all-versions", package])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// The generic amd64 images of kernel series `series` the archive serves now.
    fn candidates(&self, series: &str) -> String {
        let pattern = format!(
            "^linux-image-{}\\.[0-9.+a-z-]*-amd64$",
            series.replace('.', "\\.")
        );
        self.command("apt-cache")
            .args(["search", "--names-only", &pattern])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.contains("-cloud-") && !line.contains("-rt-"))
            .map(|line| format!("  {line}\n"))
            .collect()
    }
}

/// What one guest reported.
struct Outcome {
    kernel: &'static Kernel,
    elapsed: Duration,
    log: PathBuf,
    /// The limit the guest ran into, if it did.
    timed_out: Option<Duration>,
    /// Whether the guest's /init started (it prints `KCHECK-BOOTED`).
    booted: bool,
    /// `uname -r` inside the guest.
    release: Option<String>,
    programs: Vec<ProgramLine>,
    /// `KCHECK-NOTE` lines: what kernel-check could not observe.
    notes: Vec<String>,
    /// (program, full error text with the verifier log).
    errors: Vec<(String, String)>,
    /// `Some(None)`: PASS; `Some(Some(reason))`: FAIL; `None`: no verdict printed.
    result: Option<Option<String>>,
    /// Lines where the guest kernel oopsed or panicked.
    kernel_faults: Vec<String>,
}

/// One `KCHECK program=...` line: `key=value` fields in order.
struct ProgramLine {
    fields: Vec<(String, String)>,
}

impl ProgramLine {
    fn parse(text: &str) -> Self {
        let fields = text
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        ProgramLine { fields }
    }

    fn field(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("?", |(_, v)| v.as_str())
    }
}

impl Outcome {
    fn parse(kernel: &'static Kernel, log: &str) -> Self {
        let mut outcome = Outcome {
            kernel,
            elapsed: Duration::ZERO,
            log: PathBuf::new(),
            timed_out: None,
            booted: false,
            release: None,
            programs: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            result: None,
            kernel_faults: Vec::new(),
        };
        let mut error: Option<(String, Vec<&str>)> = None;
        for line in log.lines().map(|line| line.trim_end_matches('\r')) {
            if let Some((program, lines)) = &mut error {
                if line.trim() == "KCHECK-ERROR-END" {
                    outcome.errors.push((program.clone(), lines.join("\n")));
                    error = None;
                } else {
                    lines.push(line);
                }
                continue;
            }
            if line.contains("Oops") || line.contains("Kernel panic") {
                outcome.kernel_faults.push(line.to_string());
            }
            let Some(start) = line.find("KCHECK") else {
                continue;
            };
            let line = &line[start..];
            if line.starts_with("KCHECK-BOOTED") {
                outcome.booted = true;
            } else if let Some(rest) = line.strip_prefix("KCHECK-KERNEL ") {
                outcome.release = Some(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("KCHECK program=") {
                outcome
                    .programs
                    .push(ProgramLine::parse(&format!("program={rest}")));
            } else if let Some(rest) = line.strip_prefix("KCHECK-NOTE ") {
                outcome.notes.push(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("KCHECK-ERROR-BEGIN program=") {
                error = Some((rest.trim().to_string(), Vec::new()));
            } else if let Some(rest) = line.strip_prefix("KCHECK-RESULT ") {
                outcome.result = Some(match rest.trim() {
                    "PASS" => None,
                    other => Some(
                        other
                            .strip_prefix("FAIL")
                            .unwrap_or(other)
                            .trim()
                            .to_string(),
                    ),
                });
            }
        }
        if let Some((program, lines)) = error {
            // The guest died in the middle of an error report: keep what arrived.
            outcome.errors.push((program, lines.join("\n")));
        }
        outcome
    }

    /// Why this kernel failed, or `None` when it passed.
    fn failure(&self) -> Option<String> {
        if let Some(limit) = self.timed_out {
            return Some(format!(
                "timed out after {} s (see the serial log)",
                limit.as_secs()
            ));
        }
        if let Some(fault) = self.kernel_faults.first() {
            return Some(format!("guest kernel fault: {}", fault.trim()));
        }
        match &self.result {
            Some(None) => None,
            Some(Some(reason)) => Some(reason.clone()),
            None if !self.booted => Some("the guest never reached /init".to_string()),
            None => Some("kernel-check printed no result (it crashed)".to_string()),
        }
    }

    fn print_details(&self) {
        let verdict = match self.failure() {
            None => "PASS".to_string(),
            Some(reason) => format!("FAIL: {reason}"),
        };
        println!(
            "{} ({}, guest kernel {}): {verdict} in {:.1} s",
            self.kernel.name,
            self.kernel.package,
            self.release.as_deref().unwrap_or("?"),
            self.elapsed.as_secs_f64()
        );
        for program in &self.programs {
            let details: Vec<String> = program
                .fields
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            println!("  {}", details.join(" "));
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
        for (program, text) in &self.errors {
            println!("  error of {program} on {}:", self.kernel.name);
            for line in text.lines() {
                println!("    {line}");
            }
        }
        if self.failure().is_some() {
            println!("  serial log: {}", self.log.display());
        }
    }
}

/// Boots `kernel` with the initramfs and waits for the guest to power off (or the timeout).
fn boot(
    kernel: &'static Kernel,
    vmlinuz: &Path,
    initramfs: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Outcome> {
    let log_file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let stderr = log_file.try_clone().context("cannot share the log file")?;
    let start = Instant::now();
    let mut qemu = Command::new(QEMU)
        // No KVM on these machines (a /dev/kvm without VMX); multi-threaded TCG crashed 6.12.
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot run {QEMU}"))?;
    let mut timed_out = None;
    // QEMU exits 0 whether the guest passed, failed or panicked: the log decides.
    while qemu.try_wait().context("waiting for QEMU")?.is_none() {
        if start.elapsed() > timeout {
            timed_out = Some(timeout);
            let _ = qemu.kill();
            let _ = qemu.wait();
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let elapsed = start.elapsed();
    let bytes = fs::read(log).with_context(|| format!("cannot read {}", log.display()))?;
    let mut outcome = Outcome::parse(kernel, &String::from_utf8_lossy(&bytes));
    outcome.elapsed = elapsed;
    outcome.timed_out = timed_out;
    outcome.log = log.to_path_buf();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned() {
        let dir = std::env::temp_dir().join(format!("kernel-matrix-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("a.cpio");
        let mut cpio = Cpio {
            out: BufWriter::new(File::create(&path).expect("create")),
            next_inode: 1,
        };
        cpio.entry("init", 0o100_755, 0, b"#!/bin/sh\n")
            .expect("entry");
        cpio.entry("dev/console", 0o020_600, libc::makedev(5, 1), &[])
            .expect("entry");
        cpio.entry("TRAILER!!!", 0, 0, &[]).expect("entry");
        cpio.out.flush().expect("flush");
        let bytes = fs::read(&path).expect("read");
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(bytes.len() % 4, 0);
        // Header (110) + "init\0" padded to 116, then 10 bytes of data padded to 12.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[128..134], b"070701");
        // rdevmajor of /dev/console.
        assert_eq!(&bytes[128 + 6 + 9 * 8..128 + 6 + 10 * 8], b"00000005");
    }

    #[test]
    fn reads_results_errors_and_faults_from_the_serial_log() {
        let log = "[    1.0] booting\r\nKCHECK-KERNEL 5.10.0-46-amd64\r\n\
                   KCHECK program=on_cpu_sample loaded=yes attached=yes data=yes samples=9\r\n\
                   KCHECK program=on_process_fork loaded=no attached=not-tried data=not-tried\r\n\
                   KCHECK-ERROR-BEGIN program=on_process_fork\r\n\
                   eBPF program `on_process_fork`: the BPF_PROG_LOAD syscall returned ...\r\n\
                   0: (bf) r6 = r1\r\nKCHECK-ERROR-END\r\n\
                   KCHECK-RESULT FAIL on_process_fork: not loaded\r\n";
        let outcome = Outcome::parse(&KERNELS[0], log);
        assert_eq!(outcome.release.as_deref(), Some("5.10.0-46-amd64"));
        assert_eq!(outcome.programs.len(), 2);
        assert_eq!(outcome.programs[0].field("samples"), "9");
        assert_eq!(outcome.programs[1].field("loaded"), "no");
        assert_eq!(outcome.errors.len(), 1);
        assert!(outcome.errors[0].1.ends_with("0: (bf) r6 = r1"));
        assert_eq!(
            outcome.failure().as_deref(),
            Some("on_process_fork: not loaded")
        );

        let passed = Outcome::parse(&KERNELS[1], "KCHECK-RESULT PASS\n");
        assert_eq!(passed.failure(), None);
        let oops = Outcome::parse(
            &KERNELS[1],
            "BUG: x\nOops: 0000 [#1] SMP\nKCHECK-RESULT PASS\n",
        );
        assert!(oops.failure().is_some_and(|f| f.contains("Oops")));
        let panicked = Outcome::parse(&KERNELS[2], "Kernel panic - not syncing\n");
        assert!(panicked
            .failure()
            .is_some_and(|f| f.contains("Kernel panic")));
        let crashed = Outcome::parse(&KERNELS[2], "KCHECK-BOOTED 6.12\nSegmentation fault\n");
        assert!(crashed.failure().is_some_and(|f| f.contains("crashed")));
        let silent = Outcome::parse(&KERNELS[2], "SeaBIOS\n");
        assert!(silent.failure().is_some_and(|f| f.contains("/init")));
    }

    #[test]
    fn selects_kernels_by_name() {
        assert_eq!(select(&[]).expect("all").len(), KERNELS.len());
        let one = select(&["6.12".to_string()]).expect("6.12");
        assert_eq!(one[0].package, "linux-image-6.12.117+deb12-amd64");
        assert!(select(&["4.19".to_string()]).is_err());
    }
}
