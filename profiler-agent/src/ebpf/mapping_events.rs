//! Executable mappings, forks, execs and exits of every process, as the kernel reports them to
//! perf (`PERF_RECORD_MMAP2`, `FORK`, `COMM` with `COMM_EXEC`, `EXIT`).
//!
//! Reading `/proc/PID/maps` when a process is first sampled misses processes that live shorter
//! than a drain interval (compilers, shell pipelines, test runners): by then their mappings are
//! gone. perf's own answer is a dummy software event with `mmap2` and `task` set on every CPU,
//! whose ring buffer receives a record for each executable mapping as it is made; we do the same
//! and read the rings at every drain.

use std::{ffi::CStr, io, ptr::NonNull, sync::atomic::AtomicU64, sync::atomic::Ordering};

/// One change to a process's executable memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingEvent {
    /// An executable mapping (`path` is empty or `//anon` for anonymous memory).
    Mmap {
        pid: u32,
        start: u64,
        len: u64,
        file_offset: u64,
        path: String,
    },
    /// A new process (not a thread) `pid` forked from `parent`.
    Fork { pid: u32, parent: u32 },
    /// `pid` called exec: its old mappings are gone.
    Exec { pid: u32 },
    /// The whole process `pid` exited.
    Exit { pid: u32 },
}

// Constants and layouts from include/uapi/linux/perf_event.h.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
/// Offset of `data_head` in `struct perf_event_mmap_page` (fixed by the ABI).
const DATA_HEAD_OFFSET: usize = 1024;
const DATA_TAIL_OFFSET: usize = 1032;
/// Data pages per CPU (a power of two): 256 KiB holds thousands of records per drain.
const DATA_PAGES: usize = 64;

/// `struct perf_event_attr`, `PERF_ATTR_SIZE_VER8` (136 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved2: u16,
    aux_sample_size: u32,
    reserved3: u32,
    sig_data: u64,
    config3: u64,
}

/// One CPU's ring buffer.
struct Ring {
    fd: libc::c_int,
    base: NonNull<u8>,
    mapped_len: usize,
    page_size: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/mapped_len come from a successful mmap, fd from perf_event_open; both
        // are unmapped/closed exactly once, here.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.mapped_len);
            libc::close(self.fd);
        }
    }
}

/// The dummy perf events of every online CPU and their rings.
pub struct MappingWatcher {
    rings: Vec<Ring>,
    /// Records the kernel dropped because a ring was full.
    pub lost: u64,
    scratch: Vec<u8>,
}

impl MappingWatcher {
    /// Opens the dummy event on every online CPU.
    pub fn start() -> io::Result<Self> {
        let cpus = aya::util::online_cpus().map_err(|(_, error)| error)?;
        Self::start_on(&cpus)
    }

