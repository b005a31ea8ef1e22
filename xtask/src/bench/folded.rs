//! Folded stacks as the peers entry ([`super::peers`]) reads them: bpftrace's printed map turned
//! into folded lines ([`bpftrace_to_folded`]), and the share of one process's samples whose stack
//! contains each function ([`inclusive_shares`]), from which each tool's top functions come.
//!
//! Pure: no IO, so the parsing is tested on text.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context, Result};

/// Suffix marking a kernel frame, as in our agent's folded output and inferno's
/// `annotate_kernel`.
const KERNEL_SUFFIX: &str = "_[k]";

/// Converts what `bpftrace -e '... @[ustack, kstack, comm] = count(); ...'` prints at exit into
/// folded lines, `comm;user root;...;user leaf;kernel root_[k];...;kernel leaf_[k] COUNT`, the
/// layout of our agent's folded output.
///
/// Each map entry is printed as `@[` + the user stack + `, ` + the kernel stack + `, ` + comm +
/// `]: COUNT`, a stack being empty or one indented `function+offset` line per frame, leaf first.
/// Offsets are stripped, so entries that differ only in offsets merge. Frames bpftrace could not
/// resolve stay as hex addresses. Other lines (`Attaching 2 probes...`) are skipped.
pub fn bpftrace_to_folded(output: &str) -> Result<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    // Section 0 is the user stack, 1 the kernel stack, 2 the comm; `None` outside an entry.
    let mut section: Option<usize> = None;
    let mut stacks: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for (index, line) in output.lines().enumerate() {
        let mut rest = line;
        let mut current = match section {
            Some(current) => current,
            None => match line.strip_prefix("@[") {
                Some(after) => {
                    stacks.iter_mut().for_each(Vec::clear);
                    rest = after;
                    0
                }
                None => continue,
            },
        };
        if let Some(frame) = rest.strip_prefix("    ") {
            if current > 1 {
                bail!("line {}: a frame after the comm: `{line}`", index + 1);
            }
            stacks[current].push(strip_offset(frame.trim()));
            section = Some(current);
            continue;
        }
        // A separator line: `, ` once or twice, then possibly `comm]: COUNT`.
        while current < 2 {
            match rest.strip_prefix(',') {
                Some(after) => {
                    current += 1;
                    rest = after.strip_prefix(' ').unwrap_or(after);
                }
                None => break,
            }
        }
        if current < 2 {
            if !rest.trim().is_empty() {
                bail!("line {}: not a bpftrace map entry: `{line}`", index + 1);
            }
            section = Some(current);
            continue;
        }
        let Some((comm, count)) = rest.rsplit_once("]: ") else {
            bail!("line {}: no `]: COUNT` after the comm: `{line}`", index + 1);
        };
        let count: u64 = count
            .trim()
            .parse()
            .with_context(|| format!("line {}: count `{count}`", index + 1))?;
        let mut folded = clean(comm);
        for frame in stacks[0].iter().rev() {
            folded.push(';');
            folded.push_str(&clean(frame));
        }
        for frame in stacks[1].iter().rev() {
            folded.push(';');
            folded.push_str(&clean(frame));
            folded.push_str(KERNEL_SUFFIX);
        }
        *counts.entry(folded).or_insert(0) += count;
        section = None;
    }
    if section.is_some() {
        bail!("the output ends inside a map entry");
    }
    Ok(counts
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}\n"))
        .collect())
}

/// `burn_alpha+88` → `burn_alpha`; hex addresses and names without a decimal offset unchanged.
fn strip_offset(frame: &str) -> &str {
    match frame.rsplit_once('+') {
        Some((name, offset)) if !name.is_empty() && offset.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => frame,
    }
}

/// A frame name as a folded line can hold it: `;` separates frames.
fn clean(name: &str) -> String {
    name.replace(';', ":")
}

/// How often each function appears in one process's samples.
#[derive(Debug, Default)]
pub struct Shares {
    /// Samples of the process (every line whose first frame is its comm).
    pub samples: u64,
    /// Per function, the samples whose stack contains it at least once.
    pub inclusive: HashMap<String, u64>,
}

impl Shares {
    /// The percentage of the process's samples whose stack contains `function`.
    pub fn percent(&self, function: &str) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        self.inclusive.get(function).copied().unwrap_or(0) as f64 * 100.0 / self.samples as f64
    }

    /// The `n` functions with the largest share, largest first (ties by name).
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut functions: Vec<(&str, u64)> = self
            .inclusive
            .iter()
            .map(|(name, &count)| (name.as_str(), count))
            .collect();
        functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        functions.truncate(n);
        functions
    }

    /// Adds another run's counts (pooling repeats).
    pub fn add(&mut self, other: &Shares) {
        self.samples += other.samples;
        for (function, count) in &other.inclusive {
            *self.inclusive.entry(function.clone()).or_insert(0) += count;
        }
    }
}

/// Counts, for the samples of the process named `comm` in `folded` (`comm;frame;...;frame
/// COUNT` lines), how many contain each function: inclusive, each function once per stack.
///
/// Frames the tool could not resolve are left out, since each tool names them differently
/// (`[unknown]`, `[libc.so.6]`, a hex address), and symbol versions are dropped
/// (`clock_gettime@@GLIBC_2.17` is `clock_gettime`: perf names versioned symbols so).
pub fn inclusive_shares(folded: &str, comm: &str) -> Result<Shares> {
    let mut shares = Shares::default();
    let mut seen = BTreeSet::new();
    for (index, line) in folded.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((stack, count)) = line.rsplit_once(' ') else {
            bail!("line {}: no count: `{line}`", index + 1);
        };
        let count: u64 = count
            .parse()
            .with_context(|| format!("line {}: count `{count}`", index + 1))?;
        let mut frames = stack.split(';');
        if frames.next() != Some(comm) {
            continue;
        }
        shares.samples += count;
        seen.clear();
        for frame in frames.filter(|frame| is_resolved(frame)) {
            let function = strip_version(frame);
            if seen.insert(function) {
                *shares.inclusive.entry(function.to_owned()).or_insert(0) += count;
            }
        }
    }
    Ok(shares)
}

