//! Resolves raw addresses to functions, files and lines (user frames with blazesym, kernel
//! frames with [`Kallsyms`]) and builds the [`Profile`]. User addresses are first normalized to
//! (file, file offset) with the mappings the collector captured, so processes that have exited
//! since are still symbolized; results are cached per file and offset, so a library shared by
//! many processes is read once. A stripped file whose debug file is installed by build id is
//! read through that debug file ([`crate::debug_file`]).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use blazesym::symbolize::{
    source::{Elf, Process, Source},
    Input, Sym, Symbolized, Symbolizer as Blazesym,
};

use crate::{
    collect::{Collector, RawSample, RawStack},
    debug_file::{DebugDirs, SeparateDebug},
    kallsyms::Kallsyms,
    process::{FileId, MapEntry, PerfMap},
    profile::{Line, Location, LocationId, Mapping, MappingId, Profile, Sample, UNKNOWN_FUNCTION},
};

/// Name of the kernel's pseudo mapping, as perf calls it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// How many frames (weighted by samples) resolved to a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizeStats {
    pub frames: u64,
    pub symbolized: u64,
    /// User frames at an address no mapping of their process holds: mostly what walking frame
    /// pointers through code built without them gives, or frames of a process whose mappings
    /// were never read.
    pub unmapped: u64,
}

impl SymbolizeStats {
    /// Share of frames symbolized, 0..=1 (1 when there were no frames).
    pub fn ratio(&self) -> f64 {
        self.share(self.symbolized, 1.0)
    }

    /// Share of frames outside every mapping, 0..=1 (0 when there were no frames).
    pub fn unmapped_ratio(&self) -> f64 {
        self.share(self.unmapped, 0.0)
    }

    fn share(&self, part: u64, when_empty: f64) -> f64 {
        if self.frames == 0 {
            when_empty
        } else {
            part as f64 / self.frames as f64
        }
    }
}

