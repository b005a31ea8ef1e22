//! The kernel's function symbols from `/proc/kallsyms`, held compactly: one sorted array of
//! (address, name offset, name length) and one string with every name. The agent keeps the
//! table for its whole life, so its size counts: a node's kernel has 100-200 k symbols, which a
//! table of one boxed string per symbol (blazesym's) holds in about twice the memory.
//!
//! Reading `/proc/kallsyms` costs the kernel 30-40 ms of formatting, most of a short
//! recording's CPU. [`Kallsyms::load_cached`] keeps the table in a root-only file keyed by the
//! boot and the loaded modules; a table from there answers only for the kernel's text and the
//! modules' (BPF programs and trampolines come and go), and [`Kallsyms::covers`] says when
//! `/proc/kallsyms` must be read after all.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::Path,
};

/// Where the running kernel lists its symbols.
const KALLSYMS: &str = "/proc/kallsyms";
/// The cache's directory: tmpfs, emptied at boot, root's only (kernel addresses would undo
/// KASLR for anyone who read them).
const CACHE_DIR: &str = "/run/profiler-agent";
/// Environment variable naming another cache directory, or `off` for none.
pub const CACHE_ENV: &str = "PROFILER_KALLSYMS_CACHE";
const CACHE_FILE: &str = "kallsyms.v1";
const CACHE_MAGIC: &[u8; 8] = b"PAKSYM01";

/// Function symbols of the kernel and its modules, sorted by address.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kallsyms {
    /// (address, offset of the name in `names`, its length), sorted by address.
    symbols: Vec<(u64, u32, u32)>,
    names: String,
    /// For a table from the cache: the address ranges it is complete for (the kernel's text,
    /// each module). `None`: read from `/proc/kallsyms` by this process, complete.
    covered: Option<Vec<(u64, u64)>>,
}

/// What a cached table is valid for: this boot (same kernel, same KASLR offsets) with these
/// modules loaded at these addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    pub boot_id: String,
    /// `/proc/modules` as read (empty without module support).
    pub modules: String,
}

impl CacheKey {
    /// The running kernel's key.
    pub fn current() -> io::Result<CacheKey> {
        Ok(CacheKey {
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")?
                .trim()
                .to_string(),
            modules: fs::read_to_string("/proc/modules").unwrap_or_default(),
        })
    }

    /// Each module's range: `NAME SIZE REFS DEPS STATE ADDRESS ...` per line.
    fn module_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.modules.lines().filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let size: u64 = fields.get(1)?.parse().ok()?;
            let base = u64::from_str_radix(fields.get(5)?.trim_start_matches("0x"), 16).ok()?;
            (base != 0).then(|| (base, base.saturating_add(size)))
        })
    }
}

impl Kallsyms {
    /// Reads the running kernel's table. Empty when addresses are hidden (`kptr_restrict`
    /// shows them as 0 to readers without CAP_SYSLOG).
    pub fn load() -> io::Result<Kallsyms> {
        Ok(Kallsyms::parse(BufReader::new(File::open(KALLSYMS)?)))
    }

    /// Parses lines of `/proc/kallsyms`: `ADDRESS TYPE NAME [MODULE]`. Only text symbols
    /// (types `t`/`T`, and weak `w`/`W`) are kept: a sampled instruction pointer is in code.
    /// Malformed lines are skipped.
    pub fn parse(reader: impl BufRead) -> Kallsyms {
        let mut table = Kallsyms::default();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let mut fields = line.split_ascii_whitespace();
            let (Some(address), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(address) = u64::from_str_radix(address, 16) else {
                continue;
            };
            if address == 0 {
                continue;
            }
            let (Ok(offset), Ok(len)) =
                (u32::try_from(table.names.len()), u32::try_from(name.len()))
            else {
                break;
            };
            table.names.push_str(name);
            table.symbols.push((address, offset, len));
        }
        table
            .symbols
            .sort_unstable_by_key(|&(address, _, _)| address);
        table.symbols.shrink_to_fit();
        table.names.shrink_to_fit();
        table
    }

    /// The table from the cache (in `$PROFILER_KALLSYMS_CACHE`, else `/run/profiler-agent`;
    /// none when that is `off`) or from `/proc/kallsyms`.
    pub fn load_default() -> io::Result<Kallsyms> {
        match std::env::var_os(CACHE_ENV) {
            Some(value) if value == "off" => Kallsyms::load(),
            Some(dir) if !dir.is_empty() => Kallsyms::load_cached(Path::new(&dir)),
            _ => Kallsyms::load_cached(Path::new(CACHE_DIR)),
        }
    }

