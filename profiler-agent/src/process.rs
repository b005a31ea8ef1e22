//! What the agent knows about sampled processes: their executable mappings, captured while the
//! process lives, and a handle on every mapped file so that symbolization still works after the
//! process exits or the file is deleted.
//!
//! Files are opened through `/proc/PID/map_files/` (the exact file the process mapped, in any
//! mount namespace, deleted or not), falling back to `/proc/PID/root/PATH`, and deduplicated by
//! device and inode. Symbolization then reads them through `/proc/self/fd/N`.

use crate::ebpf::MappingEvent;
use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    os::unix::io::AsRawFd,
    path::PathBuf,
};

/// Index into [`ProcessTable::files`].
pub type FileId = usize;

/// One executable mapping of a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The path as `/proc/PID/maps` shows it without ` (deleted)`; pseudo names such as
    /// `[vdso]` as they are; empty for anonymous memory.
    pub path: String,
    /// The opened file, when the mapping is backed by one that could be opened.
    pub file: Option<FileId>,
    /// Whether opening the file was tried (files are opened only for sampled processes).
    pub tried_open: bool,
}

impl MapEntry {
    /// Offset in the file of `addr`, which must lie inside the mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }

    /// True for anonymous executable memory (JIT code), where `/tmp/perf-PID.map` may name it.
    pub fn is_anonymous(&self) -> bool {
        self.path.is_empty() || self.path.starts_with("[anon") || self.path == "//anon"
    }
}

/// A mapped file the agent holds open.
#[derive(Debug)]
pub struct OpenFile {
    /// Keeps the file alive (even if deleted) while the agent may symbolize it.
    handle: File,
    /// The path as the process saw it, for reports and pprof mappings.
    pub display_path: String,
    /// GNU build id in lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

impl OpenFile {
    /// A path that reaches this exact file from the agent's own process.
    pub fn access_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
    }
}

/// Executable mappings of one process, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub maps: Vec<MapEntry>,
    /// True once `maps` holds every mapping: read from `/proc`, or followed from the process's
    /// fork or exec onwards. False when only mapping events after the agent started are known.
    pub complete: bool,
}

impl ProcessInfo {
    /// Adds a mapping over whatever it overlaps, keeping the uncovered parts of older mappings
    /// (the kernel splits them the same way).
    fn insert(&mut self, entry: MapEntry) {
        let mut maps = Vec::with_capacity(self.maps.len() + 2);
        for old in self.maps.drain(..) {
            if old.end <= entry.start || old.start >= entry.end {
                maps.push(old);
                continue;
            }
            if old.start < entry.start {
                maps.push(MapEntry {
                    end: entry.start,
                    ..old.clone()
                });
            }
            if old.end > entry.end {
                maps.push(MapEntry {
                    start: entry.end,
                    offset: old.offset + (entry.end - old.start),
                    ..old
                });
            }
        }
        maps.push(entry);
        maps.sort_by_key(|m| m.start);
        self.maps = maps;
    }

    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&MapEntry> {
        let index = self.maps.partition_point(|m| m.end <= addr);
        self.maps.get(index).filter(|m| m.start <= addr)
    }
}

/// Processes and files seen so far.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<u32, ProcessInfo>,
    files: Vec<OpenFile>,
    file_ids: HashMap<(u64, u64), FileId>,
    /// Processes that had exited before their mappings could be read.
    pub missed: u64,
    /// Processes whose exit was reported since the last `prune_exited`.
    exited: Vec<u32>,
    /// Process names (`/proc/PID/comm` of the main thread), read while the process lives.
    names: HashMap<u32, String>,
}

