//! Separate debug files: the DWARF and full symbol table of a stripped binary, installed by a
//! distribution's debug packages (Debian's `-dbg`/`-dbgsym`, Fedora's `-debuginfo`) as
//! `/usr/lib/debug/.build-id/XX/YYYY.debug`.
//!
//! blazesym finds such a file by itself through the binary's `.gnu_debuglink`, but then checks
//! the link's CRC over the whole debug file and inflates every compressed DWARF section, at
//! every start: Debian compresses them with zlib, and libc's 4 MB debug file holds 10 MB of
//! DWARF, which took most of a short recording's CPU (BENCHMARKS.md, entry 4). Here the debug
//! file is found by the binary's build id (and must carry the same one), and a debug file whose
//! sections are compressed is written out decompressed once, into the agent's cache
//! ([`crate::cache`], `debug/BUILD-ID.debug`). blazesym then reads the copy as a plain ELF file,
//! given virtual addresses that the binary's own program headers translate from file offsets
//! (a debug file's segments have no contents to translate with).

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    mem,
    ops::Range,
    path::{Path, PathBuf},
};

use object::{
    elf::{
        CompressionHeader64, FileHeader64, SectionHeader64, ELFCOMPRESS_ZLIB, SHF_COMPRESSED,
        SHT_NOBITS, SHT_NULL,
    },
    pod,
    read::elf::{ElfFile64, FileHeader, SectionHeader},
    Endianness, Object, ObjectSegment, ReadCache,
};

use crate::cache::{self, Mapping};

/// Where debug packages install their files, searched in this order.
pub const DEFAULT_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Most bytes the decompressed copies may take in the cache directory (a tmpfs by default, so
/// this is memory): a copy that would pass it is not written, and blazesym inflates that
/// debug file itself at each start, as it would without the cache.
pub const COPIES_BUDGET: u64 = 256 << 20;

/// The cache's subdirectory for decompressed copies.
const COPIES_DIR: &str = "debug";

/// Bytes of a 64-bit ELF header; a copy's program headers follow it.
const HEADER_BYTES: usize = mem::size_of::<FileHeader64<Endianness>>();

/// Largest section alignment a copy keeps (larger ones are refused as malformed).
const MAX_ALIGN: u64 = 1 << 16;

/// Where debug files are looked for and where decompressed copies are kept.
#[derive(Clone, Debug)]
pub struct DebugDirs {
    pub dirs: Vec<PathBuf>,
    /// The agent's cache directory; `None`: no copies, blazesym inflates at each start.
    pub cache: Option<PathBuf>,
}

impl Default for DebugDirs {
    /// [`DEFAULT_DEBUG_DIRS`] and the agent's cache ([`cache::dir`]).
    fn default() -> Self {
        DebugDirs {
            dirs: DEFAULT_DEBUG_DIRS.iter().map(PathBuf::from).collect(),
            cache: cache::dir(),
        }
    }
}

/// A binary's separate debug file, as blazesym is to read it.
#[derive(Debug)]
pub struct SeparateDebug {
    /// The debug file, or its decompressed copy in the cache.
    pub path: PathBuf,
    /// The binary's loadable segments: file offsets → virtual addresses.
    segments: Vec<Segment>,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    size: u64,
    address: u64,
}

impl SeparateDebug {
    /// The separate debug file of the binary at `binary` (whose build id is `build_id`, in
    /// hex), when it has one in `dirs` with the same build id and the binary has no DWARF of
    /// its own. Decompresses it into the cache when its sections are compressed. `None` leaves
    /// the binary to blazesym as it is.
    pub fn find(binary: &Path, build_id: &str, dirs: &DebugDirs) -> Option<SeparateDebug> {
        let id = parse_hex(build_id)?;
        let path = dirs
            .dirs
            .iter()
            .map(|dir| build_id_path(dir, build_id))
            .find(|path| path.is_file())?;
        let segments = binary_segments(binary)?;
        let debug = Mapping::of(&File::open(&path).ok()?).ok()?;
        let elf = ElfFile64::<Endianness>::parse(&*debug).ok()?;
        if elf.build_id().ok()?? != id.as_slice() {
            return None;
        }
        let compressed = elf
            .elf_section_table()
            .iter()
            .any(|section| section.sh_flags(elf.endian()) & u64::from(SHF_COMPRESSED) != 0);
        let path = match &dirs.cache {
            Some(cache) if compressed => {
                match decompressed_copy(&cache.join(COPIES_DIR), build_id, &id, &debug) {
                    Ok(copy) => copy,
                    Err(error) => {
                        eprintln!(
                            "warning: {}: no decompressed copy in the cache ({error}); its DWARF \
                             is inflated at every start",
                            path.display()
                        );
                        path
                    }
                }
            }
            _ => path,
        };
        Some(SeparateDebug { path, segments })
    }

    /// The virtual address (as the binary and its debug file number them) of a file offset in
    /// the binary; `None` outside its loadable segments.
    pub fn virtual_address(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|segment| {
                segment.offset <= file_offset && file_offset - segment.offset < segment.size
            })
            .map(|segment| segment.address + (file_offset - segment.offset))
    }
}