    /// The table from the cache in `dir` when it was written for this boot and these modules;
    /// else read from `/proc/kallsyms`, and the cache written (best effort: a read-only `/run`
    /// only costs the next start the read).
    pub fn load_cached(dir: &Path) -> io::Result<Kallsyms> {
        let Ok(key) = CacheKey::current() else {
            return Kallsyms::load();
        };
        let path = dir.join(CACHE_FILE);
        if let Some(table) = Kallsyms::read_cache(&path, &key) {
            return Ok(table);
        }
        let table = Kallsyms::load()?;
        if !table.is_empty() {
            let _ = table.write_cache(dir, &key);
        }
        Ok(table)
    }

    /// Whether the table names `address` as `/proc/kallsyms` would now.
    pub fn covers(&self, address: u64) -> bool {
        self.covered.as_ref().is_none_or(|ranges| {
            ranges
                .iter()
                .any(|&(start, end)| start <= address && address < end)
        })
    }

    /// The ranges the table stays right for during `key`'s boot: the kernel's text
    /// (`_stext`..`_etext`) and the modules.
    fn static_ranges(&self, key: &CacheKey) -> Vec<(u64, u64)> {
        let address_of = |name: &str| {
            self.symbols
                .iter()
                .find(|&&(_, offset, len)| {
                    self.names.get(offset as usize..(offset + len) as usize) == Some(name)
                })
                .map(|&(address, _, _)| address)
        };
        let mut ranges: Vec<(u64, u64)> = key.module_ranges().collect();
        if let (Some(start), Some(end)) = (address_of("_stext"), address_of("_etext")) {
            ranges.push((start, end));
        }
        ranges
    }

