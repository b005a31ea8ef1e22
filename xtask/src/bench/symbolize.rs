//! Entry 6, symbolization: frames per second of the agent's symbolizer on a large binary with
//! DWARF (this workspace's `profiler-server` built in the dev profile), with a cold symbolizer,
//! a warm one and with the file warm but new addresses, against GNU addr2line and
//! llvm-addr2line on the same addresses, with the agreement of the innermost function names and
//! each one's peak RSS. The measuring program is `profiler-agent/examples/symbolize_bench.rs`
//! (its module doc says what it times and why that is the agent's path). Start at [`run`];
//! [`innermost_names`] and [`normalize`] read and compare the tools' answers.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{http::row, reset_peak_rss, spread, wait_for};
use crate::run_checked;

/// The binary symbolized: large, with full DWARF, and built by this workspace.
const TARGET_PACKAGE: &str = "profiler-server";
/// The measuring program (an example of profiler-agent).
const EXAMPLE: &str = "symbolize_bench";
/// How many disagreements the section quotes.
const QUOTED_DISAGREEMENTS: usize = 3;

/// An addr2line implementation run on the same addresses.
struct Tool {
    /// What the section calls it, with its version.
    name: String,
    program: PathBuf,
    /// File name stem of its outputs.
    slug: &'static str,
}

/// One run of the measuring program: the `key value` lines it printed.
struct OurRun(HashMap<String, f64>);

impl OurRun {
    fn get(&self, key: &str) -> Result<f64> {
        self.0
            .get(key)
            .copied()
            .with_context(|| format!("{EXAMPLE} printed no `{key}`"))
    }
}

/// One repeat of a tool: wall time and peak RSS over the first set alone and over both sets.
struct ToolRun {
    first_seconds: f64,
    both_seconds: f64,
    both_peak_rss_kib: u64,
}

/// How one tool's innermost function names compare with ours.
#[derive(Debug, Default, PartialEq)]
struct Agreement {
    addresses: usize,
    agree: usize,
    ours_unresolved: usize,
    theirs_unresolved: usize,
    /// (address, ours, theirs), the first few that differ.
    examples: Vec<(u64, String, String)>,
}

/// Runs the entry and returns its section of BENCHMARKS.md (without the heading).
pub fn run(root: &Path, bench_dir: &Path, repeats: usize, addresses: usize) -> Result<String> {
    run_checked(crate::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "profiler-agent",
        "--example",
        EXAMPLE,
    ]))?;
    run_checked(crate::cargo().current_dir(root).args([
        "build",
        "-p",
        TARGET_PACKAGE,
        "--bin",
        TARGET_PACKAGE,
    ]))?;
    let example = root.join("target/release/examples").join(EXAMPLE);
    let dir = bench_dir.join("symbolize");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A copy, so a rebuild meanwhile cannot change the binary between tools or repeats; copying
    // also leaves it in the page cache for every run.
    let binary = dir.join(TARGET_PACKAGE);
    let built = root.join("target/debug").join(TARGET_PACKAGE);
    fs::copy(&built, &binary)
        .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
    let tools = tools()?;
    let binary_bytes = fs::metadata(&binary)
        .with_context(|| format!("reading the size of {}", binary.display()))?
        .len();
    let dwarf_bytes = dwarf_bytes(&binary)?;

    let mut ours = Vec::new();
    let mut theirs: Vec<Vec<ToolRun>> = tools.iter().map(|_| Vec::new()).collect();
    for repeat in 1..=repeats {
        let run = run_ours(&example, &binary, addresses, &dir)?;
        let n = run.get("addresses")?;
        eprintln!(
            "symbolize, repeat {repeat}: ours {:.0} frames/s cold, {:.0} warm, {:.0} new \
             addresses, peak RSS {:.1} MiB",
            n / run.get("cold_seconds")?,
            n / run.get("warm_seconds")?,
            n / run.get("new_seconds")?,
            run.get("peak_rss_kib")? / 1024.0,
        );
        ours.push(run);
        for (tool, runs) in tools.iter().zip(&mut theirs) {
            let first = run_tool(tool, &binary, &dir.join("cold.txt"), &dir, "first")?;
            let both = run_tool(tool, &binary, &dir.join("both.txt"), &dir, "both")?;
            eprintln!(
                "symbolize, repeat {repeat}: {} {:.0} frames/s cold, {:.2} s for both sets, \
                 peak RSS {:.1} MiB",
                tool.name,
                n / first.0,
                both.0,
                both.1 as f64 / 1024.0
            );
            runs.push(ToolRun {
                first_seconds: first.0,
                both_seconds: both.0,
                both_peak_rss_kib: both.1,
            });
        }
    }

    let names_path = dir.join("ours.tsv");
    let our_names = fs::read_to_string(&names_path)
        .with_context(|| format!("reading {}", names_path.display()))?;
    let mut agreements = Vec::new();
    for tool in &tools {
        let path = dir.join(format!("{}.both.out", tool.slug));
        let output =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        agreements.push(agreement(&our_names, &innermost_names(&output)?)?);
    }
    report(&Report {
        repeats,
        binary_bytes,
        dwarf_bytes,
        ours: &ours,
        tools: &tools,
        theirs: &theirs,
        agreements: &agreements,
    })
}