/// `DIR/.build-id/XX/YYYY.debug` for build id `XXYYYY`.
fn build_id_path(dir: &Path, build_id: &str) -> PathBuf {
    let (head, rest) = build_id.split_at(2);
    dir.join(".build-id")
        .join(head)
        .join(format!("{rest}.debug"))
}

/// Lowercase hex (at least two bytes' worth, as build id paths need) to bytes.
fn parse_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() < 4 || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).ok())
        .collect()
}

/// The loadable segments of a 64-bit ELF binary without DWARF of its own. Only the headers are
/// read (the binary may be any process's, even one changing under us, so it is not mapped).
fn binary_segments(binary: &Path) -> Option<Vec<Segment>> {
    let data = ReadCache::new(File::open(binary).ok()?);
    let elf = ElfFile64::<Endianness, _>::parse(&data).ok()?;
    if elf.section_by_name(".debug_info").is_some() {
        return None;
    }
    let segments: Vec<Segment> = elf
        .segments()
        .filter_map(|segment| {
            let (offset, size) = segment.file_range();
            (size > 0).then_some(Segment {
                offset,
                size,
                address: segment.address(),
            })
        })
        .collect();
    (!segments.is_empty()).then_some(segments)
}

/// The decompressed copy of `debug` in `dir` (`BUILD-ID.debug`): the one there when it is
/// whole and for this build id, else a new one, if it fits in [`COPIES_BUDGET`].
fn decompressed_copy(dir: &Path, build_id: &str, id: &[u8], debug: &[u8]) -> io::Result<PathBuf> {
    let name = format!("{build_id}.debug");
    let path = dir.join(&name);
    if cache::map_trusted(&path).is_some_and(|copy| is_decompressed_copy(&copy, id)) {
        return Ok(path);
    }
    let layout = Layout::of(debug)?;
    if let Some(parent) = dir.parent() {
        cache::prepare_dir(parent)?;
    }
    cache::prepare_dir(dir)?;
    let used: u64 = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum();
    if used.saturating_add(layout.size) > COPIES_BUDGET {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "a {} byte copy would pass the {COPIES_BUDGET} byte budget of {}",
                layout.size,
                dir.display()
            ),
        ));
    }
    cache::write_replacing(dir, &name, |out| layout.write(debug, out))?;
    Ok(path)
}

