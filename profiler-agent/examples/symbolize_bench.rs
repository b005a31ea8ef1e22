//! Measures the agent's symbolization on one large ELF binary with DWARF: frames per second with
//! a cold symbolizer, with a warm one (the agent's cache), and with the binary's parsed debug
//! info warm but addresses not seen before; and the process's peak RSS. Entry 6 of
//! `cargo xtask bench` (`xtask/src/bench/symbolize.rs`) runs it and compares with addr2line.
//! Alone: `cargo run --release -p profiler-agent --example symbolize_bench -- --binary BIN
//! --addresses 4000 --out DIR`.
//!
//! What is timed is the agent's own path, [`Symbolizer::symbolize`] over a [`Collector`], in the
//! order the continuous agent (`agent.rs`) calls it: one collector and one symbolizer for the
//! whole run, and the collector's samples cleared between windows while its processes and open
//! files stay. Each pass times the whole call: normalizing addresses to file offsets with the
//! captured mappings, one blazesym batch per file with code info, inlined functions and
//! demangling, the cache, and building the [`Profile`].
//!
//! The collector is filled by hand, with the types the eBPF side hands it, rather than from a
//! recording: a recording of the binary would hit a few hundred addresses of its hot code,
//! while throughput over thousands of addresses spread over the whole binary, compared one by
//! one with addr2line, needs chosen addresses. So a [`MappingEvent::Mmap`] maps the whole file
//! (offset 0) into a pid above `PID_MAX_LIMIT`, which no process can have (so `/proc` never
//! replaces the mapping), and one [`Drained`] holds the stacks: 16 frames each, the callers
//! stored as return addresses (one past the chosen address: the symbolizer looks up the byte
//! before, as it does for real stacks). The collector opens the file as it does for a process
//! that exited, and reads it through `/proc/self/fd/N` like every file the agent symbolizes.
//!
//! The addresses: every function of the ELF symbol table (sorted, aliases dropped), 2N of them
//! evenly spread, each with a fixed pseudo-random offset inside the function, so the leaf is
//! anywhere in its body as a sampled instruction pointer is. Even ones form the first set (the
//! cold and warm passes), odd ones the second (the "new addresses" pass).
//!
//! Written to `--out`: `cold.txt` and `new.txt` (the two sets as link-time addresses, `0x..`
//! one per line, what `addr2line -e BIN` reads), and `ours.tsv` (each address of both sets,
//! a tab, the innermost function the agent named, or nothing when it named none). Printed on
//! stdout: one `key value` line per measure (see [`Report`]).

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    ops::ControlFlow,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use blazesym::{
    inspect::{
        source::{Elf, Source},
        Inspector,
    },
    SymType,
};
use clap::Parser;
use profiler_agent::{
    collect::Collector,
    ebpf::{Drained, MappingEvent},
    profile::Profile,
    symbolize::Symbolizer,
};
use profiler_common::{stack_error, SampleKey, COMM_LEN};

/// Frames per stack: a typical depth, so the profile built in each pass has the usual shape.
const FRAMES_PER_STACK: usize = 16;
/// The pid the samples belong to: above the kernel's `PID_MAX_LIMIT` (2^22), so no process has
/// it and the collector keeps the mapping the event gave instead of reading `/proc`.
const PID: u32 = 1 << 30;
/// Where the binary is mapped in that process (page aligned, like a PIE's load address).
const LOAD_ADDRESS: u64 = 0x5555_0000_0000;

#[derive(Parser)]
#[command(about = "Frames per second of the agent's symbolizer on one ELF binary with DWARF")]
struct Args {
    /// The ELF binary to symbolize (with DWARF, or the comparison with addr2line means little).
    #[arg(long)]
    binary: PathBuf,
    /// Addresses in each of the two sets.
    #[arg(long, default_value_t = 4000)]
    addresses: usize,
    /// Directory for the address lists and the names the agent gave them.
    #[arg(long)]
    out: PathBuf,
}

/// A function of the ELF symbol table.
#[derive(Clone, Copy)]
struct Function {
    /// Link-time address, as `nm` and addr2line see it.
    vaddr: u64,
    size: u64,
    file_offset: u64,
}

/// One chosen address.
#[derive(Clone, Copy)]
struct Address {
    /// Link-time address (for addr2line).
    vaddr: u64,
    /// Address in the pretend process: [`LOAD_ADDRESS`] + file offset.
    runtime: u64,
}

/// What one pass measured.
struct Pass {
    duration: Duration,
    /// Distinct frames the profile holds (each chosen address once).
    frames: u64,
    /// Frames the symbolizer resolved to a function.
    symbolized: u64,
    /// Innermost function per runtime address, `None` when unresolved.
    names: HashMap<u64, Option<String>>,
    /// Frames whose location holds inlined functions.
    inlined: u64,
}