/// Resolved and total frames, weighted by sample count.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    pub resolved: u64,
    pub total: u64,
}

impl Resolved {
    /// The percentage resolved; `None` without frames.
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| self.resolved as f64 * 100.0 / self.total as f64)
    }
}

/// How many of the frames in a folded file (every process) the tool could name.
#[derive(Debug, Default, PartialEq)]
pub struct FrameCounts {
    pub user: Resolved,
    pub kernel: Resolved,
}

/// Counts resolved user and kernel frames over every sample of `folded` (the comm excluded).
pub fn frame_counts(folded: &str) -> Result<FrameCounts> {
    let mut counts = FrameCounts::default();
    for (index, line) in folded.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((stack, count)) = line.rsplit_once(' ') else {
            bail!("line {}: no count: `{line}`", index + 1);
        };
        let count: u64 = count
            .parse()
            .with_context(|| format!("line {}: count `{count}`", index + 1))?;
        for frame in stack.split(';').skip(1) {
            let side = if frame.ends_with(KERNEL_SUFFIX) {
                &mut counts.kernel
            } else {
                &mut counts.user
            };
            side.total += count;
            if is_resolved(frame) {
                side.resolved += count;
            }
        }
    }
    Ok(counts)
}

/// `clock_gettime@@GLIBC_2.17` or `memcpy@GLIBC_2.2.5` → the name without the symbol version.
fn strip_version(frame: &str) -> &str {
    match frame.split_once('@') {
        Some((name, version))
            if !name.is_empty()
                && version.trim_start_matches('@').bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b"_.".contains(&b)
                }) =>
        {
            name
        }
        _ => frame,
    }
}

fn is_resolved(frame: &str) -> bool {
    let name = frame.strip_suffix(KERNEL_SUFFIX).unwrap_or(frame);
    !(name.is_empty() || name.starts_with('[') || name.starts_with("0x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes bpftrace 0.17 prints: both stacks, no kernel stack, no user stack, neither.
    const BPFTRACE: &str = "Attaching 2 probes...\n\n\n\
@[\n    burn_alpha+84\n    main+149\n    __libc_start_call_main+122\n, , burn3]: 43\n\
@[\n    burn_alpha+88\n    main+149\n    __libc_start_call_main+122\n, , burn3]: 5\n\
@[\n    0x7f8572ebd1ef\n, \n    clear_page_erms+7\n    exc_page_fault+374\n, opt 16j: x]: 2\n\
@[, \n    pv_native_safe_halt+11\n    do_idle+310\n, swapper/0]: 7\n\
@[, , kworker/1:1]: 1\n";

    #[test]
    fn bpftrace_map_becomes_folded_lines() {
        let folded = bpftrace_to_folded(BPFTRACE).expect("parses");
        assert_eq!(
            folded,
            "burn3;__libc_start_call_main;main;burn_alpha 48\n\
             kworker/1:1 1\n\
             opt 16j: x;0x7f8572ebd1ef;exc_page_fault_[k];clear_page_erms_[k] 2\n\
             swapper/0;do_idle_[k];pv_native_safe_halt_[k] 7\n"
        );
    }

    #[test]
    fn truncated_bpftrace_output_is_an_error() {
        assert!(bpftrace_to_folded("@[\n    main+1\n").is_err());
        assert!(bpftrace_to_folded("@[\n    main+1\n, , x]: many\n").is_err());
    }

    #[test]
    fn inclusive_shares_count_each_function_once_per_stack() {
        let folded = "burn3;main;burn_gamma 3\n\
                      burn3;main;burn_beta 2\n\
                      burn3;main;rec;rec;[unknown];0x1234;clock_gettime@@GLIBC_2.17 1\n\
                      other;main;burn_gamma 100\n";
        let shares = inclusive_shares(folded, "burn3").expect("parses");
        assert_eq!(shares.samples, 6);
        assert_eq!(shares.inclusive["main"], 6);
        assert_eq!(shares.inclusive["rec"], 1);
        assert!(!shares.inclusive.contains_key("[unknown]"));
        assert!(!shares.inclusive.contains_key("0x1234"));
        assert_eq!(shares.inclusive["clock_gettime"], 1);
        assert_eq!(shares.percent("burn_gamma"), 50.0);
        assert_eq!(
            shares.top(3),
            vec![("main", 6), ("burn_gamma", 3), ("burn_beta", 2)]
        );
    }

    #[test]
    fn frame_counts_split_user_and_kernel_and_skip_the_comm() {
        let folded = "app;main;[libc.so.6];do_syscall_64_[k];[kernel.kallsyms]_[k] 2\n\
                      [unknown];0x1234 1\n";
        assert_eq!(
            frame_counts(folded).expect("parses"),
            FrameCounts {
                user: Resolved {
                    resolved: 2,
                    total: 5,
                },
                kernel: Resolved {
                    resolved: 2,
                    total: 4,
                },
            }
        );
        assert_eq!(FrameCounts::default().user.percent(), None);
    }
}