    /// Writes the table for `key` into `dir/kallsyms.v1`: a directory and a file only root
    /// reads, replaced whole (written aside, then renamed). Nothing is written into a directory
    /// another user owns or may write to, and the file aside is created new (never through a
    /// link someone left there).
    fn write_cache(&self, dir: &Path, key: &CacheKey) -> io::Result<()> {
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
        let mut out = Vec::with_capacity(self.names.len() + self.symbols.len() * 16 + 4096);
        out.extend_from_slice(CACHE_MAGIC);
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(key.boot_id.as_bytes());
        put(key.modules.as_bytes());
        put(self.names.as_bytes());
        let ranges = self.static_ranges(key);
        out.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
        for (start, end) in ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(self.symbols.len() as u64).to_le_bytes());
        for &(address, offset, len) in &self.symbols {
            out.extend_from_slice(&address.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        let aside = dir.join(format!("{CACHE_FILE}.{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut file| file.write_all(&out));
        match written.and_then(|()| fs::rename(&aside, dir.join(CACHE_FILE))) {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = fs::remove_file(&aside);
                Err(error)
            }
        }
    }

    /// The cached table at `path` if it was written for `key` by this user and nobody else
    /// could have written it; `None` for anything else (missing, stale, foreign, malformed).
    fn read_cache(path: &Path, key: &CacheKey) -> Option<Kallsyms> {
        let metadata = fs::symlink_metadata(path).ok()?;
        if !metadata.is_file() || !only_this_user_writes(&metadata) {
            return None;
        }
        let file = BufReader::new(File::open(path).ok()?);
        Kallsyms::decode_cache(file, metadata.len(), key)
    }

    /// Parses a cache file of `len` bytes as it is read (the table is built without holding the
    /// file's bytes as well); `None` unless it is whole and for `key`.
    fn decode_cache(reader: impl Read, len: u64, key: &CacheKey) -> Option<Kallsyms> {
        let mut cursor = Cursor { reader, left: len };
        if cursor.take(CACHE_MAGIC.len())? != CACHE_MAGIC
            || cursor.field()? != key.boot_id.as_bytes()
            || cursor.field()? != key.modules.as_bytes()
        {
            return None;
        }
        let names = String::from_utf8(cursor.field()?).ok()?;
        let ranges = cursor.count(16)?;
        let mut covered = Vec::with_capacity(ranges);
        for _ in 0..ranges {
            covered.push((cursor.u64()?, cursor.u64()?));
        }
        let count = cursor.count(16)?;
        let mut symbols = Vec::with_capacity(count);
        for _ in 0..count {
            let (address, offset, len) = (cursor.u64()?, cursor.u32()?, cursor.u32()?);
            // Every name must lie inside `names` on character boundaries.
            names.get(offset as usize..offset as usize + len as usize)?;
            symbols.push((address, offset, len));
        }
        if cursor.left != 0 || !symbols.is_sorted_by_key(|&(address, _, _)| address) {
            return None;
        }
        Some(Kallsyms {
            symbols,
            names,
            covered: Some(covered),
        })
    }

    /// The function holding `address`: the symbol at or right below it.
    pub fn find(&self, address: u64) -> Option<&str> {
        let index = self
            .symbols
            .partition_point(|&(start, _, _)| start <= address)
            .checked_sub(1)?;
        let (_, offset, len) = self.symbols[index];
        self.names
            .get(offset as usize..offset as usize + len as usize)
    }

    /// Symbols held.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether no symbol is held (hidden addresses, or no kernel table).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

/// Whether the file or directory is this user's and neither its group nor others may write it.
fn only_this_user_writes(metadata: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    metadata.uid() == euid && metadata.mode() & 0o022 == 0
}

/// Reads the cache file's fields in order; `left` is what the file still holds.
struct Cursor<R> {
    reader: R,
    left: u64,
}

impl<R: Read> Cursor<R> {
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        self.left = self.left.checked_sub(n as u64)?;
        let mut bytes = vec![0; n];
        self.reader.read_exact(&mut bytes).ok()?;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.left = self.left.checked_sub(N as u64)?;
        let mut bytes = [0; N];
        self.reader.read_exact(&mut bytes).ok()?;
        Some(bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A length-prefixed byte string (its length checked against the file first, so a corrupt
    /// length allocates nothing).
    fn field(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len)
    }

    /// A count of items of `item_bytes` each, checked against the bytes left.
    fn count(&mut self, item_bytes: usize) -> Option<usize> {
        let count = usize::try_from(self.u64()?).ok()?;
        (count.checked_mul(item_bytes)? as u64 <= self.left).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_initcall
ffffffff82000000 D some_data
ffffffff81000800 T startup_64
ffffffffc0a01000 t nf_hook [nf_tables]
ffffffffc0b02000 t bpf_prog_6deef7357e7b4530_on_read_exit\t[bpf]
ffffffff81002000 W weak_function
garbage line
ffffffff81003000 T
";

    #[test]
    fn finds_the_symbol_at_or_below() {
        let table = Kallsyms::parse(TEXT.as_bytes());
        assert_eq!(table.len(), 6);
        assert_eq!(table.find(0xffffffff81000000), Some("_stext"));
        assert_eq!(table.find(0xffffffff810007ff), Some("_stext"));
        assert_eq!(table.find(0xffffffff81000801), Some("startup_64"));
        assert_eq!(table.find(0xffffffff81001234), Some("do_one_initcall"));
        assert_eq!(table.find(0xffffffff81002010), Some("weak_function"));
        // Data symbols are not code: the text symbol below stands.
        assert_eq!(table.find(0xffffffff82000010), Some("weak_function"));
        assert_eq!(table.find(0xffffffffc0a01010), Some("nf_hook"));
        assert_eq!(
            table.find(0xffffffffc0b02040),
            Some("bpf_prog_6deef7357e7b4530_on_read_exit")
        );
        assert_eq!(table.find(0xffffffff80ffffff), None);
    }

    fn key(boot_id: &str, modules: &str) -> CacheKey {
        CacheKey {
            boot_id: boot_id.into(),
            modules: modules.into(),
        }
    }

    const MODULES: &str = "nf_tables 356352 0 - Live 0xffffffffc0a00000\n\
                           hidden 4096 0 - Live 0x0000000000000000\n";

    #[test]
    fn the_cache_gives_the_same_table_for_the_same_boot_and_modules() {
        let dir = std::env::temp_dir().join(format!("profiler-kallsyms-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let table = Kallsyms::parse(TEXT.as_bytes());
        let this = key("boot-1", MODULES);
        table.write_cache(&dir, &this).expect("cache written");
        let mode = fs::metadata(dir.join(CACHE_FILE))
            .expect("cache file")
            .mode();
        assert_eq!(mode & 0o777, 0o600, "root's only");
        assert_eq!(fs::metadata(&dir).expect("dir").mode() & 0o777, 0o700);

        let cached = Kallsyms::read_cache(&dir.join(CACHE_FILE), &this).expect("cache read");
        assert_eq!(cached.symbols, table.symbols);
        assert_eq!(cached.names, table.names);
        assert_eq!(cached.find(0xffffffffc0a01010), Some("nf_hook"));
        // It answers for the kernel's text (_stext has no _etext here: so only modules) and
        // the modules; not for a BPF program's address.
        assert!(cached.covers(0xffffffffc0a01010));
        assert!(!cached.covers(0xffffffff81001234), "no _etext in TEXT");
        assert!(
            !cached.covers(0xffffffffc0b02040),
            "BPF programs come and go"
        );
        assert!(
            table.covers(0xffffffffc0b02040),
            "a table read now covers everything"
        );

        // Another boot, other modules: not used.
        assert!(Kallsyms::read_cache(&dir.join(CACHE_FILE), &key("boot-2", MODULES)).is_none());
        assert!(Kallsyms::read_cache(&dir.join(CACHE_FILE), &key("boot-1", "")).is_none());

        // The kernel's text range comes from _stext and _etext.
        let with_etext = format!("{TEXT}ffffffff82259b00 T _etext\n");
        let table = Kallsyms::parse(with_etext.as_bytes());
        table.write_cache(&dir, &this).expect("cache written");
        let cached = Kallsyms::read_cache(&dir.join(CACHE_FILE), &this).expect("cache read");
        assert!(cached.covers(0xffffffff81001234));
        assert!(!cached.covers(0xffffffff82259b00));

        // Nothing is written into a directory others may write to.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        assert!(table.write_cache(&dir, &this).is_err());
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");

        // A file others could have written is not trusted.
        let path = dir.join(CACHE_FILE);
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        assert!(Kallsyms::read_cache(&path, &this).is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cut_or_damaged_cache_is_not_used() {
        let this = key("boot-1", MODULES);
        let bytes = encoded(&Kallsyms::parse(TEXT.as_bytes()), &this);
        assert!(Kallsyms::decode_cache(&bytes[..], bytes.len() as u64, &this).is_some());
        for len in 0..bytes.len() {
            assert!(
                Kallsyms::decode_cache(&bytes[..len], len as u64, &this).is_none(),
                "cut at {len}"
            );
        }
        // A file that shrank after its length was read.
        let short = &bytes[..bytes.len() / 2];
        assert!(Kallsyms::decode_cache(short, bytes.len() as u64, &this).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Kallsyms::decode_cache(&longer[..], longer.len() as u64, &this).is_none());
    }

    proptest::proptest! {
        /// A valid cache with some bytes overwritten decodes to a table or to nothing, never
        /// a panic or a name outside the names.
        #[test]
        fn damaged_bytes_decode_to_a_table_or_nothing(
            at in 0usize..4096,
            patch in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..16),
        ) {
            let this = key("boot-1", MODULES);
            let mut bytes = encoded(&Kallsyms::parse(TEXT.as_bytes()), &this);
            let at = at % bytes.len();
            let end = (at + patch.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&patch[..end - at]);
            if let Some(table) = Kallsyms::decode_cache(&bytes[..], bytes.len() as u64, &this) {
                for &(address, _, _) in &table.symbols {
                    proptest::prop_assert!(table.find(address).is_some());
                }
            }
        }
    }

    /// The cache file's bytes for `table`.
    fn encoded(table: &Kallsyms, key: &CacheKey) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "profiler-kallsyms-enc-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        table.write_cache(&dir, key).expect("cache written");
        let bytes = fs::read(dir.join(CACHE_FILE)).expect("cache file");
        let _ = fs::remove_dir_all(&dir);
        bytes
    }

    #[test]
    fn hidden_addresses_make_an_empty_table() {
        let table =
            Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n".as_bytes());
        assert!(table.is_empty());
        assert_eq!(table.find(0x1000), None);
    }

    #[test]
    fn this_kernels_table_reads_back_from_the_cache_unchanged() {
        let table = Kallsyms::load().expect("/proc/kallsyms is readable");
        if table.is_empty() {
            return; // Addresses hidden from this user: nothing to cache.
        }
        let key = CacheKey::current().expect("the boot id");
        let dir = std::env::temp_dir().join(format!("profiler-kallsyms-os-{}", std::process::id()));
        table.write_cache(&dir, &key).expect("cache written");
        let cached = Kallsyms::read_cache(&dir.join(CACHE_FILE), &key).expect("cache read");
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(cached.symbols, table.symbols);
        assert_eq!(cached.names, table.names);
        let (stext, _, _) = *table
            .symbols
            .iter()
            .find(|&&(_, offset, len)| {
                &table.names[offset as usize..(offset + len) as usize] == "_stext"
            })
            .expect("_stext");
        assert!(cached.covers(stext), "the kernel's text is covered");
    }

    #[test]
    fn reads_this_kernel() {
        // Unprivileged runs see zeros (kptr_restrict): an empty table is fine then.
        let table = Kallsyms::load().expect("/proc/kallsyms is readable");
        if let Some(&(address, _, _)) = table.symbols.first() {
            assert!(table.find(address).is_some());
        }
    }
}