/// GNU addr2line (installing binutils when missing) and llvm-addr2line of the LLVM the eBPF
/// toolchain installed, when present.
fn tools() -> Result<Vec<Tool>> {
    let version = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    if version(Path::new("addr2line")).is_none() {
        crate::apt_install(&["binutils"])?;
    }
    let gnu_version = version(Path::new("addr2line"))
        .context("addr2line does not run after installing binutils")?;
    let mut tools = vec![Tool {
        // `GNU addr2line (GNU Binutils for Debian) 2.40`: the last word is the version.
        name: format!(
            "GNU addr2line {}",
            gnu_version
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().last())
                .unwrap_or("(unknown version)")
        ),
        program: PathBuf::from("addr2line"),
        slug: "gnu",
    }];
    let mut candidates = Vec::new();
    if let Ok(major) = crate::ebpf_build::rustc_llvm_major() {
        candidates.push(PathBuf::from(format!("llvm-addr2line-{major}")));
        candidates.push(PathBuf::from(format!(
            "/usr/lib/llvm-{major}/bin/llvm-addr2line"
        )));
    }
    candidates.push(PathBuf::from("llvm-addr2line"));
    match candidates
        .into_iter()
        .find_map(|program| Some((version(&program)?, program)))
    {
        Some((text, program)) => tools.push(Tool {
            // `Debian LLVM version 22.1.8`: the version follows `LLVM version`.
            name: format!(
                "llvm-addr2line {}",
                text.lines()
                    .find_map(|line| Some(line.split_once("LLVM version ")?.1.trim()))
                    .unwrap_or("(unknown version)")
            ),
            program,
            slug: "llvm",
        }),
        None => eprintln!(
            "note: no llvm-addr2line (it comes with the LLVM of `cargo xtask build-ebpf`); \
             comparing with GNU addr2line only"
        ),
    }
    Ok(tools)
}

/// Sum of the sizes of the `.debug_*` sections, as stored (read with `readelf -SW`).
fn dwarf_bytes(binary: &Path) -> Result<u64> {
    let output = Command::new("readelf")
        .arg("-SW")
        .arg(binary)
        .output()
        .context("running readelf (binutils)")?;
    if !output.status.success() {
        bail!(
            "readelf -SW {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(section_sizes(&String::from_utf8_lossy(&output.stdout))
        .filter(|(name, _)| name.starts_with(".debug_"))
        .map(|(_, size)| size)
        .sum())
}

/// (name, size) of each section in `readelf -SW` output:
/// `  [34] .debug_info  PROGBITS  0000000000000000 ffca8d 22a00df 00  0  0  1`.
fn section_sizes(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (_, rest) = line.trim_start().strip_prefix('[')?.split_once(']')?;
        let mut fields = rest.split_whitespace();
        let name = fields.next()?;
        let size = fields.nth(3)?;
        Some((name, u64::from_str_radix(size, 16).ok()?))
    })
}

