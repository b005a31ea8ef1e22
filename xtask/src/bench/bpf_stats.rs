//! Run time the kernel accounts to the agent's eBPF programs while `kernel.bpf_stats_enabled`
//! is 1: `run_time_ns` and `run_cnt` per program, read from `bpftool prog show -j` or, without
//! bpftool, from the agent's `/proc/<pid>/fdinfo` (names then come from `/proc/kallsyms`).
//!
//! The run time covers the program bodies only: the syscall tracepoint's own path (the slow
//! syscall entry, building the tracepoint record) is not in it.

use std::{collections::BTreeMap, fs, process::Command};

use anyhow::{bail, Context, Result};

/// The HTTP capture's program names. The kernel keeps the first 15 bytes of a name; bpftool and
/// kallsyms give the full one when the program has BTF.
pub fn http_program_names() -> impl Iterator<Item = &'static str> {
    profiler_common::HTTP_PROGRAMS.iter().map(|(name, _)| *name)
}

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` until dropped, then the value it had before.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn enable() -> Result<StatsEnabled> {
        let previous =
            fs::read_to_string(STATS_SYSCTL).with_context(|| format!("reading {STATS_SYSCTL}"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| {
            format!("enabling BPF run-time statistics in {STATS_SYSCTL} (run as root)")
        })?;
        Ok(StatsEnabled {
            previous: previous.trim().to_string(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(error) = fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore {STATS_SYSCTL} to {}: {error}",
                self.previous
            );
        }
    }
}

/// Cumulative statistics of one loaded program.
#[derive(Clone, Debug)]
pub struct ProgramStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Where the statistics were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Bpftool,
    Fdinfo,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Bpftool => "bpftool prog show -j",
            Source::Fdinfo => "/proc/<agent>/fdinfo and /proc/kallsyms",
        }
    }
}

/// Whether `bpftool` runs here.
pub fn have_bpftool() -> bool {
    Command::new("bpftool")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The current statistics of the HTTP programs the process `pid` holds, by full name.
pub fn http_programs(pid: u32, source: Source) -> Result<BTreeMap<String, ProgramStats>> {
    let held = held_programs(pid)?;
    let names = match source {
        Source::Bpftool => BTreeMap::new(),
        Source::Fdinfo => kallsyms_names()?,
    };
    let mut found = BTreeMap::new();
    for program in held {
        let stats = match source {
            Source::Bpftool => bpftool_stats(program.id)?,
            Source::Fdinfo => ProgramStats {
                name: names.get(&program.tag).cloned().unwrap_or_default(),
                run_time_ns: program.run_time_ns,
                run_cnt: program.run_cnt,
            },
        };
        if let Some(full) = http_program_name(&stats.name) {
            found.insert(
                full.to_string(),
                ProgramStats {
                    name: full.into(),
                    ..stats
                },
            );
        }
    }
    let missing: Vec<&str> = http_program_names()
        .filter(|name| !found.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the agent (pid {pid}) holds no program named {} (read with {}): was it built from \
             this checkout?",
            missing.join(", "),
            source.describe()
        );
    }
    Ok(found)
}

/// The HTTP program a kernel-reported name stands for: the full name, or its first 15 bytes.
fn http_program_name(name: &str) -> Option<&'static str> {
    http_program_names().find(|full| *full == name || (name.len() == 15 && full.starts_with(name)))
}

/// A program fd of a process, from its fdinfo.
struct HeldProgram {
    id: u32,
    tag: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// The eBPF programs `pid` holds open. Program fds are the ones whose fdinfo has `prog_id` and
/// `run_cnt` (link fds name a `prog_id` too, without statistics); one entry per program id.
fn held_programs(pid: u32) -> Result<Vec<HeldProgram>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut programs: BTreeMap<u32, HeldProgram> = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry.with_context(|| format!("listing {dir}"))?.path();
        // An fd closed since the listing is not an error.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok());
        let (Some(id), Some(tag), Some(run_time_ns), Some(run_cnt)) = (
            number("prog_id"),
            field("prog_tag"),
            number("run_time_ns"),
            number("run_cnt"),
        ) else {
            continue;
        };
        let id =
            u32::try_from(id).with_context(|| format!("prog_id {id} in {}", path.display()))?;
        programs.insert(
            id,
            HeldProgram {
                id,
                tag: tag.to_string(),
                run_time_ns,
                run_cnt,
            },
        );
    }
    Ok(programs.into_values().collect())
}

/// Name and statistics of one program from `bpftool -j prog show id ID`.
fn bpftool_stats(id: u32) -> Result<ProgramStats> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show", "id"])
        .arg(id.to_string())
        .output()
        .context("running bpftool")?;
    if !output.status.success() {
        bail!(
            "bpftool prog show id {id} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let json = String::from_utf8_lossy(&output.stdout);
    let name = json_scalar(&json, "name")
        .with_context(|| format!("no name in bpftool's output for program {id}: {json}"))?;
    // bpftool leaves out run_time_ns and run_cnt while they are 0.
    let number = |key: &str| -> Result<u64> {
        json_scalar(&json, key).map_or(Ok(0), |v| {
            v.parse()
                .with_context(|| format!("{key} `{v}` in bpftool's output"))
        })
    };
    Ok(ProgramStats {
        name: name.to_string(),
        run_time_ns: number("run_time_ns")?,
        run_cnt: number("run_cnt")?,
    })
}

/// A top-level string or number field of the single JSON object bpftool prints for one
/// program (xtask carries no JSON parser; nested objects such as `pids` hold no field of these
/// names at depth 1, which is what this checks).
fn json_scalar<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":");
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in json.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '"' if depth == 1 && json[i..].starts_with(&needle) => {
                let value = json[i + needle.len()..].trim_start();
                return Some(match value.strip_prefix('"') {
                    Some(text) => &text[..text.find('"')?],
                    None => value[..value.find([',', '}'])?].trim(),
                });
            }
            '"' => in_string = true,
            _ => {}
        }
    }
    None
}

/// Names of the JIT-ed programs in /proc/kallsyms by tag: `bpf_prog_<tag>_<name>`, the full
/// name from BTF when the program has it.
fn kallsyms_names() -> Result<BTreeMap<String, String>> {
    let symbols = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(symbols
        .lines()
        .filter_map(|line| {
            let (tag, name) = line
                .split_whitespace()
                .nth(2)?
                .strip_prefix("bpf_prog_")?
                .split_once('_')?;
            let is_tag = tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit());
            is_tag.then(|| (tag.to_string(), name.to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_scalar_reads_top_level_fields_only() {
        let json = r#"{"id":42,"type":"tracepoint","name":"on_data_enter_i","tag":"ab",
            "pids":[{"pid":7,"comm":"name\"x"}],"run_time_ns":1234,"run_cnt":5}"#;
        assert_eq!(json_scalar(json, "name"), Some("on_data_enter_i"));
        assert_eq!(json_scalar(json, "run_time_ns"), Some("1234"));
        assert_eq!(json_scalar(json, "run_cnt"), Some("5"));
        assert_eq!(json_scalar(json, "pid"), None);
        assert_eq!(json_scalar(json, "missing"), None);
    }

    #[test]
    fn truncated_kernel_names_map_to_full_names() {
        assert_eq!(http_program_name("on_data_enter"), Some("on_data_enter"));
        assert_eq!(
            http_program_name("on_data_enter_i"),
            Some("on_data_enter_iov")
        );
        assert_eq!(
            http_program_name("on_data_enter_m"),
            Some("on_data_enter_msg")
        );
        assert_eq!(
            http_program_name("on_connection_c"),
            Some("on_connection_change")
        );
        assert_eq!(http_program_name("on_cpu_sample"), None);
    }
}
