//! Folded (collapsed) stacks, the text format of Brendan Gregg's FlameGraph and inferno.
//!
//! One line per distinct stack, `comm;outermost;...;leaf COUNT`, root first: the thread name
//! (as perf's `stackcollapse` does), then user frames, then kernel frames suffixed `_[k]`
//! (the annotation flame graph palettes colour as kernel and inferno strips from the labels).
//! Inlined functions are separate frames, each after the function it was inlined into.

use std::collections::HashMap;

use crate::profile::{Profile, UNKNOWN_FUNCTION};

/// Suffix marking a kernel frame.
const KERNEL_SUFFIX: &str = "_[k]";
/// Frame standing for a sample without any frames.
const NO_STACK: &str = "[no stack]";

/// Folds the samples of `profile` into sorted collapsed-stack lines.
///
/// Samples that fold to the same line (e.g. different threads with the same name and stack) are
/// merged with their counts summed; samples with a zero count are left out. In frame names `;`
/// becomes `:` and control characters (newlines, tabs) become spaces, so every line parses back.
/// Location ids out of range (a bug in whoever built `profile`) are skipped.
pub fn folded_lines(profile: &Profile) -> Vec<String> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut stack = String::new();
    for sample in profile.samples.iter().filter(|sample| sample.count > 0) {
        stack.clear();
        push_frame(&mut stack, &sample.comm);
        let mut frames = 0;
        for location in sample
            .stack
            .iter()
            .rev()
            .filter_map(|&id| profile.locations.get(id))
        {
            // `lines` is innermost first; the root-first line wants the outer function first.
            for line in location.lines.iter().rev() {
                stack.push(';');
                push_frame(&mut stack, &line.function);
                if location.kernel {
                    stack.push_str(KERNEL_SUFFIX);
                }
                frames += 1;
            }
        }
        if frames == 0 {
            stack.push(';');
            stack.push_str(NO_STACK);
        }
        let total = counts.entry(stack.clone()).or_insert(0);
        *total = total.saturating_add(sample.count);
    }
    let mut lines: Vec<String> = counts
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    lines.sort_unstable();
    lines
}

/// Appends `name` to `out` with the characters that would break the format replaced.
fn push_frame(out: &mut String, name: &str) {
    if name.trim().is_empty() {
        out.push_str(UNKNOWN_FUNCTION);
        return;
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        c if c.is_control() => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::test_profile;
    use crate::profile::{Line, Location, Sample};

    #[test]
    fn folds_test_profile() {
        assert_eq!(
            folded_lines(&test_profile::profile()),
            [
                "app;main;compute;inlined_helper 3",
                "app;main;compute;inlined_helper;entry_SYSCALL_64_[k];do_syscall_64_[k] 3",
                "worker;[no stack] 1",
                "worker;work_loop;[unknown] 5",
                "worker;work_loop;jit_stub 1",
            ]
        );
    }

    #[test]
    fn empty_profile_has_no_lines() {
        assert!(folded_lines(&Profile::default()).is_empty());
    }

    #[test]
    fn sanitizes_names_and_skips_zero_counts() {
        let location = |function: &str, kernel: bool| Location {
            address: 0x1000,
            mapping: None,
            lines: vec![Line {
                function: function.to_owned(),
                file: None,
                line: 0,
            }],
            kernel,
        };
        let sample = |comm: &str, stack: Vec<usize>, count: u64| Sample {
            pid: 1,
            tid: 1,
            comm: comm.to_owned(),
            stack,
            count,
            labels: Vec::new(),
        };
        let profile = Profile {
            locations: vec![
                location("<[u8; 8] as Debug>::fmt", false),
                location("multi\nline\r\tname", false),
                location("", true),
            ],
            samples: vec![
                sample("a;b", vec![2, 1, 0], 4),
                sample("", vec![0], 2),
                sample("idle", vec![0], 0),
                sample("bad", vec![42], 1),
            ],
            ..Profile::default()
        };
        assert_eq!(
            folded_lines(&profile),
            [
                "[unknown];<[u8: 8] as Debug>::fmt 2",
                "a:b;<[u8: 8] as Debug>::fmt;multi line  name;[unknown]_[k] 4",
                "bad;[no stack] 1",
            ]
        );
    }
}