/// Runs the measuring program; it writes `cold.txt`, `new.txt` and `ours.tsv` into `dir`, and
/// `both.txt` (both sets, for the tools) is written here.
fn run_ours(example: &Path, binary: &Path, addresses: usize, dir: &Path) -> Result<OurRun> {
    let output = Command::new(example)
        .arg("--binary")
        .arg(binary)
        .arg("--addresses")
        .arg(addresses.to_string())
        .arg("--out")
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", example.display()))?;
    if !output.status.success() {
        bail!("{EXAMPLE} failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut values = HashMap::new();
    for line in text.lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(key, value)| Some((key.to_string(), value.parse().ok()?)));
        let Some((key, value)) = parsed else {
            bail!("{EXAMPLE} printed `{line}`, not `key number`");
        };
        values.insert(key, value);
    }
    let mut both = fs::read_to_string(dir.join("cold.txt")).context("reading cold.txt")?;
    both += &fs::read_to_string(dir.join("new.txt")).context("reading new.txt")?;
    fs::write(dir.join("both.txt"), both).context("writing both.txt")?;
    Ok(OurRun(values))
}

/// Runs `tool -a -f -i -C -e binary < input` into `dir/SLUG.LABEL.out`; returns its wall time
/// in seconds and peak RSS in KiB.
fn run_tool(
    tool: &Tool,
    binary: &Path,
    input: &Path,
    dir: &Path,
    label: &str,
) -> Result<(f64, u64)> {
    let stdin = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let out = dir.join(format!("{}.{label}.out", tool.slug));
    let stdout = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let err = dir.join(format!("{}.{label}.stderr", tool.slug));
    let stderr = File::create(&err).with_context(|| format!("creating {}", err.display()))?;
    reset_peak_rss()?;
    let started = Instant::now();
    // -a prints each address before its answer, which delimits the answers; -i adds the inlined
    // functions, innermost first, as the agent does.
    let child = Command::new(&tool.program)
        .args(["-a", "-f", "-i", "-C", "-e"])
        .arg(binary)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", tool.program.display()))?;
    let usage = wait_for(child.id(), started, &tool.name)
        .with_context(|| format!("see {}", err.display()))?;
    Ok((usage.wall.as_secs_f64(), usage.max_rss_kib))
}

/// The innermost function addr2line printed for each address (`-a -f -i` output: the address,
/// then function and `file:line` pairs, innermost first); `??` becomes empty.
fn innermost_names(output: &str) -> Result<HashMap<u64, String>> {
    let mut names = HashMap::new();
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        let Some(hex) = line.strip_prefix("0x") else {
            continue;
        };
        let address = u64::from_str_radix(hex, 16)
            .with_context(|| format!("addr2line printed the address `{line}`"))?;
        let function = lines.next().unwrap_or_default();
        let function = if function == "??" { "" } else { function };
        names.insert(address, function.to_string());
    }
    Ok(names)
}