/// What the program prints, one `key value` line each.
struct Report {
    /// Functions in the symbol table (after dropping aliases).
    functions: usize,
    /// Addresses per set (fewer than asked when the binary has too few functions).
    addresses: usize,
    cold: Pass,
    warm: Pass,
    new: Pass,
    /// RSS right before the first pass, the floor of the peak.
    rss_before_kib: u64,
    /// Peak RSS over the three passes (VmHWM, reset right before the first).
    peak_rss_kib: u64,
    /// RSS after the passes: heap and other anonymous memory (RssAnon) ...
    rss_anon_kib: u64,
    /// ... and pages of mapped files (RssFile), mostly the binary blazesym reads.
    rss_file_kib: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let functions = functions(&args.binary)?;
    let (cold_set, new_set) = choose(&functions, args.addresses);
    ensure!(
        !cold_set.is_empty() && !new_set.is_empty(),
        "{} has {} functions in its symbol table: too few to choose two sets of addresses",
        args.binary.display(),
        functions.len()
    );
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    write_addresses(&args.out.join("cold.txt"), &cold_set)?;
    write_addresses(&args.out.join("new.txt"), &new_set)?;

    let binary = fs::canonicalize(&args.binary)
        .with_context(|| format!("resolving {}", args.binary.display()))?;
    let file_bytes = fs::metadata(&binary)
        .with_context(|| format!("reading the size of {}", binary.display()))?
        .len();
    let mut collector = Collector::default();
    collector.processes.apply(&[MappingEvent::Mmap {
        pid: PID,
        start: LOAD_ADDRESS,
        len: file_bytes.next_multiple_of(4096),
        file_offset: 0,
        path: binary.to_string_lossy().into_owned(),
    }]);
    let mut symbolizer = Symbolizer::new();

    collector.absorb(drained(&cold_set));
    ensure!(
        collector.processes.open_file_count() == 1,
        "the collector could not open {}",
        binary.display()
    );
    let rss_before_kib = status_kib("VmRSS")?;
    // Writing 5 resets the peak RSS (VmHWM) to the current RSS (proc(5)): what the symbol table
    // scan above touched does not count.
    fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM in /proc/self/clear_refs")?;
    let cold = pass(&mut symbolizer, &collector)?;
    ensure!(
        cold.frames == cold_set.len() as u64,
        "the profile holds {} frames, not the {} addresses chosen",
        cold.frames,
        cold_set.len()
    );
    let warm = pass(&mut symbolizer, &collector)?;
    ensure!(
        warm.names == cold.names,
        "the second pass over the same addresses named them differently"
    );
    // A new window, as `Profiler::take_profile` starts it: samples go, processes and files stay.
    collector.samples.clear();
    collector.absorb(drained(&new_set));
    let new = pass(&mut symbolizer, &collector)?;
    let peak_rss_kib = status_kib("VmHWM")?;
    let rss_anon_kib = status_kib("RssAnon")?;
    let rss_file_kib = status_kib("RssFile")?;

    let mut names = String::new();
    for (address, pass) in [(&cold_set, &cold), (&new_set, &new)]
        .into_iter()
        .flat_map(|(set, pass)| set.iter().map(move |a| (a, pass)))
    {
        let name = pass.names.get(&address.runtime).cloned().flatten();
        let _ = writeln!(names, "{:#x}\t{}", address.vaddr, name.unwrap_or_default());
    }
    let names_path = args.out.join("ours.tsv");
    fs::write(&names_path, names).with_context(|| format!("writing {}", names_path.display()))?;

    print!(
        "{}",
        Report {
            functions: functions.len(),
            addresses: cold_set.len(),
            cold,
            warm,
            new,
            rss_before_kib,
            peak_rss_kib,
            rss_anon_kib,
            rss_file_kib,
        }
    );
    Ok(())
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "functions {}", self.functions)?;
        writeln!(f, "addresses {}", self.addresses)?;
        for (name, pass) in [
            ("cold", &self.cold),
            ("warm", &self.warm),
            ("new", &self.new),
        ] {
            writeln!(f, "{name}_seconds {:.6}", pass.duration.as_secs_f64())?;
            writeln!(f, "{name}_frames {}", pass.frames)?;
            writeln!(f, "{name}_symbolized {}", pass.symbolized)?;
            writeln!(f, "{name}_inlined {}", pass.inlined)?;
        }
        writeln!(f, "rss_before_kib {}", self.rss_before_kib)?;
        writeln!(f, "peak_rss_kib {}", self.peak_rss_kib)?;
        writeln!(f, "rss_anon_kib {}", self.rss_anon_kib)?;
        writeln!(f, "rss_file_kib {}", self.rss_file_kib)
    }
}