impl ProcessTable {
    /// Makes sure the mappings of `pid` cover `addrs`: reads them the first time the process is
    /// seen, and again when an address falls outside every known mapping (a library loaded
    /// later). A process that has exited keeps what was read before.
    pub fn observe(&mut self, pid: u32, addrs: impl IntoIterator<Item = u64>) {
        let (known, stale) = match self.processes.get(&pid) {
            None => (false, true),
            Some(info) => (
                !info.maps.is_empty(),
                !info.complete || addrs.into_iter().any(|addr| info.find(addr).is_none()),
            ),
        };
        if stale {
            self.refresh(pid, known);
        }
        self.open_files(pid);
        if let std::collections::hash_map::Entry::Vacant(entry) = self.names.entry(pid) {
            if let Ok(name) = fs::read_to_string(format!("/proc/{pid}/comm")) {
                entry.insert(name.trim_end().to_string());
            }
        }
    }

    /// The process's name (its main thread's `comm`), if it was read while the process lived.
    pub fn name(&self, pid: u32) -> Option<&str> {
        self.names.get(&pid).map(String::as_str)
    }

    /// Forgets the processes that exited since the last call, and returns them.
    pub fn prune_exited(&mut self) -> Vec<u32> {
        let exited = std::mem::take(&mut self.exited);
        for pid in &exited {
            self.processes.remove(pid);
            self.names.remove(pid);
        }
        exited
    }

    /// Number of mapped files held open.
    pub fn open_file_count(&self) -> usize {
        self.files.len()
    }

    fn refresh(&mut self, pid: u32, known: bool) {
        match self.read_maps(pid) {
            Ok(info) => {
                self.processes.insert(pid, info);
            }
            Err(_) => {
                let info = self.processes.entry(pid).or_default();
                if !known && !info.complete {
                    self.missed += 1;
                }
                // Whatever the events told is all there will be.
                info.complete = true;
            }
        }
    }

    /// Opens the files of `pid`'s mappings not tried yet.
    fn open_files(&mut self, pid: u32) {
        let Some(info) = self.processes.get_mut(&pid) else {
            return;
        };
        if info.maps.iter().all(|m| m.tried_open) {
            return;
        }
        let mut maps = std::mem::take(&mut info.maps);
        for entry in maps.iter_mut().filter(|m| !m.tried_open) {
            entry.tried_open = true;
            if entry.path.starts_with('/') {
                entry.file = self.open_file(pid, entry);
            }
        }
        if let Some(info) = self.processes.get_mut(&pid) {
            info.maps = maps;
        }
    }

    /// Applies what the kernel reported about processes' mappings since the last drain.
    pub fn apply(&mut self, events: &[MappingEvent]) {
        for event in events {
            match event {
                MappingEvent::Mmap {
                    pid,
                    start,
                    len,
                    file_offset,
                    path,
                } => {
                    // The file is opened only if the process is sampled (see `observe`): events
                    // arrive for every process on the machine.
                    let entry = MapEntry {
                        start: *start,
                        end: start.saturating_add(*len),
                        offset: *file_offset,
                        path: path.strip_suffix(" (deleted)").unwrap_or(path).to_string(),
                        ..MapEntry::default()
                    };
                    self.processes.entry(*pid).or_default().insert(entry);
                }
                MappingEvent::Fork { pid, parent } => {
                    let child = self.processes.get(parent).cloned().unwrap_or_default();
                    self.processes.insert(*pid, child);
                }
                MappingEvent::Exec { pid } => {
                    self.names.remove(pid);
                    self.processes.insert(
                        *pid,
                        ProcessInfo {
                            maps: Vec::new(),
                            complete: true,
                        },
                    );
                }
                // Samples of the process may still be waiting to be symbolized: it is
                // forgotten only at the next `prune_exited`.
                MappingEvent::Exit { pid } => self.exited.push(*pid),
            }
        }
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.get(&pid)
    }

    pub fn file(&self, id: FileId) -> &OpenFile {
        &self.files[id]
    }