/// Compares our names (`ours.tsv`: address, tab, name) with a tool's.
fn agreement(ours: &str, theirs: &HashMap<u64, String>) -> Result<Agreement> {
    let mut result = Agreement::default();
    for line in ours.lines() {
        let Some((hex, name)) = line.split_once('\t') else {
            bail!("ours.tsv has the line `{line}`, not `address<TAB>name`");
        };
        let address = u64::from_str_radix(hex.trim_start_matches("0x"), 16)
            .with_context(|| format!("ours.tsv has the address `{hex}`"))?;
        let their_name = theirs.get(&address).map_or("", String::as_str);
        result.addresses += 1;
        result.ours_unresolved += usize::from(name.is_empty());
        result.theirs_unresolved += usize::from(their_name.is_empty());
        if normalize(name) == normalize(their_name) {
            result.agree += 1;
        } else if result.examples.len() < QUOTED_DISAGREEMENTS {
            result
                .examples
                .push((address, name.to_string(), their_name.to_string()));
        }
    }
    Ok(result)
}

/// A demangled function name made comparable across demanglers: Rust's legacy escapes decoded
/// where a demangler left them (LLVM's Itanium demangler reads `_ZN..E` Rust symbols as C++ and
/// keeps `$LT$`, `$u20$` and `..`, as rustc-demangle would not), and the legacy hash suffix
/// (`::h` and 16 hex digits, which GNU and rustc-demangle's `{:#}` drop) dropped.
fn normalize(name: &str) -> String {
    let name = match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    };
    if !name.contains('$') {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    let mut segment_start = true;
    while !rest.is_empty() {
        // A legacy path segment starting with an escape gets a leading `_` (`_$LT$T$u20$as..`),
        // which rustc-demangle drops.
        if segment_start && rest.starts_with("_$") && legacy_escape(&rest[1..]).is_some() {
            rest = &rest[1..];
        }
        segment_start = false;
        if let Some(tail) = rest.strip_prefix("..").or_else(|| rest.strip_prefix("::")) {
            out.push_str("::");
            rest = tail;
            segment_start = true;
        } else if let Some((decoded, tail)) = legacy_escape(rest) {
            out.push(decoded);
            rest = tail;
        } else {
            let mut chars = rest.chars();
            out.extend(chars.next());
            rest = chars.as_str();
        }
    }
    out
}

/// The character of a Rust legacy escape at the start of `text` (`$LT$`, `$u7b$`, ..) and
/// what follows it.
fn legacy_escape(text: &str) -> Option<(char, &str)> {
    let inner = text.strip_prefix('$')?;
    let (code, tail) = inner.split_once('$')?;
    let decoded = match code {
        "SP" => '@',
        "BP" => '*',
        "RF" => '&',
        "LT" => '<',
        "GT" => '>',
        "LP" => '(',
        "RP" => ')',
        "C" => ',',
        _ => char::from_u32(u32::from_str_radix(code.strip_prefix('u')?, 16).ok()?)?,
    };
    Some((decoded, tail))
}

/// Everything the section shows.
struct Report<'a> {
    repeats: usize,
    binary_bytes: u64,
    dwarf_bytes: u64,
    ours: &'a [OurRun],
    tools: &'a [Tool],
    /// Per tool, one run per repeat.
    theirs: &'a [Vec<ToolRun>],
    /// Per tool.
    agreements: &'a [Agreement],
}