/// Whether `copy` is a whole ELF file with build id `id` and no compressed section.
fn is_decompressed_copy(copy: &[u8], id: &[u8]) -> bool {
    let Ok(elf) = ElfFile64::<Endianness>::parse(copy) else {
        return false;
    };
    let endian = elf.endian();
    elf.build_id().ok().flatten() == Some(id)
        && elf.elf_section_table().iter().all(|section| {
            section.sh_flags(endian) & u64::from(SHF_COMPRESSED) == 0
                && (section.sh_type(endian) == SHT_NOBITS
                    || section
                        .file_range(endian)
                        .is_none_or(|(offset, size)| file_range(offset, size, copy).is_ok()))
        })
}

/// Where everything of a debug file goes in its decompressed copy: the ELF header, then the
/// program headers (kept as they are: a debug file's segments describe the binary), then each
/// section's contents in order, compressed ones inflated, then the section headers.
#[derive(Debug)]
struct Layout {
    endian: Endianness,
    header: FileHeader64<Endianness>,
    program_headers: Range<usize>,
    sections: Vec<(SectionHeader64<Endianness>, Contents)>,
    /// Total bytes of the copy.
    size: u64,
}

/// A section's contents in the copy.
#[derive(Debug)]
enum Contents {
    /// None in the file (`SHT_NULL`, `SHT_NOBITS`).
    None,
    /// These bytes of the debug file, as they are.
    Copied(Range<usize>),
    /// This zlib stream of the debug file, inflated (to the size the new header gives).
    Inflated(Range<usize>),
}

impl Layout {
    /// Plans the copy of a 64-bit ELF file; an error for anything malformed or compressed
    /// other than with zlib.
    fn of(data: &[u8]) -> io::Result<Layout> {
        let header = FileHeader64::<Endianness>::parse(data).map_err(malformed)?;
        let endian = header.endian().map_err(malformed)?;
        let program_headers = header.program_headers(endian, data).map_err(malformed)?;
        let phoff = header.e_phoff.get(endian);
        let program_headers = match program_headers.len() {
            0 => 0..0,
            count => {
                let start = to_usize(phoff)?;
                start..start + count * mem::size_of_val(&program_headers[0])
            }
        };
        let mut at = (HEADER_BYTES + program_headers.len()) as u64;
        let mut sections = Vec::new();
        for section in header.section_headers(endian, data).map_err(malformed)? {
            let mut new = *section;
            let kind = section.sh_type(endian);
            let contents = if kind == SHT_NULL || kind == SHT_NOBITS {
                Contents::None
            } else if let Some((compression, offset, size)) =
                section.compression(endian, data).map_err(malformed)?
            {
                let compression: &CompressionHeader64<Endianness> = compression;
                if compression.ch_type.get(endian) != ELFCOMPRESS_ZLIB {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "section compressed other than with zlib",
                    ));
                }
                let inflated = compression.ch_size.get(endian);
                let align = compression.ch_addralign.get(endian);
                at = placed(&mut new, endian, at, inflated, align)?;
                new.sh_flags.set(
                    endian,
                    section.sh_flags(endian) & !u64::from(SHF_COMPRESSED),
                );
                new.sh_addralign.set(endian, align);
                Contents::Inflated(file_range(offset, size, data)?)
            } else {
                let (offset, size) = section.file_range(endian).unwrap_or((0, 0));
                let align = section.sh_addralign(endian);
                at = placed(&mut new, endian, at, size, align)?;
                Contents::Copied(file_range(offset, size, data)?)
            };
            sections.push((new, contents));
        }
        let shoff = align_up(at, 8)?;
        let size = (sections.len() as u64)
            .checked_mul(mem::size_of::<SectionHeader64<Endianness>>() as u64)
            .and_then(|bytes| bytes.checked_add(shoff))
            .ok_or_else(|| malformed("sizes overflow"))?;
        let mut header = *header;
        header.e_phoff.set(
            endian,
            if program_headers.is_empty() {
                0
            } else {
                HEADER_BYTES as u64
            },
        );
        header.e_shoff.set(endian, shoff);
        Ok(Layout {
            endian,
            header,
            program_headers,
            sections,
            size,
        })
    }

    /// Writes the copy of `data` (the file [`Layout::of`] planned) to `out`.
    fn write(&self, data: &[u8], out: &mut dyn Write) -> io::Result<()> {
        out.write_all(pod::bytes_of(&self.header))?;
        out.write_all(&data[self.program_headers.clone()])?;
        let mut at = (HEADER_BYTES + self.program_headers.len()) as u64;
        for (section, contents) in &self.sections {
            let offset = section.sh_offset.get(self.endian);
            let size = section.sh_size.get(self.endian);
            match contents {
                Contents::None => continue,
                Contents::Copied(range) => {
                    pad(out, offset - at)?;
                    out.write_all(&data[range.clone()])?;
                }
                Contents::Inflated(range) => {
                    pad(out, offset - at)?;
                    let mut inflater = flate2::read::ZlibDecoder::new(&data[range.clone()]);
                    let inflated = io::copy(&mut (&mut inflater).take(size), out)?;
                    if inflated != size || inflater.read(&mut [0])? != 0 {
                        return Err(malformed(
                            "a section inflates to another size than its header gives",
                        ));
                    }
                }
            }
            at = offset + size;
        }
        pad(out, self.header.e_shoff.get(self.endian) - at)?;
        for (section, _) in &self.sections {
            out.write_all(pod::bytes_of(section))?;
        }
        Ok(())
    }
}

