//! The agent's cache directory (`/run/profiler-agent`, or `$PROFILER_CACHE`): files that save
//! later starts work, written so that nobody but the agent's user can have made them.
//!
//! - `kallsyms.v2`: the kernel's symbol table for this boot ([`crate::kallsyms`]).
//! - `debug/BUILD-ID.debug`: decompressed copies of separate debug files whose DWARF is
//!   compressed ([`crate::debug_file`]).
//!
//! The default directory is a tmpfs, emptied at boot, root's only: kernel addresses would undo
//! KASLR for anyone who read them. A file is only ever replaced whole (written aside, then
//! renamed), so a reader that mapped it keeps the bytes it checked.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    ops::Deref,
    os::unix::{
        fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
        io::AsRawFd,
    },
    path::{Path, PathBuf},
};

/// The default cache directory.
const DEFAULT_DIR: &str = "/run/profiler-agent";
/// Environment variable naming another cache directory, or `off` for none.
pub const CACHE_ENV: &str = "PROFILER_CACHE";

/// The cache directory: `$PROFILER_CACHE` when set (`None` when that is `off`), else
/// `/run/profiler-agent`.
pub fn dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(value) if value == "off" => None,
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => Some(PathBuf::from(DEFAULT_DIR)),
    }
}

/// Creates `dir` (mode 0700) if needed and checks that it is a directory only this user may
/// write to: nothing is written into one another user could have prepared.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let metadata = fs::symlink_metadata(dir)?;
    if !metadata.is_dir() || !only_this_user_writes(&metadata) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory only this user writes", dir.display()),
        ));
    }
    Ok(())
}

/// Writes `dir/name` (mode 0600) whole with `write`: into a new file aside (created new, so
/// never through a link someone left there), then renamed over the old one. `dir` must have
/// passed [`prepare_dir`]. Nothing is left behind on error.
pub fn write_replacing(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let aside = dir.join(format!("{name}.{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .and_then(|file| {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            out.flush()
        })
        .and_then(|()| fs::rename(&aside, dir.join(name)));
    if written.is_err() {
        let _ = fs::remove_file(&aside);
    }
    written
}

/// The file at `path`, mapped, if it is a non-empty regular file of this user's that nobody
/// else may write; `None` otherwise (missing, foreign, empty).
pub fn map_trusted(path: &Path) -> Option<Mapping> {
    let metadata = fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() || !only_this_user_writes(&metadata) {
        return None;
    }
    Mapping::of(&File::open(path).ok()?).ok()
}

/// Whether the file or directory is this user's and neither its group nor others may write it.
pub fn only_this_user_writes(metadata: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    metadata.uid() == euid && metadata.mode() & 0o022 == 0
}

/// A whole file mapped read-only and private.
///
/// The cache's files are never changed in place (see [`write_replacing`]), so the mapped pages
/// stay what was checked. Only a file's owner could shorten it under the agent; a read past
/// the new end would then kill the agent with SIGBUS. Files other users may write are read,
/// not mapped.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; shared references only read it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `file`; an empty file is refused (`InvalidData`).
    pub fn of(file: &File) -> io::Result<Mapping> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"));
        }
        // SAFETY: a new private read-only mapping of an open descriptor; the kernel checks the
        // arguments and the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