/// Writes the section.
fn report(report: &Report<'_>) -> Result<String> {
    let Report {
        repeats,
        binary_bytes,
        dwarf_bytes,
        ours,
        tools,
        theirs,
        agreements,
    } = report;
    let series = |key: &str| -> Result<Vec<f64>> { ours.iter().map(|run| run.get(key)).collect() };
    let last = ours.last().context("no repeat ran")?;
    let n = last.get("addresses")?;
    let functions = last.get("functions")?;
    let rate = |seconds: &[f64]| seconds.iter().map(|s| n / s).collect::<Vec<f64>>();
    let cold = rate(&series("cold_seconds")?);
    let warm = rate(&series("warm_seconds")?);
    let new = rate(&series("new_seconds")?);
    let peak_mib: Vec<f64> = series("peak_rss_kib")?.iter().map(|k| k / 1024.0).collect();
    let floor_mib = last.get("rss_before_kib")? / 1024.0;
    let anon_mib = last.get("rss_anon_kib")? / 1024.0;
    let file_mib = last.get("rss_file_kib")? / 1024.0;
    let inlined = last.get("cold_inlined")? + last.get("new_inlined")?;
    let median = |values: &[f64]| spread(values).1;

    let mut section = format!(
        "The agent's symbolizer against GNU addr2line and llvm-addr2line, on the same addresses \
         of one large binary with DWARF: this workspace's `{TARGET_PACKAGE}` built in the dev \
         profile (`cargo build -p {TARGET_PACKAGE}`: unoptimized, full debug info; \
         `target/debug/{TARGET_PACKAGE}`, copied to `target/bench/symbolize/` for the run), \
         {:.1} MB, of which {:.1} MB are `.debug_*` sections, {functions:.0} functions in its symbol \
         table. Ours is `profiler-agent/examples/{EXAMPLE}.rs` (release build): \
         `Symbolizer::symbolize` over a `Collector`, the agent's own code and its blazesym \
         options (code info, inlined functions, demangling); the collector holds the addresses \
         as the eBPF side hands them over (a mapping event for the binary, stacks of 16 frames) \
         and opens the binary as it does for a process that has exited (the program's module \
         doc says why the addresses are chosen rather than recorded). 2 x {n:.0} addresses are \
         spread evenly over the functions, each at a fixed pseudo-random point inside its \
         function; every other one forms the first set, the rest the second. {repeats} \
         repeats.\n\n\
         - cold: a fresh symbolizer resolves the first set: opening the ELF file, reading its \
         symbol table and DWARF as needed, resolving, caching, building the profile. For the \
         addr2line tools: one process over the first set (`-a -f -i -C -e BIN`, addresses on \
         stdin), from start to exit.\n\
         - warm: the same symbolizer resolves the same addresses again, as in the continuous \
         agent's next window: every frame comes from the agent's cache (per file and offset), \
         what is left is normalizing addresses and building the profile. addr2line keeps no \
         such cache.\n\
         - warm file, new addresses: the same symbolizer resolves the second set, with what \
         blazesym parsed of the file during the cold pass. For the addr2line tools: one process \
         over both sets minus the run over the first set (per repeat), i.e. what the second set \
         costs once the file is parsed. That difference of two runs carries the noise of both: \
         its row in the second table shows how much.\n\n\
         Ours is timed inside the program around each `symbolize` call; the addr2line tools \
         from spawn to exit (their start-up takes a few milliseconds). The binary is in the \
         page cache for every run (copied right before). A frame is one address; one with \
         inlined functions gives several lines and still counts once ({:.1} % of ours had \
         inlined functions: this is an unoptimized build). Peak RSS: ours is the program's \
         VmHWM over the three passes, reset right before the first (so choosing the addresses \
         is left out; the program held {floor_mib:.1} MiB then), and counts the pages of the \
         binary blazesym mapped and touched, as the agent's RSS does (after the passes, \
         {anon_mib:.1} MiB of it was anonymous memory, blazesym's parsed DWARF and the caches, \
         and {file_mib:.1} MiB pages of mapped files, mostly the binary); the addr2line tools' \
         is `ru_maxrss` of the run over both sets.\n\n\
         Command: `cargo xtask bench --only symbolize --repeats {repeats} \
         --symbolize-addresses {n:.0}` (part of `cargo xtask bench`)\n\n",
        *binary_bytes as f64 / 1e6,
        *dwarf_bytes as f64 / 1e6,
        inlined / (2.0 * n) * 100.0,
    );

    // Medians, one line per tool.
    section += "Medians (frames per second, and the time for the whole set):\n\n\
                | tool | cold: first set, fresh | warm: first set again | warm file: second set \
                | peak RSS |\n|---|---|---|---|---|\n";
    let cell = |rates: &[f64]| {
        let rate = median(rates);
        format!("{rate:.0} ({})", seconds_text(n / rate))
    };
    let _ = writeln!(
        section,
        "| ours | {} | {} | {} | {:.1} MiB |",
        cell(&cold),
        cell(&warm),
        cell(&new),
        median(&peak_mib)
    );
    let mut tool_rates = Vec::new();
    for (tool, runs) in tools.iter().zip(theirs.iter()) {
        let first: Vec<f64> = runs.iter().map(|r| r.first_seconds).collect();
        // What the second set added, per repeat: a difference of two runs, so it carries the
        // noise of both (its row shows how much).
        let added: Vec<f64> = runs
            .iter()
            .map(|r| r.both_seconds - r.first_seconds)
            .collect();
        let added_median = median(&added);
        let second = if added_median > 0.0 {
            format!(
                "{:.0} ({}, derived)",
                n / added_median,
                seconds_text(added_median)
            )
        } else {
            format!("not measurable ({added_median:+.3} s: within run-to-run noise)")
        };
        let rss: Vec<f64> = runs
            .iter()
            .map(|r| r.both_peak_rss_kib as f64 / 1024.0)
            .collect();
        let _ = writeln!(
            section,
            "| {} | {} | no cache | {second} | {:.1} MiB |",
            tool.name,
            cell(&rate(&first)),
            median(&rss)
        );
        tool_rates.push((tool, rate(&first), added, rss));
    }

    section += "\n| measure | min | median | max | target |\n|---|---|---|---|---|\n";
    section += &row("ours, cold: frames/s", &cold, 0, "", "");
    section += &row("ours, warm: frames/s", &warm, 0, "", "");
    section += &row("ours, warm file, new addresses: frames/s", &new, 0, "", "");
    section += &row("ours, peak RSS", &peak_mib, 1, " MiB", "");
    for (tool, first, added, rss) in &tool_rates {
        let name = &tool.name;
        section += &row(&format!("{name}, cold: frames/s"), first, 0, "", "");
        let ratios: Vec<f64> = cold.iter().zip(first).map(|(o, t)| o / t).collect();
        section += &row(&format!("cold: ours / {name}"), &ratios, 2, "", "");
        let added_ms: Vec<f64> = added.iter().map(|s| s * 1000.0).collect();
        section += &row(
            &format!("{name}, both sets minus the first set alone"),
            &added_ms,
            1,
            " ms",
            "",
        );
        if added.iter().all(|&s| s > 0.0) {
            // Paired by repeat: ours against what the second set added to theirs.
            let ratios: Vec<f64> = new.iter().zip(added).map(|(o, s)| o / (n / s)).collect();
            section += &row(
                &format!("warm file, new addresses: ours / {name} (derived)"),
                &ratios,
                2,
                "",
                "",
            );
        }
        section += &row(&format!("{name}, peak RSS"), rss, 1, " MiB", "");
        let rss_ratio: Vec<f64> = peak_mib.iter().zip(rss).map(|(o, t)| o / t).collect();
        section += &row(&format!("peak RSS: ours / {name}"), &rss_ratio, 2, "", "");
    }

    section += "\nAgreement, over both sets: the innermost function ours named (the first line \
                of the location) against the first function `addr2line -i` printed, both \
                demangled, compared after dropping Rust's legacy hash suffix \
                (`::h0123456789abcdef`) and decoding the legacy escapes llvm-addr2line's \
                demangler leaves (`$LT$`, `$u20$`, `..`); unresolved on both sides counts as \
                agreeing.\n\n\
                | tool | innermost function agrees | unresolved by ours | unresolved by the \
                tool |\n|---|---|---|---|\n";
    for (tool, agreement) in tools.iter().zip(agreements.iter()) {
        let _ = writeln!(
            section,
            "| {} | {:.2} % ({} of {}) | {} | {} |",
            tool.name,
            agreement.agree as f64 / agreement.addresses.max(1) as f64 * 100.0,
            agreement.agree,
            agreement.addresses,
            agreement.ours_unresolved,
            agreement.theirs_unresolved,
        );
    }
    for (tool, agreement) in tools.iter().zip(agreements.iter()) {
        if agreement.examples.is_empty() {
            continue;
        }
        let _ = writeln!(
            section,
            "\nWhere ours and {} differ, e.g. (a difference can come from several symbols at \
             one address, identical functions merged into one, where each tool may pick \
             another name; `nm -C` on the binary lists them):\n",
            tool.name
        );
        for (address, ours, theirs) in &agreement.examples {
            let _ = writeln!(
                section,
                "- `{address:#x}`: ours `{ours}`, theirs `{theirs}`"
            );
        }
    }
    Ok(section)
}

