//! The symbolized profile: what `symbolize` produces and every encoder in `encode/` consumes.
//!
//! Stacks are stored leaf first, as in `profile.proto`; a location holds the chain of inlined
//! functions at one address, innermost first.

/// Function name of a frame that could not be resolved; symbolization may append the mapping's
/// name, as in `[unknown] (libfoo.so)`.
pub const UNKNOWN_FUNCTION: &str = "[unknown]";

/// Index into [`Profile::mappings`].
pub type MappingId = usize;
/// Index into [`Profile::locations`].
pub type LocationId = usize;

/// A memory mapping of an executable file (or the kernel) in one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// First address of the mapping in the process.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// Path of the mapped file (as the process saw it), `[kernel.kallsyms]` for the kernel, or a
    /// pseudo name such as `[anon]` or `[perf-map]`.
    pub filename: String,
    /// GNU build id, lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

/// One source line of a location.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    /// Function name (demangled); `[unknown]` when it could not be resolved.
    pub function: String,
    /// Source file, when debug info has it.
    pub file: Option<String>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

/// An address in a process (or the kernel) with what it resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Absolute address in the process (or kernel).
    pub address: u64,
    /// The mapping holding the address, if known.
    pub mapping: Option<MappingId>,
    /// Innermost (inlined) function first, the function the address belongs to last; never empty.
    pub lines: Vec<Line>,
    /// True for a kernel frame.
    pub kernel: bool,
}

/// Samples of one thread with one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Process id (what Linux calls "tgid").
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Leaf first: kernel frames (if any) come before user frames.
    pub stack: Vec<LocationId>,
    /// Number of samples.
    pub count: u64,
    /// Further string labels (container and Kubernetes metadata), name → value.
    pub labels: Vec<(String, String)>,
}

/// A symbolized CPU profile over one time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Mappings referenced by locations; user mappings are per process.
    pub mappings: Vec<Mapping>,
    /// Every distinct (process, address) of the samples' stacks.
    pub locations: Vec<Location>,
    /// One entry per (thread, stack).
    pub samples: Vec<Sample>,
    /// Start of the recording, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// Length of the recording.
    pub duration_ns: u64,
    /// CPU time one sample stands for: 1e9 / sampling frequency.
    pub period_ns: u64,
}

impl Profile {
    /// The profile of the samples `keep` selects, with only the locations and mappings they
    /// use (ids renumbered).
    pub fn subset(&self, keep: impl Fn(&Sample) -> bool) -> Profile {
        let mut location_ids = vec![None; self.locations.len()];
        let mut mapping_ids = vec![None; self.mappings.len()];
        let mut out = Profile {
            start_unix_ns: self.start_unix_ns,
            duration_ns: self.duration_ns,
            period_ns: self.period_ns,
            ..Profile::default()
        };
        for sample in self.samples.iter().filter(|s| keep(s)) {
            let mut stack = Vec::with_capacity(sample.stack.len());
            for &old in &sample.stack {
                let Some(location) = self.locations.get(old) else {
                    continue;
                };
                let new = *location_ids[old].get_or_insert_with(|| {
                    let mapping = location.mapping.and_then(|m| {
                        let mapping = self.mappings.get(m)?;
                        Some(*mapping_ids[m].get_or_insert_with(|| {
                            out.mappings.push(mapping.clone());
                            out.mappings.len() - 1
                        }))
                    });
                    out.locations.push(Location {
                        mapping,
                        ..location.clone()
                    });
                    out.locations.len() - 1
                });
                stack.push(new);
            }
            out.samples.push(Sample {
                stack,
                ..sample.clone()
            });
        }
        out
    }

    /// Total number of samples.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str) -> Vec<Line> {
        vec![Line {
            function: name.into(),
            file: None,
            line: 0,
        }]
    }

    #[test]
    fn subset_keeps_only_what_the_samples_use() {
        let mapping = |name: &str| Mapping {
            start: 0,
            limit: 1,
            file_offset: 0,
            filename: name.into(),
            build_id: None,
        };
        let location = |name: &str, mapping| Location {
            address: 1,
            mapping: Some(mapping),
            lines: line(name),
            kernel: false,
        };
        let sample = |pid, stack: Vec<usize>| Sample {
            pid,
            tid: pid,
            comm: "x".into(),
            stack,
            count: pid.into(),
            labels: Vec::new(),
        };
        let profile = Profile {
            mappings: vec![mapping("a"), mapping("b")],
            locations: vec![location("fa", 0), location("fb", 1), location("shared", 0)],
            samples: vec![sample(1, vec![0, 2]), sample(2, vec![1, 2])],
            start_unix_ns: 5,
            duration_ns: 6,
            period_ns: 7,
        };
        let only_two = profile.subset(|s| s.pid == 2);
        assert_eq!(only_two.samples.len(), 1);
        assert_eq!(only_two.total_samples(), 2);
        let names: Vec<&str> = only_two.samples[0]
            .stack
            .iter()
            .map(|&l| only_two.locations[l].lines[0].function.as_str())
            .collect();
        assert_eq!(names, ["fb", "shared"]);
        let files: Vec<&str> = only_two.samples[0]
            .stack
            .iter()
            .map(|&l| {
                let m = only_two.locations[l].mapping.expect("mapped");
                only_two.mappings[m].filename.as_str()
            })
            .collect();
        assert_eq!(files, ["b", "a"]);
        assert_eq!(
            (
                only_two.start_unix_ns,
                only_two.duration_ns,
                only_two.period_ns
            ),
            (5, 6, 7)
        );
        // Keeping everything renumbers but describes the same stacks.
        let all = profile.subset(|_| true);
        assert_eq!(
            crate::encode::folded::folded_lines(&all),
            crate::encode::folded::folded_lines(&profile)
        );
    }
}
