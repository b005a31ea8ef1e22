//! The kernel's function symbols from `/proc/kallsyms`, held compactly: one sorted array of
//! (address, name offset, name length) entries and the names after it, in one buffer. The
//! agent keeps the table for its whole life, so its size counts: a node's kernel has 100-200 k
//! symbols, which a table of one boxed string per symbol (blazesym's) holds in about twice the
//! memory.
//!
//! Reading `/proc/kallsyms` costs the kernel 30-40 ms of formatting, most of a short
//! recording's CPU. [`Kallsyms::load_cached`] keeps the table in a root-only file keyed by the
//! boot and the loaded modules, laid out as the buffer is; later starts map that file, so a
//! lookup reads a few of its pages (a binary search) instead of the agent copying all of it
//! (~5 MB) into its heap. A table from there answers only for the kernel's text and the
//! modules' (BPF programs and trampolines come and go), and [`Kallsyms::covers`] says when
//! `/proc/kallsyms` must be read after all.

use std::{
    fmt,
    fs::{self, File},
    io::{self, BufRead, BufReader, Write},
    ops::{Deref, Range},
    path::Path,
};

use crate::cache;

/// Where the running kernel lists its symbols.
const KALLSYMS: &str = "/proc/kallsyms";
/// The table's file in the agent's cache directory.
const CACHE_FILE: &str = "kallsyms.v2";
/// The previous format's file (read whole into the heap), removed when a new cache is written.
const OLD_CACHE_FILE: &str = "kallsyms.v1";
const CACHE_MAGIC: &[u8; 8] = b"PAKSYM02";
/// Bytes of one entry: address (u64), name offset (u32), name length (u32), little-endian.
const ENTRY_BYTES: usize = 16;

/// Function symbols of the kernel and its modules, sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    bytes: Bytes,
    /// The entries in `bytes` ([`ENTRY_BYTES`] each, sorted by address).
    symbols: Range<usize>,
    /// The names in `bytes`; entries give offsets into this range.
    names: Range<usize>,
    /// For a table from the cache: the address ranges it is complete for (the kernel's text,
    /// each module). `None`: read from `/proc/kallsyms` by this process, complete.
    covered: Option<Vec<(u64, u64)>>,
}

/// A table's bytes: built in the heap from `/proc/kallsyms`, or the cache file mapped.
enum Bytes {
    Owned(Vec<u8>),
    Mapped(cache::Mapping),
}