    /// Number of processes seen.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    fn read_maps(&mut self, pid: u32) -> io::Result<ProcessInfo> {
        let text = fs::read_to_string(format!("/proc/{pid}/maps"))?;
        let mut maps: Vec<MapEntry> = text.lines().filter_map(parse_maps_line).collect();
        if maps.is_empty() && text.is_empty() {
            // A zombie or kernel thread: nothing mapped, nothing to learn.
            return Err(io::Error::new(io::ErrorKind::NotFound, "no mappings"));
        }
        maps.sort_by_key(|m| m.start);
        Ok(ProcessInfo {
            maps,
            complete: true,
        })
    }

    fn open_file(&mut self, pid: u32, entry: &MapEntry) -> Option<FileId> {
        let candidates = [
            format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end),
            format!("/proc/{pid}/root{}", entry.path),
            entry.path.clone(),
        ];
        let handle = candidates.iter().find_map(|path| File::open(path).ok())?;
        let meta = handle.metadata().ok()?;
        let key = (meta.dev(), meta.ino());
        if let Some(&id) = self.file_ids.get(&key) {
            return Some(id);
        }
        let mut file = OpenFile {
            handle,
            display_path: entry.path.clone(),
            build_id: None,
        };
        file.build_id = blazesym::helper::read_elf_build_id(&file.access_path())
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect());
        let id = self.files.len();
        self.files.push(file);
        self.file_ids.insert(key, id);
        Some(id)
    }
}

/// Parses one line of `/proc/PID/maps`, keeping executable mappings only:
/// `7f3c..-7f3c.. r-xp 00001000 08:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6`.
pub(crate) fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.to_string(),
        ..MapEntry::default()
    })
}

/// Symbols of JIT-compiled code from `/tmp/perf-PID.map` (`START SIZE NAME`, hex numbers).
#[derive(Debug, Default)]
pub struct PerfMap {
    /// (start, end, name), sorted by start.
    entries: Vec<(u64, u64, String)>,
}

impl PerfMap {
    /// Reads the perf map of `pid`, looking inside the process's mount namespace first.
    pub fn load(pid: u32) -> Option<PerfMap> {
        let paths = [
            format!("/proc/{pid}/root/tmp/perf-{pid}.map"),
            format!("/tmp/perf-{pid}.map"),
        ];
        let text = paths.iter().find_map(|p| fs::read_to_string(p).ok())?;
        Some(PerfMap::parse(&text))
    }

