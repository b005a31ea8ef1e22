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
    /// Total number of samples.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}