/// Every function of `binary`'s ELF symbol table with a size and a file offset, sorted by
/// address, aliases (several names at one address) dropped.
fn functions(binary: &Path) -> Result<Vec<Function>> {
    let inspector = Inspector::new();
    let source = Source::Elf(Elf {
        // The symbol table only: the functions a profiler's addresses fall in.
        debug_syms: false,
        ..Elf::new(binary)
    });
    let mut functions = Vec::new();
    inspector
        .for_each(&source, |sym| {
            if let (SymType::Function, Some(size @ 1..), Some(file_offset)) =
                (sym.sym_type, sym.size, sym.file_offset)
            {
                functions.push(Function {
                    vaddr: sym.addr,
                    size: size as u64,
                    file_offset,
                });
            }
            ControlFlow::Continue(())
        })
        .with_context(|| format!("reading the symbol table of {}", binary.display()))?;
    functions.sort_by_key(|f| f.vaddr);
    functions.dedup_by_key(|f| f.vaddr);
    Ok(functions)
}

/// Two disjoint sets of up to `n` addresses each, spread evenly over `functions`, alternating.
fn choose(functions: &[Function], n: usize) -> (Vec<Address>, Vec<Address>) {
    let total = (2 * n).min(functions.len() / 2 * 2);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..total {
        let index = i * functions.len() / total;
        let function = functions[index];
        // A fixed pseudo-random point inside the function's body.
        let delta = splitmix64(index as u64) % function.size;
        let address = Address {
            vaddr: function.vaddr + delta,
            runtime: LOAD_ADDRESS + function.file_offset + delta,
        };
        if i % 2 == 0 {
            first.push(address);
        } else {
            second.push(address);
        }
    }
    (first, second)
}

/// SplitMix64's output function: a well-mixed, deterministic 64-bit value per input.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The kernel side's hand-over for `addresses`: stacks of [`FRAMES_PER_STACK`] frames, callers
/// as return addresses, one sample (its own thread) per stack.
fn drained(addresses: &[Address]) -> Drained {
    let mut counts = Vec::new();
    let mut stacks = HashMap::new();
    for (index, chunk) in addresses.chunks(FRAMES_PER_STACK).enumerate() {
        let id = index as u64 + 1;
        let frames = chunk
            .iter()
            .enumerate()
            .map(|(depth, a)| if depth == 0 { a.runtime } else { a.runtime + 1 })
            .collect();
        stacks.insert(id, frames);
        let mut comm = [0u8; COMM_LEN];
        comm[..5].copy_from_slice(b"bench");
        let key = SampleKey {
            pid: PID,
            tid: PID + id as u32,
            user_stack_id: id,
            kernel_stack_id: 0,
            user_stack_error: 0,
            kernel_stack_error: stack_error::NONE,
            comm,
            trace_id: [0; 16],
            span_id: [0; 8],
            time_ns: 0,
        };
        counts.push((key, 1));
    }
    Drained {
        counts,
        stacks,
        read_errors: 0,
    }
}

/// Symbolizes the collector's samples once, timing the whole call.
fn pass(symbolizer: &mut Symbolizer, collector: &Collector) -> Result<Pass> {
    let started = Instant::now();
    let (profile, stats) = symbolizer.symbolize(collector, 0, 0, 1);
    let duration = started.elapsed();
    let (names, inlined) = innermost_names(&profile)?;
    Ok(Pass {
        duration,
        frames: stats.frames,
        symbolized: stats.symbolized,
        names,
        inlined,
    })
}

/// The innermost function of every frame, keyed by the address looked up (the leaf's own, a
/// caller's return address minus one), and how many frames had inlined functions.
fn innermost_names(profile: &Profile) -> Result<(HashMap<u64, Option<String>>, u64)> {
    let mut names = HashMap::new();
    let mut inlined = 0;
    for sample in &profile.samples {
        for (depth, &id) in sample.stack.iter().enumerate() {
            let location = &profile.locations[id];
            let address = if depth == 0 {
                location.address
            } else {
                location.address - 1
            };
            let Some(line) = location.lines.first() else {
                bail!("location {address:#x} has no lines");
            };
            // An unresolved frame is named after its mapping (`[unknown] (BIN)`).
            let name = (!line
                .function
                .starts_with(profiler_agent::profile::UNKNOWN_FUNCTION))
            .then(|| line.function.clone());
            if location.lines.len() > 1 {
                inlined += 1;
            }
            names.insert(address, name);
        }
    }
    Ok((names, inlined))
}

/// Writes link-time addresses one per line, as addr2line reads them on stdin.
fn write_addresses(path: &Path, addresses: &[Address]) -> Result<()> {
    let mut text = String::new();
    for address in addresses {
        let _ = writeln!(text, "{:#x}", address.vaddr);
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}