impl Default for Bytes {
    fn default() -> Self {
        Bytes::Owned(Vec::new())
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(bytes) => bytes,
            Bytes::Mapped(mapping) => mapping,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Bytes::Owned(_) => "owned",
            Bytes::Mapped(_) => "mapped",
        };
        write!(f, "{kind} {} bytes", self.len())
    }
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
        let mut symbols: Vec<(u64, u32, u32)> = Vec::new();
        let mut names = Vec::new();
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
            let (Ok(offset), Ok(len)) = (u32::try_from(names.len()), u32::try_from(name.len()))
            else {
                break;
            };
            names.extend_from_slice(name.as_bytes());
            symbols.push((address, offset, len));
        }
        symbols.sort_unstable_by_key(|&(address, _, _)| address);
        let mut bytes = Vec::with_capacity(symbols.len() * ENTRY_BYTES + names.len());
        for (address, offset, len) in symbols {
            bytes.extend_from_slice(&address.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
        }
        let symbols = 0..bytes.len();
        bytes.extend_from_slice(&names);
        Kallsyms {
            names: symbols.end..bytes.len(),
            symbols,
            bytes: Bytes::Owned(bytes),
            covered: None,
        }
    }

    /// The table from the agent's cache (see [`cache::dir`]; none when that is `off`) or from
    /// `/proc/kallsyms`.
    pub fn load_default() -> io::Result<Kallsyms> {
        match cache::dir() {
            Some(dir) => Kallsyms::load_cached(&dir),
            None => Kallsyms::load(),
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
        let address_of = |wanted: &str| {
            self.symbols()
                .find(|&(_, name)| name == Some(wanted))
                .map(|(address, _)| address)
        };
        let mut ranges: Vec<(u64, u64)> = key.module_ranges().collect();
        if let (Some(start), Some(end)) = (address_of("_stext"), address_of("_etext")) {
            ranges.push((start, end));
        }
        ranges
    }

    /// Writes the table for `key` into `dir/kallsyms.v2`: a directory and a file only root
    /// reads, replaced whole (written aside, then renamed). Nothing is written into a directory
    /// another user owns or may write to, and the file aside is created new (never through a
    /// link someone left there).
    ///
    /// Layout: magic, the key's two fields (each a u64 length and the bytes), the covered
    /// ranges (a u64 count, then start and end as u64 each), the symbol count and the names'
    /// length (u64 each), then the table's entries and names as [`Kallsyms`] holds them. All
    /// integers little-endian.
    fn write_cache(&self, dir: &Path, key: &CacheKey) -> io::Result<()> {
        cache::prepare_dir(dir)?;
        let mut out = Vec::with_capacity(key.modules.len() + 4096);
        out.extend_from_slice(CACHE_MAGIC);
        for field in [key.boot_id.as_bytes(), key.modules.as_bytes()] {
            out.extend_from_slice(&(field.len() as u64).to_le_bytes());
            out.extend_from_slice(field);
        }
        let ranges = self.static_ranges(key);
        out.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
        for (start, end) in ranges {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.names.len() as u64).to_le_bytes());
        cache::write_replacing(dir, CACHE_FILE, |file| {
            file.write_all(&out)?;
            file.write_all(&self.bytes[self.symbols.clone()])?;
            file.write_all(&self.bytes[self.names.clone()])
        })?;
        let _ = fs::remove_file(dir.join(OLD_CACHE_FILE));
        Ok(())
    }

    /// The cached table at `path`, mapped, if it was written for `key` by this user and nobody
    /// else could have written it; `None` for anything else (missing, stale, foreign, cut).
    fn read_cache(path: &Path, key: &CacheKey) -> Option<Kallsyms> {
        Kallsyms::decode_cache(Bytes::Mapped(cache::map_trusted(path)?), key)
    }

    /// A table over a cache file's bytes; `None` unless they were written for `key` and their
    /// sizes add up to exactly the file. Only the header is read here: entries and names are
    /// checked as lookups reach them (see [`Kallsyms::find`]), so a start reads a few pages of
    /// the file rather than all of it.
    fn decode_cache(bytes: Bytes, key: &CacheKey) -> Option<Kallsyms> {
        let mut cursor = Cursor {
            bytes: &bytes,
            at: 0,
        };
        if cursor.take(CACHE_MAGIC.len())? != CACHE_MAGIC
            || cursor.field()? != key.boot_id.as_bytes()
            || cursor.field()? != key.modules.as_bytes()
        {
            return None;
        }
        let ranges = cursor.count(16)?;
        let mut covered = Vec::with_capacity(ranges);
        for _ in 0..ranges {
            covered.push((cursor.u64()?, cursor.u64()?));
        }
        let count = cursor.count(ENTRY_BYTES)?;
        let names_len = usize::try_from(cursor.u64()?).ok()?;
        let symbols = cursor.at..cursor.at.checked_add(count * ENTRY_BYTES)?;
        let names = symbols.end..symbols.end.checked_add(names_len)?;
        if names.end != bytes.len() {
            return None;
        }
        Some(Kallsyms {
            bytes,
            symbols,
            names,
            covered: Some(covered),
        })
    }

    /// Entry `index`: (address, name offset, name length).
    fn entry(&self, index: usize) -> (u64, u32, u32) {
        let at = self.symbols.start + index * ENTRY_BYTES;
        let field = |from: usize, to: usize| &self.bytes[at + from..at + to];
        (
            u64::from_le_bytes(field(0, 8).try_into().unwrap_or_default()),
            u32::from_le_bytes(field(8, 12).try_into().unwrap_or_default()),
            u32::from_le_bytes(field(12, 16).try_into().unwrap_or_default()),
        )
    }

    /// The name at `offset` of `len` bytes: `None` if that lies outside the names or is not
    /// UTF-8 (a damaged cache file).
    fn name(&self, offset: u32, len: u32) -> Option<&str> {
        let names = &self.bytes[self.names.clone()];
        let start = offset as usize;
        std::str::from_utf8(names.get(start..start.checked_add(len as usize)?)?).ok()
    }

    /// Every (address, name) in address order.
    pub fn symbols(&self) -> impl Iterator<Item = (u64, Option<&str>)> + '_ {
        (0..self.len()).map(|index| {
            let (address, offset, len) = self.entry(index);
            (address, self.name(offset, len))
        })
    }

    /// The function holding `address`: the symbol at or right below it.
    pub fn find(&self, address: u64) -> Option<&str> {
        // partition_point over the entries, read in place.
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).0 <= address {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let (_, offset, len) = self.entry(low.checked_sub(1)?);
        self.name(offset, len)
    }

    /// Symbols held.
    pub fn len(&self) -> usize {
        self.symbols.len() / ENTRY_BYTES
    }

    /// Whether no symbol is held (hidden addresses, or no kernel table).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads a cache file's header fields in order.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A length-prefixed byte string.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len)
    }

    /// A count of items of `item_bytes` each, checked against the bytes left.
    fn count(&mut self, item_bytes: usize) -> Option<usize> {
        let count = usize::try_from(self.u64()?).ok()?;
        (count.checked_mul(item_bytes)? <= self.bytes.len() - self.at).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
        assert!(matches!(cached.bytes, Bytes::Mapped(_)));
        assert!(cached.symbols().eq(table.symbols()));
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
    fn a_cut_or_lengthened_cache_is_not_used() {
        let this = key("boot-1", MODULES);
        let bytes = encoded(&Kallsyms::parse(TEXT.as_bytes()), &this);
        let decode = |bytes: &[u8]| Kallsyms::decode_cache(Bytes::Owned(bytes.to_vec()), &this);
        assert!(decode(&bytes).is_some());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_none(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
    }

    proptest::proptest! {
        /// A valid cache with some bytes overwritten decodes to a table or to nothing, and its
        /// lookups never panic or give a name outside the names (entries are checked as they
        /// are read, not at load).
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
            if let Some(table) = Kallsyms::decode_cache(Bytes::Owned(bytes), &this) {
                let names = table.bytes[table.names.clone()].as_ptr_range();
                let addresses: Vec<u64> = table.symbols().map(|(address, _)| address).collect();
                for address in addresses.into_iter().chain([0, u64::MAX]) {
                    if let Some(name) = table.find(address) {
                        let within = name.as_bytes().as_ptr_range();
                        proptest::prop_assert!(
                            names.start <= within.start && within.end <= names.end
                        );
                    }
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
        assert!(cached.symbols().eq(table.symbols()));
        let (stext, _) = table
            .symbols()
            .find(|&(_, name)| name == Some("_stext"))
            .expect("_stext");
        assert!(cached.covers(stext), "the kernel's text is covered");
    }

    #[test]
    fn reads_this_kernel() {
        // Unprivileged runs see zeros (kptr_restrict): an empty table is fine then.
        let table = Kallsyms::load().expect("/proc/kallsyms is readable");
        let first = table.symbols().next().map(|(address, _)| address);
        if let Some(address) = first {
            assert!(table.find(address).is_some());
        }
    }
}