/// Places a section of `size` bytes aligned to `align` at or after `at`, in its header; the
/// offset after it.
fn placed(
    section: &mut SectionHeader64<Endianness>,
    endian: Endianness,
    at: u64,
    size: u64,
    align: u64,
) -> io::Result<u64> {
    let offset = align_up(at, align)?;
    section.sh_offset.set(endian, offset);
    section.sh_size.set(endian, size);
    offset
        .checked_add(size)
        .filter(|&end| end <= COPIES_BUDGET)
        .ok_or_else(|| malformed("section too large"))
}

fn align_up(at: u64, align: u64) -> io::Result<u64> {
    let align = align.max(1);
    if !align.is_power_of_two() || align > MAX_ALIGN {
        return Err(malformed("section alignment out of range"));
    }
    at.checked_add(align - 1)
        .map(|end| end & !(align - 1))
        .ok_or_else(|| malformed("offsets overflow"))
}

fn file_range(offset: u64, size: u64, data: &[u8]) -> io::Result<Range<usize>> {
    let start = to_usize(offset)?;
    let end = start
        .checked_add(to_usize(size)?)
        .filter(|&end| end <= data.len())
        .ok_or_else(|| malformed("section contents past the end of the file"))?;
    Ok(start..end)
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| malformed("offset out of range"))
}

fn pad(out: &mut dyn Write, zeros: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(zeros), out).map(drop)
}