/// Symbolizes raw samples, caching what it resolved.
pub struct Symbolizer {
    blazesym: Blazesym,
    /// (file, file offset) → lines, innermost first.
    user_cache: HashMap<(FileId, u64), Option<Vec<Line>>>,
    debug_dirs: DebugDirs,
    /// Each file's separate debug file, looked up at its first frame.
    separate_debug: HashMap<FileId, Option<SeparateDebug>>,
    kernel_cache: HashMap<u64, Option<Vec<Line>>>,
    /// The kernel's symbols, read at the first kernel frame.
    kallsyms: Option<Kallsyms>,
    perf_maps: HashMap<u32, Option<PerfMap>>,
    /// Offset in the vDSO → lines. Every process maps the same vDSO image, so offsets are
    /// resolved in the agent's own vDSO.
    vdso_cache: HashMap<u64, Option<Vec<Line>>>,
    own_vdso_start: Option<u64>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where one user frame resolves from.
enum UserTarget<'a> {
    File(&'a MapEntry, FileId, u64),
    Anonymous(&'a MapEntry),
    Pseudo(&'a MapEntry),
    Unmapped,
}

impl Symbolizer {
    /// Looks for debug files in the default directories and keeps decompressed copies in the
    /// agent's cache (see [`DebugDirs::default`]).
    pub fn new() -> Self {
        Self::with_debug_dirs(DebugDirs::default())
    }

    /// Looks for separate debug files in `debug_dirs.dirs` (blazesym's debug-link lookup too)
    /// and keeps decompressed copies in `debug_dirs.cache`.
    pub fn with_debug_dirs(debug_dirs: DebugDirs) -> Self {
        Symbolizer {
            blazesym: Blazesym::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .set_debug_dirs(Some(&debug_dirs.dirs))
                .build(),
            user_cache: HashMap::new(),
            debug_dirs,
            separate_debug: HashMap::new(),
            kernel_cache: HashMap::new(),
            kallsyms: None,
            perf_maps: HashMap::new(),
            vdso_cache: HashMap::new(),
            own_vdso_start: own_vdso_start(),
        }
    }

    /// Builds the profile of everything `collector` accumulated.
    pub fn symbolize(
        &mut self,
        collector: &Collector,
        start_unix_ns: u64,
        duration_ns: u64,
        period_ns: u64,
    ) -> (Profile, SymbolizeStats) {
        self.resolve_files(collector);
        self.resolve_kernel(collector);

        let mut builder = ProfileBuilder::default();
        let mut stats = SymbolizeStats::default();
        let mut raw: Vec<(&RawSample, &u64)> = collector.samples.iter().collect();
        // Deterministic output: same input, same profile.
        raw.sort_by(|a, b| (a.0.pid, a.0.tid, &a.0.comm).cmp(&(b.0.pid, b.0.tid, &b.0.comm)));
        for (sample, &count) in raw {
            let mut stack = Vec::new();
            match &sample.kernel {
                RawStack::Frames(frames) => {
                    for (depth, &addr) in frames.iter().enumerate() {
                        let lines = self
                            .kernel_cache
                            .get(&adjust(addr, depth))
                            .cloned()
                            .flatten();
                        stats.frames += count;
                        if lines.is_some() {
                            stats.symbolized += count;
                        }
                        stack.push(builder.kernel_location(addr, lines));
                    }
                }
                RawStack::Lost(loss) => {
                    stack.push(builder.pseudo_location(loss.frame_name(), true))
                }
                RawStack::None => {}
            }
            match &sample.user {
                RawStack::Frames(frames) => {
                    for (depth, &addr) in frames.iter().enumerate() {
                        let (lines, mapping) = self.user_frame(collector, sample.pid, addr, depth);
                        stats.frames += count;
                        if lines.is_some() {
                            stats.symbolized += count;
                        }
                        if mapping.is_none() {
                            stats.unmapped += count;
                        }
                        stack.push(builder.user_location(sample.pid, addr, lines, mapping));
                    }
                }
                RawStack::Lost(loss) => {
                    stack.push(builder.pseudo_location(loss.frame_name(), false))
                }
                RawStack::None => {}
            }
            builder.profile.samples.push(Sample {
                pid: sample.pid,
                tid: sample.tid,
                comm: sample.comm.clone(),
                stack,
                count,
                labels: sample
                    .span
                    .map_or_else(Vec::new, |span| span.labels().to_vec()),
            });
        }
        let mut profile = builder.finish();
        profile.start_unix_ns = start_unix_ns;
        profile.duration_ns = duration_ns;
        profile.period_ns = period_ns;
        (profile, stats)
    }

    fn target<'a>(collector: &'a Collector, pid: u32, addr: u64) -> UserTarget<'a> {
        let Some(entry) = collector.processes.process(pid).and_then(|p| p.find(addr)) else {
            return UserTarget::Unmapped;
        };
        match entry.file {
            Some(file) => UserTarget::File(entry, file, entry.file_offset(addr)),
            None if entry.is_anonymous() => UserTarget::Anonymous(entry),
            None => UserTarget::Pseudo(entry),
        }
    }

    /// Lines (None when unresolved) and the mapping of one user frame.
    fn user_frame(
        &mut self,
        collector: &Collector,
        pid: u32,
        addr: u64,
        depth: usize,
    ) -> (Option<Vec<Line>>, Option<Mapping>) {
        match Self::target(collector, pid, adjust(addr, depth)) {
            UserTarget::File(entry, file, offset) => {
                let lines = self.user_cache.get(&(file, offset)).cloned().flatten();
                let open = collector.processes.file(file);
                let mapping = mapping_of(entry, open.build_id.clone());
                (lines, Some(mapping))
            }
            UserTarget::Anonymous(entry) => {
                let perf_map = self
                    .perf_maps
                    .entry(pid)
                    .or_insert_with(|| PerfMap::load(pid));
                let lines = perf_map
                    .as_ref()
                    .and_then(|map| map.find(addr))
                    .map(|name| vec![line(name.to_string(), None, 0)]);
                let mut mapping = mapping_of(entry, None);
                mapping.filename = "[perf-map]".to_string();
                (lines, Some(mapping))
            }
            UserTarget::Pseudo(entry) if entry.path == VDSO => {
                let lines = self.vdso_lines(adjust(addr, depth) - entry.start);
                (lines, Some(mapping_of(entry, None)))
            }
            UserTarget::Pseudo(entry) => {
                // [vsyscall], or a file that could not be opened: the frame is named after its
                // mapping so the reader still sees where it ran.
                (None, Some(mapping_of(entry, None)))
            }
            UserTarget::Unmapped => (None, None),
        }
    }

    fn vdso_lines(&mut self, offset: u64) -> Option<Vec<Line>> {
        let own_start = self.own_vdso_start?;
        if let Some(lines) = self.vdso_cache.get(&offset) {
            return lines.clone();
        }
        let source = Source::Process(Process {
            debug_syms: false,
            perf_map: false,
            map_files: false,
            ..Process::new(blazesym::Pid::Slf)
        });
        let lines = match self
            .blazesym
            .symbolize_single(&source, Input::AbsAddr(own_start + offset))
        {
            Ok(Symbolized::Sym(sym)) => Some(lines_of(&sym)),
            _ => None,
        };
        self.vdso_cache.insert(offset, lines.clone());
        lines
    }

    /// Symbolizes every (file, offset) not yet cached, one batch per file.
    fn resolve_files(&mut self, collector: &Collector) {
        let mut wanted: HashMap<FileId, HashSet<u64>> = HashMap::new();
        for sample in collector.samples.keys() {
            let RawStack::Frames(frames) = &sample.user else {
                continue;
            };
            for (depth, &addr) in frames.iter().enumerate() {
                if let UserTarget::File(_, file, offset) =
                    Self::target(collector, sample.pid, adjust(addr, depth))
                {
                    if !self.user_cache.contains_key(&(file, offset)) {
                        wanted.entry(file).or_default().insert(offset);
                    }
                }
            }
        }
        for (file, offsets) in wanted {
            let offsets: Vec<u64> = offsets.into_iter().collect();
            let open = collector.processes.file(file);
            let path = open.access_path();
            let separate = self.separate_debug.entry(file).or_insert_with(|| {
                let build_id = open.build_id.as_deref()?;
                SeparateDebug::find(&path, build_id, &self.debug_dirs)
            });
            let results = match separate {
                // The debug file's addresses; an offset outside the binary's segments (none
                // should be) becomes one no symbol covers.
                Some(debug) => {
                    let addresses: Vec<u64> = offsets
                        .iter()
                        .map(|&offset| debug.virtual_address(offset).unwrap_or(u64::MAX))
                        .collect();
                    let source = Source::Elf(Elf::new(&debug.path));
                    self.blazesym
                        .symbolize(&source, Input::VirtOffset(&addresses))
                }
                None => self
                    .blazesym
                    .symbolize(&Source::Elf(Elf::new(path)), Input::FileOffset(&offsets)),
            }
            .unwrap_or_default();
            for (index, offset) in offsets.iter().enumerate() {
                let lines = match results.get(index) {
                    Some(Symbolized::Sym(sym)) => Some(lines_of(sym)),
                    _ => None,
                };
                self.user_cache.insert((file, *offset), lines);
            }
        }
    }

    fn resolve_kernel(&mut self, collector: &Collector) {
        let mut wanted = HashSet::new();
        for sample in collector.samples.keys() {
            if let RawStack::Frames(frames) = &sample.kernel {
                for (depth, &addr) in frames.iter().enumerate() {
                    let addr = adjust(addr, depth);
                    if !self.kernel_cache.contains_key(&addr) {
                        wanted.insert(addr);
                    }
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        // Read once, at the first kernel frame: kallsyms is always there (a vmlinux with
        // DWARF rarely is on a node, and its search would slow the first profile). The cached
        // table answers for the kernel's and the modules' text; a frame elsewhere (a BPF
        // program, a trampoline) needs the kernel's current list.
        let kallsyms = self
            .kallsyms
            .get_or_insert_with(|| Kallsyms::load_default().unwrap_or_default());
        if !wanted.iter().all(|&addr| kallsyms.covers(addr)) {
            *kallsyms = Kallsyms::load().unwrap_or_default();
        }
        for addr in wanted {
            let lines = kallsyms
                .find(addr)
                .map(|name| vec![line(name.to_string(), None, 0)]);
            self.kernel_cache.insert(addr, lines);
        }
    }
}

/// Name of the vDSO mapping in `/proc/PID/maps`.
const VDSO: &str = "[vdso]";

/// Start of the agent's own vDSO mapping.
fn own_vdso_start() -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with(VDSO))?;
    u64::from_str_radix(line.split('-').next()?, 16).ok()
}

/// Return addresses point after the call; look up the call instruction itself (as perf and
/// pprof do), except for the innermost frame, which is where the CPU was.
fn adjust(addr: u64, depth: usize) -> u64 {
    if depth == 0 {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

fn line(function: String, file: Option<String>, line: u32) -> Line {
    Line {
        function,
        file,
        line,
    }
}

/// The lines of a symbol, innermost inlined function first, the containing function last.
/// blazesym reports the containing function with the location of the first inlined call, and
/// each inlined function with the location inside it.
fn lines_of(sym: &Sym<'_>) -> Vec<Line> {
    let code = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| match info {
        Some(info) => {
            let file = match &info.dir {
                Some(dir) => Path::new(dir.as_ref()).join(info.file.as_ref() as &std::ffi::OsStr),
                None => Path::new(info.file.as_ref() as &std::ffi::OsStr).to_path_buf(),
            };
            (
                Some(file.to_string_lossy().into_owned()),
                info.line.unwrap_or(0),
            )
        }
        None => (None, 0),
    };
    let mut lines = Vec::with_capacity(sym.inlined.len() + 1);
    for inlined in sym.inlined.iter().rev() {
        let (file, number) = code(inlined.code_info.as_ref());
        lines.push(line(inlined.name.to_string(), file, number));
    }
    let (file, number) = code(sym.code_info.as_deref());
    lines.push(line(sym.name.to_string(), file, number));
    lines
}

fn mapping_of(entry: &MapEntry, build_id: Option<String>) -> Mapping {
    Mapping {
        start: entry.start,
        limit: entry.end,
        file_offset: entry.offset,
        filename: if entry.path.is_empty() {
            "[anon]".to_string()
        } else {
            entry.path.clone()
        },
        build_id,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Deduplicates mappings and locations while samples are added.
#[derive(Default)]
struct ProfileBuilder {
    profile: Profile,
    /// (pid, mapping start) → id; the kernel mapping uses pid 0.
    mappings: HashMap<(u32, u64), MappingId>,
    /// (pid, address) → id; kernel frames use pid 0, pseudo frames their name.
    locations: HashMap<(u32, u64), LocationId>,
    pseudo: HashMap<(&'static str, bool), LocationId>,
}

impl ProfileBuilder {
    /// Orders mappings by address with the kernel last, so readers that take the first mapping
    /// as "the binary" (`go tool pprof` prints it as `File:`) show an executable (PIE
    /// executables load below shared libraries).
    fn finish(self) -> Profile {
        let mut profile = self.profile;
        let mut order: Vec<MappingId> = (0..profile.mappings.len()).collect();
        order.sort_by_key(|&id| {
            let mapping = &profile.mappings[id];
            (mapping.filename == KERNEL_MAPPING, mapping.start)
        });
        let mut new_id = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old] = new;
        }
        let mut old_mappings: Vec<Option<Mapping>> = profile.mappings.drain(..).map(Some).collect();
        profile.mappings = order
            .iter()
            .filter_map(|&old| old_mappings[old].take())
            .collect();
        for location in &mut profile.locations {
            location.mapping = location.mapping.map(|old| new_id[old]);
        }
        profile
    }

    fn mapping(&mut self, pid: u32, mapping: Mapping) -> MappingId {
        *self
            .mappings
            .entry((pid, mapping.start))
            .or_insert_with(|| {
                self.profile.mappings.push(mapping);
                self.profile.mappings.len() - 1
            })
    }

    fn push_location(&mut self, key: (u32, u64), location: Location) -> LocationId {
        *self.locations.entry(key).or_insert_with(|| {
            self.profile.locations.push(location);
            self.profile.locations.len() - 1
        })
    }

    fn kernel_location(&mut self, addr: u64, lines: Option<Vec<Line>>) -> LocationId {
        if let Some(&id) = self.locations.get(&(0, addr)) {
            return id;
        }
        let mapping = self.mapping(
            0,
            Mapping {
                start: 0,
                limit: u64::MAX,
                file_offset: 0,
                filename: KERNEL_MAPPING.to_string(),
                build_id: None,
            },
        );
        let lines = lines.unwrap_or_else(|| vec![line(UNKNOWN_FUNCTION.to_string(), None, 0)]);
        self.push_location(
            (0, addr),
            Location {
                address: addr,
                mapping: Some(mapping),
                lines,
                kernel: true,
            },
        )
    }

    fn user_location(
        &mut self,
        pid: u32,
        addr: u64,
        lines: Option<Vec<Line>>,
        mapping: Option<Mapping>,
    ) -> LocationId {
        if let Some(&id) = self.locations.get(&(pid, addr)) {
            return id;
        }
        let lines = lines.unwrap_or_else(|| {
            let name = match &mapping {
                Some(m) => format!("{UNKNOWN_FUNCTION} ({})", basename(&m.filename)),
                None => UNKNOWN_FUNCTION.to_string(),
            };
            vec![line(name, None, 0)]
        });
        let mapping = mapping.map(|m| self.mapping(pid, m));
        self.push_location(
            (pid, addr),
            Location {
                address: addr,
                mapping,
                lines,
                kernel: false,
            },
        )
    }

    fn pseudo_location(&mut self, name: &'static str, kernel: bool) -> LocationId {
        *self.pseudo.entry((name, kernel)).or_insert_with(|| {
            self.profile.locations.push(Location {
                address: 0,
                mapping: None,
                lines: vec![line(name.to_string(), None, 0)],
                kernel,
            });
            self.profile.locations.len() - 1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect::test_key, ebpf::Drained};

    #[inline(never)]
    fn marker_function_for_symbolization(x: u64) -> u64 {
        std::hint::black_box(x.wrapping_mul(31).rotate_left(7))
    }

    #[test]
    fn symbolizes_own_addresses_and_labels_unknown_frames() {
        let pid = std::process::id();
        let here = marker_function_for_symbolization as *const () as usize as u64;
        assert_eq!(marker_function_for_symbolization(1), 31u64.rotate_left(7));
        let mut stacks = HashMap::new();
        // Leaf in our marker, then a bogus caller address no mapping holds.
        stacks.insert(1, vec![here + 1, 0x10]);
        let mut collector = Collector::default();
        collector.absorb(Drained {
            counts: vec![(test_key(pid, pid, "tests", 1, 0), 5)],
            stacks,
            read_errors: 0,
        });
        let mut symbolizer = Symbolizer::new();
        let (profile, stats) = symbolizer.symbolize(&collector, 1, 2, 10_101_010);
        assert_eq!(profile.total_samples(), 5);
        assert_eq!(profile.period_ns, 10_101_010);
        let sample = &profile.samples[0];
        assert_eq!(sample.stack.len(), 2);
        let leaf = &profile.locations[sample.stack[0]];
        let function = &leaf.lines.last().expect("lines").function;
        assert!(
            function.contains("marker_function_for_symbolization"),
            "leaf resolved to {function}"
        );
        let mapping = &profile.mappings[leaf.mapping.expect("leaf has a mapping")];
        assert!(mapping.build_id.is_some());
        let file = leaf
            .lines
            .last()
            .and_then(|l| l.file.clone())
            .unwrap_or_default();
        // The file comes from DWARF, which the test binary has unless built with the release
        // profile (it strips debug info).
        let exe = std::fs::read("/proc/self/exe").expect("own binary");
        let has_dwarf = object::read::elf::ElfFile64::<object::Endianness>::parse(exe.as_slice())
            .is_ok_and(|elf| object::Object::section_by_name(&elf, ".debug_info").is_some());
        assert!(!has_dwarf || file.ends_with("symbolize.rs"), "file {file}");
        let caller = &profile.locations[sample.stack[1]];
        assert_eq!(caller.lines[0].function, UNKNOWN_FUNCTION);
        assert_eq!(
            stats,
            SymbolizeStats {
                frames: 10,
                symbolized: 5,
                unmapped: 5,
            }
        );
        assert!((stats.ratio() - 0.5).abs() < 1e-9);
        assert!((stats.unmapped_ratio() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_stripped_binary_is_symbolized_from_its_separate_debug_file() {
        let fixture = crate::debug_file::tests::Fixture::new("symbolizer");
        let mut child = std::process::Command::new(&fixture.binary)
            .arg("wait")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("fixture runs");
        let pid = child.id();
        let (_, work) = fixture
            .functions()
            .into_iter()
            .find(|(name, _)| name == "fixture_work")
            .expect("fixture_work");
        // Where the child mapped fixture_work (its text mapping, once exec is done).
        let binary = fixture.binary.to_string_lossy().into_owned();
        let mut address = None;
        for _ in 0..500 {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            address = maps
                .lines()
                .filter_map(crate::process::parse_maps_line)
                .find(|entry| entry.path == binary)
                .map(|entry| entry.start + work.start - entry.offset);
            if address.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let address = address.expect("the fixture's text mapped");
        let mut collector = Collector::default();
        collector.absorb(Drained {
            counts: vec![(test_key(pid, pid, "fixture", 1, 0), 3)],
            stacks: HashMap::from([(1, vec![address])]),
            read_errors: 0,
        });
        let cache = fixture.dir.join("cache");
        let mut symbolizer = Symbolizer::with_debug_dirs(DebugDirs {
            dirs: fixture.debug_dirs.clone(),
            cache: Some(cache.clone()),
        });
        let (profile, stats) = symbolizer.symbolize(&collector, 0, 0, 1);
        drop(child.stdin.take());
        child.wait().expect("fixture exits");

        assert_eq!(stats.symbolized, 3);
        let leaf = &profile.locations[profile.samples[0].stack[0]];
        let line = leaf.lines.last().expect("lines");
        assert_eq!(line.function, "fixture_work");
        assert!(
            line.file
                .as_deref()
                .is_some_and(|file| file.ends_with("fixture.c"))
                && line.line > 0,
            "{line:?}"
        );
        // Read through the decompressed copy, not blazesym's own lookup by debug link.
        assert!(cache
            .join("debug")
            .join(format!("{}.debug", fixture.build_id))
            .is_file());
    }

    #[test]
    fn lost_and_missing_processes_never_crash() {
        let mut stacks = HashMap::new();
        stacks.insert(3, vec![0x400000, 0x400100]);
        let mut collector = Collector::default();
        collector.absorb(Drained {
            counts: vec![
                (test_key(999_998, 7, "gone", 3, -2), 2),
                (test_key(999_998, 7, "gone", -2, 0), 1),
            ],
            stacks,
            read_errors: 0,
        });
        let (profile, stats) = Symbolizer::new().symbolize(&collector, 0, 0, 1);
        assert_eq!(profile.total_samples(), 3);
        assert_eq!(stats.symbolized, 0);
        let names: HashSet<&str> = profile
            .locations
            .iter()
            .map(|l| l.lines[0].function.as_str())
            .collect();
        assert!(names.contains(UNKNOWN_FUNCTION));
        assert!(names.contains("[stack lost: map full]"));
    }
}