    pub fn parse(text: &str) -> PerfMap {
        let mut entries: Vec<(u64, u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let name = parts.next()?.trim().to_string();
                Some((start, start.checked_add(size)?, name))
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        PerfMap { entries }
    }

    /// The name of the JIT symbol holding `addr`. Later entries win on overlap (code re-JITted
    /// at the same address is appended to the file).
    pub fn find(&self, addr: u64) -> Option<&str> {
        let index = self.entries.partition_point(|e| e.0 <= addr);
        self.entries[..index]
            .iter()
            .rev()
            .take(16)
            .find(|e| addr < e.1)
            .map(|e| e.2.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_mappings_only() {
        let exec = parse_maps_line(
            "7f3c00001000-7f3c00100000 r-xp 00001000 08:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .expect("executable mapping");
        assert_eq!(exec.start, 0x7f3c_0000_1000);
        assert_eq!(exec.end, 0x7f3c_0010_0000);
        assert_eq!(exec.offset, 0x1000);
        assert_eq!(exec.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(exec.file_offset(0x7f3c_0000_1010), 0x1010);
        assert!(parse_maps_line("7f3c00001000-7f3c00100000 r--p 00000000 08:01 1234 /x").is_none());
        let deleted =
            parse_maps_line("1000-2000 r-xp 00000000 08:01 99 /tmp/my bin (deleted)").expect("x");
        assert_eq!(deleted.path, "/tmp/my bin");
        let anon = parse_maps_line("1000-2000 rwxp 00000000 00:00 0 ").expect("anon");
        assert!(anon.is_anonymous());
        let vdso = parse_maps_line("1000-2000 r-xp 00000000 00:00 0  [vdso]").expect("vdso");
        assert_eq!(vdso.path, "[vdso]");
    }

    #[test]
    fn finds_mapping_by_address() {
        let info = ProcessInfo {
            maps: vec![
                MapEntry {
                    start: 0x1000,
                    end: 0x2000,
                    path: "/a".into(),
                    ..MapEntry::default()
                },
                MapEntry {
                    start: 0x3000,
                    end: 0x4000,
                    path: "/b".into(),
                    ..MapEntry::default()
                },
            ],
            complete: true,
        };
        assert_eq!(info.find(0x1000).map(|m| m.path.as_str()), Some("/a"));
        assert_eq!(info.find(0x1fff).map(|m| m.path.as_str()), Some("/a"));
        assert!(info.find(0x2000).is_none());
        assert_eq!(info.find(0x3abc).map(|m| m.path.as_str()), Some("/b"));
        assert!(info.find(0x4000).is_none());
        assert!(info.find(0).is_none());
    }

    #[test]
    fn reads_own_mappings_with_build_id() {
        let mut table = ProcessTable::default();
        let pid = std::process::id();
        let here = reads_own_mappings_with_build_id as *const () as usize as u64;
        table.observe(pid, [here]);
        let info = table.process(pid).expect("own process");
        let entry = info.find(here).expect("own code is mapped");
        let file = table.file(entry.file.expect("test binary opened"));
        assert!(
            file.display_path.contains("profiler_agent"),
            "{}",
            file.display_path
        );
        assert!(file.build_id.as_deref().is_some_and(|id| id.len() >= 16));
    }

    #[test]
    fn follows_mapping_events_of_short_lived_processes() {
        let mut table = ProcessTable::default();
        let own_exe = std::env::current_exe().expect("test binary path");
        let own_exe = own_exe.to_string_lossy().into_owned();
        // A parent known from mapping events only, a child forked from it that execs and maps
        // this test binary, and nothing left in /proc for either (pids that do not exist).
        let mmap = |pid, start, path: &str| MappingEvent::Mmap {
            pid,
            start,
            len: 0x1000,
            file_offset: 0,
            path: path.to_string(),
        };
        table.apply(&[
            mmap(999_990, 0x1000, "/bin/sh"),
            MappingEvent::Fork {
                pid: 999_991,
                parent: 999_990,
            },
            MappingEvent::Exec { pid: 999_991 },
            MappingEvent::Mmap {
                pid: 999_991,
                start: 0x4000,
                len: 0x3000,
                file_offset: 0,
                path: own_exe.clone(),
            },
            MappingEvent::Mmap {
                pid: 999_991,
                start: 0x4800,
                len: 0x1000,
                file_offset: 0,
                path: "//anon".to_string(),
            },
        ]);
        table.observe(999_991, [0x4100]);
        assert_eq!(table.missed, 0, "events made /proc unnecessary");
        let child = table.process(999_991).expect("child known from events");
        // Exec dropped the parent's mapping; the anonymous one split the file mapping in two.
        assert_eq!(child.maps.len(), 3);
        let tail = child.find(0x5900).expect("tail of the file mapping");
        assert_eq!((tail.start, tail.offset), (0x4800 + 0x1000, 0x1800));
        let entry = child.find(0x4100).expect("mapped");
        assert_eq!(entry.path, own_exe);
        assert!(
            entry.file.is_some(),
            "the sampled process's file was opened by path"
        );
        assert!(child.find(0x4900).is_some_and(MapEntry::is_anonymous));
        table.observe(999_992, [0x4100]);
        assert_eq!(table.missed, 1);
    }

    #[test]
    fn perf_map_lookup() {
        let map = PerfMap::parse("1000 100 jit_a\n0x2000 0x10 jit b with spaces\nbad line\n");
        assert_eq!(map.find(0x1000), Some("jit_a"));
        assert_eq!(map.find(0x10ff), Some("jit_a"));
        assert_eq!(map.find(0x1100), None);
        assert_eq!(map.find(0x2008), Some("jit b with spaces"));
        assert_eq!(map.find(0x500), None);
    }
}