fn malformed(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed debug file: {error}"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::process::Command;

    use blazesym::symbolize::{source::Source, Input, Symbolized, Symbolizer};
    use object::{ObjectSection, ObjectSymbol};
    use proptest::prelude::*;

    use super::*;

    const SOURCE: &str = r#"
#include <stdio.h>
static inline __attribute__((always_inline)) int spin(int x) {
    int sum = 0;
    for (int i = 0; i < x; i++) sum += i * x;
    return sum;
}
__attribute__((noinline)) int fixture_work(int x) { return spin(x) + 1; }
__attribute__((noinline)) int fixture_other(int x) { return x * x - 3; }
int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) getchar(); /* any argument: wait until stdin closes */
    printf("%d\n", fixture_work(argc) + fixture_other(argc));
    return 0;
}
"#;

    /// A stripped binary whose DWARF is in a zlib-compressed separate debug file, installed
    /// under a debug directory by build id as Debian's debug packages are.
    pub(crate) struct Fixture {
        pub dir: PathBuf,
        pub binary: PathBuf,
        /// The debug file (also next to the binary, where blazesym's own lookup finds it).
        pub debug: PathBuf,
        pub debug_dirs: Vec<PathBuf>,
        pub build_id: String,
    }

    fn run(command: &mut Command) {
        let status = command
            .status()
            .unwrap_or_else(|error| panic!("{command:?}: {error} (gcc and binutils needed)"));
        assert!(status.success(), "{command:?}: {status}");
    }

    impl Fixture {
        /// Builds the fixture in a directory of its own, removed when it is dropped.
        pub fn new(test: &str) -> Fixture {
            let dir = std::env::temp_dir()
                .join(format!("profiler-debug-file-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("fixture dir");
            fs::write(dir.join("fixture.c"), SOURCE).expect("source");
            let binary = dir.join("fixture");
            let debug = dir.join("fixture.debug");
            run(Command::new("gcc")
                .args(["-g", "-O2", "-o"])
                .arg(&binary)
                .arg(dir.join("fixture.c")));
            run(Command::new("objcopy")
                .args(["--only-keep-debug", "--compress-debug-sections=zlib"])
                .arg(&binary)
                .arg(&debug));
            run(Command::new("objcopy")
                .arg("--strip-debug")
                .arg(format!("--add-gnu-debuglink={}", debug.display()))
                .arg(&binary));
            let build_id = build_id_of(&binary);
            let debug_dir = dir.join("debug");
            let installed = build_id_path(&debug_dir, &build_id);
            fs::create_dir_all(installed.parent().expect("parent")).expect("build id dir");
            fs::copy(&debug, &installed).expect("installed debug file");
            Fixture {
                debug_dirs: vec![debug_dir],
                dir,
                binary,
                debug,
                build_id,
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn build_id_of(binary: &Path) -> String {
        blazesym::helper::read_elf_build_id(binary)
            .expect("readable binary")
            .expect("gcc gives a build id")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn dirs(fixture: &Fixture) -> DebugDirs {
        DebugDirs {
            dirs: fixture.debug_dirs.clone(),
            cache: Some(fixture.dir.join("cache")),
        }
    }

    impl Fixture {
        /// Each function of the binary's text: name and the file offsets of its bytes, from
        /// the sections (not from the segments [`SeparateDebug::virtual_address`] uses).
        pub fn functions(&self) -> Vec<(String, Range<u64>)> {
            let data = fs::read(&self.binary).expect("binary");
            let elf = ElfFile64::<Endianness>::parse(data.as_slice()).expect("elf");
            let text = elf.section_by_name(".text").expect(".text");
            let (text_offset, _) = text.file_range().expect("text in file");
            elf.symbols()
                .filter(|symbol| symbol.kind() == object::SymbolKind::Text && symbol.size() > 0)
                .filter(|symbol| symbol.section_index() == Some(text.index()))
                .map(|symbol| {
                    let start = symbol.address() - text.address() + text_offset;
                    let name = symbol.name().expect("name").to_string();
                    (name, start..start + symbol.size())
                })
                .collect()
        }
    }

    fn section_contents(path: &Path) -> Vec<(String, Vec<u8>)> {
        let data = fs::read(path).expect("ELF file");
        let elf = ElfFile64::<Endianness>::parse(data.as_slice()).expect("elf");
        elf.sections()
            .filter(|section| section.kind() != object::SectionKind::UninitializedData)
            .map(|section| {
                let contents = section.data().expect("contents").to_vec();
                (section.name().expect("name").to_string(), contents)
            })
            .collect()
    }

    /// Name, file, line and inlined functions of each address, as text to compare.
    fn described(
        symbolizer: &Symbolizer,
        source: &Source<'_>,
        input: Input<&[u64]>,
    ) -> Vec<String> {
        symbolizer
            .symbolize(source, input)
            .expect("symbolized")
            .iter()
            .map(|result| match result {
                Symbolized::Sym(sym) => {
                    let code = sym
                        .code_info
                        .as_ref()
                        .map(|code| (code.file.to_string_lossy().into_owned(), code.line));
                    let inlined: Vec<String> = sym
                        .inlined
                        .iter()
                        .map(|inlined| inlined.name.to_string())
                        .collect();
                    format!("{} {code:?} {inlined:?}", sym.name)
                }
                Symbolized::Unknown(reason) => format!("unknown: {reason}"),
            })
            .collect()
    }

    #[test]
    fn a_compressed_debug_file_answers_through_its_decompressed_copy_as_through_the_original() {
        let fixture = &Fixture::new("same-answers");
        let dirs = dirs(fixture);
        let separate =
            SeparateDebug::find(&fixture.binary, &fixture.build_id, &dirs).expect("found");
        let copies = dirs.cache.as_ref().expect("cache").join(COPIES_DIR);
        assert_eq!(
            separate.path,
            copies.join(format!("{}.debug", fixture.build_id))
        );
        let mode = fs::metadata(&separate.path).expect("copy").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // Every section the same as binutils' own decompression gives, none compressed.
        let decompressed = fixture.dir.join("fixture.objcopy-decompressed.debug");
        run(Command::new("objcopy")
            .arg("--decompress-debug-sections")
            .arg(&fixture.debug)
            .arg(&decompressed));
        let expected = section_contents(&decompressed);
        assert!(expected.iter().any(|(name, _)| name == ".debug_info"));
        assert_eq!(section_contents(&separate.path), expected);

        // The same answer for every function, and inside it, as blazesym reading the stripped
        // binary and inflating the original debug file itself.
        let offsets: Vec<u64> = fixture
            .functions()
            .into_iter()
            .flat_map(|(_, offsets)| offsets)
            .collect();
        assert!(offsets.len() >= 30, "{offsets:?}");
        let addresses: Vec<u64> = offsets
            .iter()
            .map(|&offset| separate.virtual_address(offset).expect("in a segment"))
            .collect();
        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .set_debug_dirs(Some(&fixture.debug_dirs))
            .build();
        let through_copy = described(
            &symbolizer,
            &Source::Elf(blazesym::symbolize::source::Elf::new(&separate.path)),
            Input::VirtOffset(&addresses),
        );
        let through_binary = described(
            &symbolizer,
            &Source::Elf(blazesym::symbolize::source::Elf::new(&fixture.binary)),
            Input::FileOffset(&offsets),
        );
        assert_eq!(through_copy, through_binary);
        assert!(
            through_copy
                .iter()
                .any(|line| line.starts_with("fixture_work ")
                    && line.contains("fixture.c")
                    && line.contains("spin")),
            "fixture_work with its file and inlined spin: {through_copy:#?}"
        );
    }

    #[test]
    fn a_whole_copy_is_reused_and_a_damaged_one_replaced() {
        let fixture = &Fixture::new("reuse");
        let dirs = dirs(fixture);
        let first = SeparateDebug::find(&fixture.binary, &fixture.build_id, &dirs).expect("found");
        let inode =
            |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).expect("copy"));
        let written = inode(&first.path);
        let again = SeparateDebug::find(&fixture.binary, &fixture.build_id, &dirs).expect("found");
        assert_eq!(again.path, first.path);
        assert_eq!(
            inode(&again.path),
            written,
            "the copy is reused, not rewritten"
        );

        let whole = fs::read(&first.path).expect("copy");
        fs::write(&first.path, &whole[..whole.len() / 2]).expect("cut");
        let replaced =
            SeparateDebug::find(&fixture.binary, &fixture.build_id, &dirs).expect("found");
        assert_eq!(fs::read(&replaced.path).expect("copy"), whole);
    }

    #[test]
    fn only_a_debug_file_with_the_binarys_build_id_is_used() {
        let fixture = &Fixture::new("build-id");
        let dirs = dirs(fixture);
        let other = "00".repeat(20);
        let misplaced = build_id_path(&fixture.debug_dirs[0], &other);
        fs::create_dir_all(misplaced.parent().expect("parent")).expect("dir");
        fs::copy(&fixture.debug, &misplaced).expect("copy");
        assert!(SeparateDebug::find(&fixture.binary, &other, &dirs).is_none());
        assert!(SeparateDebug::find(&fixture.binary, "zz", &dirs).is_none());
        assert!(
            SeparateDebug::find(&fixture.binary, "abcd", &dirs).is_none(),
            "not installed"
        );
    }

    #[test]
    fn a_binary_with_its_own_dwarf_and_an_uncompressed_debug_file_need_no_copy() {
        let fixture = &Fixture::new("no-copy");
        let dirs = dirs(fixture);
        // The unstripped fixture: blazesym reads its DWARF directly.
        let unstripped = fixture.dir.join("fixture.unstripped");
        run(Command::new("gcc")
            .args(["-g", "-O2", "-o"])
            .arg(&unstripped)
            .arg(fixture.dir.join("fixture.c")));
        assert!(SeparateDebug::find(&unstripped, &build_id_of(&unstripped), &dirs).is_none());

        // An uncompressed debug file is read where it is installed.
        let plain_dirs = DebugDirs {
            dirs: vec![fixture.dir.join("plain-debug")],
            cache: dirs.cache.clone(),
        };
        let installed = build_id_path(&plain_dirs.dirs[0], &fixture.build_id);
        fs::create_dir_all(installed.parent().expect("parent")).expect("dir");
        run(Command::new("objcopy")
            .arg("--decompress-debug-sections")
            .arg(&fixture.debug)
            .arg(&installed));
        let separate =
            SeparateDebug::find(&fixture.binary, &fixture.build_id, &plain_dirs).expect("found");
        assert_eq!(separate.path, installed);
        assert!(!dirs.cache.expect("cache").join(COPIES_DIR).exists());
    }

    #[test]
    fn no_cache_leaves_the_compressed_debug_file_to_blazesym() {
        let fixture = &Fixture::new("no-cache");
        let dirs = DebugDirs {
            dirs: fixture.debug_dirs.clone(),
            cache: None,
        };
        let separate =
            SeparateDebug::find(&fixture.binary, &fixture.build_id, &dirs).expect("found");
        assert_eq!(
            separate.path,
            build_id_path(&fixture.debug_dirs[0], &fixture.build_id)
        );
    }

    #[test]
    fn addresses_translate_through_the_binarys_segments_only() {
        let separate = SeparateDebug {
            path: PathBuf::new(),
            segments: vec![
                Segment {
                    offset: 0,
                    size: 0x1000,
                    address: 0x400000,
                },
                Segment {
                    offset: 0x1000,
                    size: 0x2000,
                    address: 0x401000,
                },
            ],
        };
        assert_eq!(separate.virtual_address(0x10), Some(0x400010));
        assert_eq!(separate.virtual_address(0x2fff), Some(0x402fff));
        assert_eq!(separate.virtual_address(0x3000), None);
    }

    /// The fixture's compressed debug file, built once for the property tests.
    fn debug_file_bytes() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            let fixture = Fixture::new("proptest");
            fs::read(&fixture.debug).expect("debug file")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Damaged debug files are refused or copied, never a panic; a copy is as long as
        /// planned.
        #[test]
        fn damaged_debug_files_never_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            header_only in any::<bool>(),
        ) {
            let mut data = debug_file_bytes().to_vec();
            let len = data.len();
            for (at, byte) in flips {
                // The ELF header or anywhere (section headers, compressed streams).
                let at = if header_only { at.index(HEADER_BYTES) } else { at.index(len) };
                data[at] ^= byte;
            }
            if let Ok(layout) = Layout::of(&data) {
                let mut out = Vec::new();
                if layout.write(&data, &mut out).is_ok() {
                    prop_assert_eq!(out.len() as u64, layout.size);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(layout) = Layout::of(&data) {
                let _ = layout.write(&data, &mut Vec::new());
            }
        }
    }
}