    /// Opens the dummy event on each of `cpus`.
    pub fn start_on(cpus: &[u32]) -> io::Result<Self> {
        let page_size = crate::page_size();
        let mut rings = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let attr = PerfEventAttr {
                kind: PERF_TYPE_SOFTWARE,
                size: std::mem::size_of::<PerfEventAttr>() as u32,
                config: PERF_COUNT_SW_DUMMY,
                flags: ATTR_MMAP | ATTR_COMM | ATTR_TASK | ATTR_MMAP2 | ATTR_COMM_EXEC,
                ..PerfEventAttr::default()
            };
            // SAFETY: attr is a valid perf_event_attr of the size it declares.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const PerfEventAttr,
                    -1 as libc::pid_t,
                    cpu as libc::c_int,
                    -1 as libc::c_int,
                    PERF_FLAG_FD_CLOEXEC,
                )
            } as libc::c_int;
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let mapped_len = page_size * (1 + DATA_PAGES);
            // SAFETY: maps the event's ring as the perf ABI prescribes (1 + 2^n pages).
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    mapped_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                let error = io::Error::last_os_error();
                // SAFETY: fd is ours and not yet owned by a Ring.
                unsafe { libc::close(fd) };
                return Err(error);
            }
            let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("null mmap"))?;
            rings.push(Ring {
                fd,
                base,
                mapped_len,
                page_size,
            });
        }
        Ok(MappingWatcher {
            rings,
            lost: 0,
            scratch: Vec::new(),
        })
    }

    /// Everything recorded since the last call, CPU by CPU.
    pub fn read(&mut self) -> Vec<MappingEvent> {
        let mut events = Vec::new();
        for ring in &self.rings {
            // SAFETY: the header page is mapped for the lifetime of the ring and data_head /
            // data_tail are naturally aligned u64 fields the kernel and we share.
            let (head_ptr, tail_ptr) = unsafe {
                (
                    &*(ring.base.as_ptr().add(DATA_HEAD_OFFSET) as *const AtomicU64),
                    &*(ring.base.as_ptr().add(DATA_TAIL_OFFSET) as *const AtomicU64),
                )
            };
            let head = head_ptr.load(Ordering::Acquire);
            let tail = tail_ptr.load(Ordering::Relaxed);
            let size = (ring.page_size * DATA_PAGES) as u64;
            let available = head.wrapping_sub(tail).min(size) as usize;
            // SAFETY: the data area starts one page in and is `size` bytes long.
            let data = unsafe {
                std::slice::from_raw_parts(ring.base.as_ptr().add(ring.page_size), size as usize)
            };
            self.scratch.clear();
            let start = (tail % size) as usize;
            let first = available.min(data.len() - start);
            self.scratch.extend_from_slice(&data[start..start + first]);
            self.scratch.extend_from_slice(&data[..available - first]);
            self.lost += parse_records(&self.scratch, &mut events);
            tail_ptr.store(head, Ordering::Release);
        }
        events
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn c_string_at(bytes: &[u8], at: usize) -> String {
    bytes
        .get(at..)
        .and_then(|rest| CStr::from_bytes_until_nul(rest).ok())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses consecutive records (`struct perf_event_header` + body); returns the number of lost
/// records the kernel reported. Stops at the first malformed header.
fn parse_records(bytes: &[u8], events: &mut Vec<MappingEvent>) -> u64 {
    let mut lost = 0;
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let Some(kind) = u32_at(bytes, at) else { break };
        let misc = u16::from_ne_bytes([bytes[at + 4], bytes[at + 5]]);
        let size = u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
        if size < 8 || at + size > bytes.len() {
            break;
        }
        let body = &bytes[at + 8..at + size];
        match kind {
            PERF_RECORD_MMAP2 => {
                // pid, tid, addr, len, pgoff, 24 bytes of device/inode or build id, prot,
                // flags, filename.
                if let (Some(pid), Some(start), Some(len), Some(file_offset)) = (
                    u32_at(body, 0),
                    u64_at(body, 8),
                    u64_at(body, 16),
                    u64_at(body, 24),
                ) {
                    events.push(MappingEvent::Mmap {
                        pid,
                        start,
                        len,
                        file_offset,
                        path: c_string_at(body, 64),
                    });
                }
            }
            PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => {
                if let Some(pid) = u32_at(body, 0) {
                    events.push(MappingEvent::Exec { pid });
                }
            }
            PERF_RECORD_FORK | PERF_RECORD_EXIT => {
                // pid, ppid, tid, ptid: a new or ending process when tid == pid.
                if let (Some(pid), Some(parent), Some(tid)) =
                    (u32_at(body, 0), u32_at(body, 4), u32_at(body, 8))
                {
                    if kind == PERF_RECORD_FORK && pid != parent {
                        events.push(MappingEvent::Fork { pid, parent });
                    } else if kind == PERF_RECORD_EXIT && pid == tid {
                        events.push(MappingEvent::Exit { pid });
                    }
                }
            }
            PERF_RECORD_LOST => lost += u64_at(body, 8).unwrap_or(0),
            _ => {}
        }
        at += size;
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&((8 + body.len()) as u16).to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn attr_has_the_abi_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 136);
    }

    #[test]
    fn parses_records_and_ignores_garbage() {
        let mut mmap = Vec::new();
        for v in [42u32, 43] {
            mmap.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [0x5000u64, 0x2000, 0x1000] {
            mmap.extend_from_slice(&v.to_ne_bytes());
        }
        mmap.extend_from_slice(&[0; 24]);
        mmap.extend_from_slice(&5u32.to_ne_bytes());
        mmap.extend_from_slice(&2u32.to_ne_bytes());
        mmap.extend_from_slice(b"/usr/bin/true\0\0\0");
        let ids = |a: u32, b: u32, c: u32, d: u32| {
            [a, b, c, d]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .chain([0; 8])
                .collect::<Vec<u8>>()
        };
        let mut bytes = record(PERF_RECORD_MMAP2, 2, &mmap);
        bytes.extend(record(PERF_RECORD_FORK, 0, &ids(50, 42, 50, 42)));
        bytes.extend(record(PERF_RECORD_FORK, 0, &ids(42, 42, 51, 42))); // a thread
        let mut comm = 50u32.to_ne_bytes().to_vec();
        comm.extend_from_slice(&50u32.to_ne_bytes());
        comm.extend_from_slice(b"true\0\0\0\0");
        bytes.extend(record(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &comm));
        bytes.extend(record(PERF_RECORD_EXIT, 0, &ids(50, 42, 50, 42)));
        bytes.extend(record(
            PERF_RECORD_LOST,
            0,
            &[1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0],
        ));
        bytes.extend_from_slice(&[0xff; 5]); // a torn tail is ignored
        let mut events = Vec::new();
        let lost = parse_records(&bytes, &mut events);
        assert_eq!(lost, 7);
        assert_eq!(
            events,
            vec![
                MappingEvent::Mmap {
                    pid: 42,
                    start: 0x5000,
                    len: 0x2000,
                    file_offset: 0x1000,
                    path: "/usr/bin/true".into()
                },
                MappingEvent::Fork {
                    pid: 50,
                    parent: 42
                },
                MappingEvent::Exec { pid: 50 },
                MappingEvent::Exit { pid: 50 },
            ]
        );
        // Random bytes never panic.
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let len = (state % 300) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            parse_records(&junk, &mut Vec::new());
        }
    }
}