/// A duration for the medians table: seconds, or milliseconds below one second.
fn seconds_text(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names_across_demanglers() {
        let gnu = "<T as core::convert::Into<U>>::into";
        let llvm = "_$LT$T$u20$as$u20$core..convert..Into$LT$U$GT$$GT$::into::h2ea45e2753bb59b2";
        assert_eq!(normalize(llvm), gnu);
        assert_eq!(normalize(gnu), gnu);
        assert_eq!(
            normalize("clap_builder::parser::ArgMatches::remove_one::hecd499befacfc101"),
            "clap_builder::parser::ArgMatches::remove_one"
        );
        assert_eq!(
            normalize(
                "core::ptr::drop_in_place$LT$alloc..boxed..Box$LT$dyn$u20$core..ops..function..\
                 FnOnce$LT$$LP$$RP$$GT$$u2b$Output$u20$$u3d$$u20$$LP$$RP$$GT$$GT$::h06439db8dd190a6d"
            ),
            "core::ptr::drop_in_place<alloc::boxed::Box<dyn core::ops::function::FnOnce<()>+\
             Output = ()>>"
        );
        assert_eq!(
            normalize("tokio::task::spawn::_$u7b$$u7b$closure$u7d$$u7d$::h42085df28596e289"),
            "tokio::task::spawn::{{closure}}"
        );
        // Not a hash: kept.
        assert_eq!(normalize("a::hello"), "a::hello");
    }

    #[test]
    fn reads_innermost_functions_and_agreement() {
        let output = "0x0000000000001000\ninlined_leaf\n/src/a.rs:3\ncaller\n/src/a.rs:9\n\
                      0x0000000000002000\n??\n??:0\n0x3000\nthird::h0123456789abcdef\n??:0\n";
        let names = innermost_names(output).expect("parses");
        assert_eq!(names[&0x1000], "inlined_leaf");
        assert_eq!(names[&0x2000], "");
        assert_eq!(names[&0x3000], "third::h0123456789abcdef");
        let ours = "0x1000\tinlined_leaf\n0x2000\t\n0x3000\tthird\n0x4000\tfourth\n";
        let agreement = agreement(ours, &names).expect("compares");
        assert_eq!(
            agreement,
            Agreement {
                addresses: 4,
                agree: 3,
                ours_unresolved: 1,
                theirs_unresolved: 2,
                examples: vec![(0x4000, "fourth".into(), String::new())],
            }
        );
    }

    #[test]
    fn sums_debug_sections() {
        let text = "  [16] .text             PROGBITS        000000000041cdd0 41bdd0 a98924 00  \
                    AX  0   0 16\n  [ 3] .debug_abbrev PROGBITS 0000000000000000 f5cc6a 10 00 0 \
                    0  1\n  [34] .debug_info       PROGBITS        0000000000000000 ffca8d 20 \
                    00      0   0  1\n";
        let sizes: Vec<(&str, u64)> = section_sizes(text).collect();
        assert_eq!(
            sizes,
            [
                (".text", 0xa98924),
                (".debug_abbrev", 0x10),
                (".debug_info", 0x20)
            ]
        );
    }
}
