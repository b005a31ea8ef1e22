//! The peers entry's section of BENCHMARKS.md: the description, the table of CPU, RSS and
//! agreement over repeats, perf's top functions with every tool's share, and what makes the
//! three unequal ([`notes`]). Pure but for reading the machine's settings for the notes.

use std::{collections::BTreeMap, fmt::Write as _, fs, process::Command};

use super::{
    bpftrace_program, CacheCost, PipelineRun, Setup, Tool, AGREEMENT_POINTS, BPFTRACE_MAP_KEYS,
    INFERNO_VERSION, PERF_CPU_RATIO, SAMPLE_FREQUENCY_HZ, TOP, WORKLOAD_FUNCTIONS,
};
use crate::bench::{folded::Shares, spread};

/// KiB → MiB.
pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Max over perf's top functions of |share in `other` - share in perf|, in points.
fn max_difference(perf: &Shares, other: &Shares) -> f64 {
    let top: Vec<&str> = perf.top(TOP).into_iter().map(|(f, _)| f).collect();
    max_difference_over(&top, perf, other)
}

/// Max over `functions` of |share in `other` - share in perf|, in points.
fn max_difference_over(functions: &[&str], perf: &Shares, other: &Shares) -> f64 {
    functions
        .iter()
        .map(|function| (other.percent(function) - perf.percent(function)).abs())
        .fold(0.0, f64::max)
}

/// A target a row's median is compared with.
struct Target {
    text: &'static str,
    meets: fn(f64) -> bool,
}

/// One table row, min / median / max over repeats, and whether the median meets `target`.
fn row(name: &str, values: &[f64], precision: usize, unit: &str, target: Option<Target>) -> String {
    if values.is_empty() {
        return format!(
            "| {name} | - | - | - | {} | not measured |\n",
            target.map_or("", |t| t.text)
        );
    }
    let (min, median, max) = spread(values);
    let (target, verdict) = match target {
        Some(Target { text, meets }) => (text, if meets(median) { "pass" } else { "miss" }),
        None => ("", ""),
    };
    format!(
        "| {name} | {min:.precision$}{unit} | {median:.precision$}{unit} | \
         {max:.precision$}{unit} | {target} | {verdict} |\n"
    )
}

/// How issue 6's target for this entry (our CPU below 0.1 of the perf pipeline's) was
/// reached, measured by the entry as it stood at each step.
const BEFORE_AFTER: &str = "Before/after (issue 6), our CPU / perf pipeline CPU, median of 3 \
     repeats:\n\n\
     - 628ebf8: 0.384 (our agent 0.13-0.15 s). `perf record -g` of `profiler-agent record --all \
     -d 5` (137 ms of CPU): reading /proc/kallsyms about 37 % (the kernel formats 121k lines), \
     verifying the programs 11 %, aya reading and parsing the kernel's BTF 12 %, page faults \
     17 %.\n\
     - The kernel's symbol table cached for the rest of the boot (908cde8, c48e48a): 0.224.\n\
     - aya vendored to read the kernel's BTF only for objects with CO-RE relocations (ours has \
     none), the sampler's hash loops verified once (12.6k -> 7.3k instructions), the HTTP \
     capture's maps (~17 MB of kernel memory) sized only when it runs, the cached symbol table \
     mapped rather than read (cb3e68b..85727ee): 0.135, still above 0.1. What was left was \
     libc's separate debug file (Debian's `libc6-dbg`): its DWARF is zlib-compressed (4 MB, \
     10 MB inflated), and blazesym inflated all of it at the first libc frame of every run, \
     after checking the debug link's CRC over the whole file. Profile of our agent: inflating \
     27 %, zero-filling the output buffers 15 %, the CRC 4 %. The same recordings with \
     `/usr/lib/debug` hidden took 14-22 ms against 52-56 ms.\n\
     - Separate debug files found by build id, and one with compressed DWARF inflated once into \
     the agent's cache, which later runs map (`profiler-agent/src/debug_file.rs`): the rows \
     below. A 5 s recording with the cache went from 0.046 to 0.017 s; the first run of a boot, \
     which writes the copy, costs what it did (0.11-0.13 s). Peak RSS 27.3 -> 20.8 MiB: the \
     inflated sections are pages of a mapped file now, and only the pages read count, instead \
     of 10 MB of heap.\n\n";

/// Writes the section from every repeat's runs; tools in `unavailable` did not run (or failed),
/// and the section says why.
pub(super) fn render(
    setup: &Setup,
    repeats: usize,
    repeat_runs: &[BTreeMap<Tool, PipelineRun>],
    cache_cost: &CacheCost,
    unavailable: &BTreeMap<Tool, String>,
) -> String {
    let seconds = setup.seconds;
    let runs = |tool: Tool| repeat_runs.iter().filter_map(move |r| r.get(&tool));
    let values = |tool: Tool, f: &dyn Fn(&PipelineRun) -> Option<f64>| -> Vec<f64> {
        runs(tool).filter_map(f).collect()
    };
    let step_cpu = |tool: Tool, name: &'static str| {
        values(tool, &move |r| r.step(name).map(|s| s.cpu.as_secs_f64()))
    };
    let step_rss = |tool: Tool, name: &'static str| {
        values(tool, &move |r| r.step(name).map(|s| mib(s.peak_rss_kib)))
    };
    // Per repeat, comparisons between tools that both ran in it.
    let paired = |a: Tool, b: Tool, f: &dyn Fn(&PipelineRun, &PipelineRun) -> f64| -> Vec<f64> {
        repeat_runs
            .iter()
            .filter_map(|r| Some(f(r.get(&a)?, r.get(&b)?)))
            .collect()
    };
    let cpu_ratio =
        |a: &PipelineRun, b: &PipelineRun| a.cpu().as_secs_f64() / b.cpu().as_secs_f64();

    let mut section = format!(
        "{BEFORE_AFTER}burn3 (`tests/fixtures/burn3.c`, built with `gcc -O2 -fno-omit-frame-pointer` like \
         entry 1's fixture) burns CPU in `burn_alpha`, `burn_beta` and `burn_gamma` in the ratio \
         1:2:3 while one tool at a time profiles the whole machine at {SAMPLE_FREQUENCY_HZ} Hz \
         for {seconds} s, {repeats} repeats, the order of the three rotating from one repeat to \
         the next. burn3 starts 0.2 s before each tool and runs until the tool's folded-stack \
         file is written. The three pipelines:\n\n\
         - ours: `profiler-agent record --all -F {SAMPLE_FREQUENCY_HZ} -d {seconds} -o \
         ours.folded` (it symbolizes and writes folded stacks itself);\n\
         - perf: `perf record -F {SAMPLE_FREQUENCY_HZ} -a -g -o perf.data -- sleep {seconds}`, \
         then `perf script -i perf.data | inferno-collapse-perf --kernel` (inferno \
         {INFERNO_VERSION}, the workspace's version, installed with `cargo install` into the \
         tools cache: a release build with its defaults, one thread per core);\n\
         - bpftrace: `bpftrace -e '{}'` (the `interval` probe ends it after {seconds} s), whose \
         map, printed at exit, xtask converts into folded stacks (stripping `+offset`).\n\n\
         CPU is user + system time of every process of a pipeline, from wait4's rusage (which \
         includes the children a process waited for, like perf's `sleep`). bpftrace's \
         conversion runs in xtask (a debug build): its CPU is the xtask thread's \
         (`getrusage(RUSAGE_THREAD)` around the call) and is added to bpftrace's; it is \
         negligible. Peak RSS is each process's `ru_maxrss` (for the conversion, xtask's \
         `VmHWM` over the call after resetting it). A pipeline's peak is the most it holds at \
         once: perf's is the larger of perf record and perf script + inferno-collapse-perf \
         (those two run together).\n\n\
         Our agent keeps a cache (`PROFILER_CACHE`, here a directory of the benchmark's, \
         `/run/profiler-agent` by default): the kernel's symbol table, keyed by the boot and the \
         loaded modules, so only a boot's first run reads `/proc/kallsyms` (30-40 ms of the \
         kernel's formatting); and decompressed copies of separate debug files whose DWARF is \
         compressed (here libc's, from Debian's `libc6-dbg`: 4 MB of zlib streams, 10 MB \
         inflated), so only the first run inflates them. The cache is filled before the \
         repeats, so our rows are those of every run but the first of a boot; the two indented \
         rows measure the difference on short recordings of the same workload, once per \
         repeat.\n\n\
         Agreement: for each tool, the share of burn3's samples (folded lines whose first frame, \
         the comm, is `burn3`) whose stack contains each function, counted once per stack; \
         frames a tool could not resolve are left out (each tool names them differently) and \
         symbol versions dropped (`@@GLIBC_2.17`). Each of perf's top {TOP} functions is looked \
         up in our profile and in bpftrace's; the row gives the largest difference in \
         percentage points in each repeat. The rows for burn3's own functions (`main`, \
         `burn_alpha`, `burn_beta`, `burn_gamma`) leave out libc and the kernel, where the \
         tools' naming differs (below). Targets, reported and never enforced: our whole \
         pipeline below {PERF_CPU_RATIO} of the perf pipeline's CPU and below bpftrace's; each \
         of perf's top {TOP} within {AGREEMENT_POINTS} points in ours. A result compares the \
         median with the target.\n\n\
         Command: `cargo xtask bench --peers-seconds {seconds} --repeats {repeats}`\n\n",
        bpftrace_program(seconds)
    );
    for (tool, reason) in unavailable {
        let _ = writeln!(
            section,
            "**{} did not run here**, so its rows are empty: {}\n",
            tool.name(),
            reason.replace('\n', " ")
        );
    }
    section += "| measure | min | median | max | target | result |\n|---|---|---|---|---|---|\n";
    let cpu = |tool: Tool| values(tool, &|r| Some(r.cpu().as_secs_f64()));
    let rss = |tool: Tool| values(tool, &|r| Some(mib(r.peak_rss_kib)));
    section += &row("our agent, CPU", &cpu(Tool::Ours), 2, " s", None);
    section += &row(
        &format!(
            "- our agent, CPU of a {} s recording without its cache (a boot's first run)",
            cache_cost.seconds
        ),
        &cache_cost.cold,
        3,
        " s",
        None,
    );
    section += &row(
        &format!(
            "- our agent, CPU of a {} s recording with it",
            cache_cost.seconds
        ),
        &cache_cost.warm,
        3,
        " s",
        None,
    );
    section += &row(
        "perf pipeline, CPU (record + script + inferno-collapse-perf)",
        &cpu(Tool::Perf),
        2,
        " s",
        None,
    );
    section += &row(
        "- perf record",
        &step_cpu(Tool::Perf, "perf record"),
        2,
        " s",
        None,
    );
    section += &row(
        "- perf script",
        &step_cpu(Tool::Perf, "perf script"),
        2,
        " s",
        None,
    );
    section += &row(
        "- inferno-collapse-perf",
        &step_cpu(Tool::Perf, "inferno-collapse-perf"),
        2,
        " s",
        None,
    );
    section += &row(
        "bpftrace, CPU (bpftrace + conversion)",
        &cpu(Tool::Bpftrace),
        2,
        " s",
        None,
    );
    section += &row(
        "- conversion to folded (in xtask)",
        &step_cpu(Tool::Bpftrace, "conversion to folded (in xtask)"),
        3,
        " s",
        None,
    );
    section += &row(
        "our CPU / perf pipeline CPU",
        &paired(Tool::Ours, Tool::Perf, &cpu_ratio),
        3,
        "",
        Some(Target {
            text: "< 0.1",
            meets: |v| v < PERF_CPU_RATIO,
        }),
    );
    section += &row(
        "our CPU / bpftrace CPU",
        &paired(Tool::Ours, Tool::Bpftrace, &cpu_ratio),
        3,
        "",
        Some(Target {
            text: "< 1",
            meets: |v| v < 1.0,
        }),
    );
    section += &row("our agent, peak RSS", &rss(Tool::Ours), 1, " MiB", None);
    section += &row(
        "perf pipeline, peak RSS (most held at once)",
        &rss(Tool::Perf),
        1,
        " MiB",
        None,
    );
    section += &row(
        "- perf record",
        &step_rss(Tool::Perf, "perf record"),
        1,
        " MiB",
        None,
    );
    section += &row(
        "- perf script",
        &step_rss(Tool::Perf, "perf script"),
        1,
        " MiB",
        None,
    );
    section += &row(
        "- inferno-collapse-perf",
        &step_rss(Tool::Perf, "inferno-collapse-perf"),
        1,
        " MiB",
        None,
    );
    section += &row("bpftrace, peak RSS", &rss(Tool::Bpftrace), 1, " MiB", None);
    for tool in Tool::ALL {
        section += &row(
            &format!("{}, wall time from start to folded file", tool.name()),
            &values(tool, &|r| Some(r.wall.as_secs_f64())),
            1,
            " s",
            None,
        );
    }
    for tool in Tool::ALL {
        section += &row(
            &format!("{}, samples of burn3", tool.name()),
            &values(tool, &|r| Some(r.samples as f64)),
            0,
            "",
            None,
        );
    }
    for tool in Tool::ALL {
        section += &row(
            &format!("{}, user frames resolved (all processes)", tool.name()),
            &values(tool, &|r| r.frames.user.percent()),
            1,
            " %",
            None,
        );
        section += &row(
            &format!("{}, kernel frames resolved (all processes)", tool.name()),
            &values(tool, &|r| r.frames.kernel.percent()),
            1,
            " %",
            None,
        );
    }
    let difference = |a: &PipelineRun, perf: &PipelineRun| max_difference(&perf.shares, &a.shares);
    section += &row(
        &format!("top {TOP} vs perf: our largest difference"),
        &paired(Tool::Ours, Tool::Perf, &difference),
        2,
        " points",
        Some(Target {
            text: "<= 2 points",
            meets: |v| v <= AGREEMENT_POINTS,
        }),
    );
    section += &row(
        &format!("top {TOP} vs perf: bpftrace's largest difference"),
        &paired(Tool::Bpftrace, Tool::Perf, &difference),
        2,
        " points",
        Some(Target {
            text: "<= 2 points",
            meets: |v| v <= AGREEMENT_POINTS,
        }),
    );
    let own = |a: &PipelineRun, perf: &PipelineRun| {
        max_difference_over(&WORKLOAD_FUNCTIONS, &perf.shares, &a.shares)
    };
    section += &row(
        "burn3's own functions vs perf: our largest difference",
        &paired(Tool::Ours, Tool::Perf, &own),
        2,
        " points",
        None,
    );
    section += &row(
        "burn3's own functions vs perf: bpftrace's largest difference",
        &paired(Tool::Bpftrace, Tool::Perf, &own),
        2,
        " points",
        None,
    );

    // The functions themselves, with the samples of all repeats pooled.
    let pooled = |tool: Tool| {
        let mut shares = Shares::default();
        runs(tool).for_each(|r| shares.add(&r.shares));
        shares
    };
    let (ours, perf, bpftrace) = (
        pooled(Tool::Ours),
        pooled(Tool::Perf),
        pooled(Tool::Bpftrace),
    );
    let samples = |tool: Tool| runs(tool).map(|r| r.samples).sum::<u64>();
    if perf.samples > 0 {
        let _ = write!(
            section,
            "\nperf's top {TOP} functions of burn3 by inclusive share, samples of every repeat \
             pooled ({} perf, {} ours, {} bpftrace):\n\n\
             | function | perf | ours | ours - perf | bpftrace | bpftrace - perf |\n\
             |---|---|---|---|---|---|\n",
            samples(Tool::Perf),
            samples(Tool::Ours),
            samples(Tool::Bpftrace)
        );
        let column = |shares: &Shares, function: &str| {
            if shares.samples == 0 {
                ("-".to_string(), "-".to_string())
            } else {
                let share = shares.percent(function);
                (
                    format!("{share:.1} %"),
                    format!("{:+.1}", share - perf.percent(function)),
                )
            }
        };
        for (function, _) in perf.top(TOP) {
            let (ours_share, ours_diff) = column(&ours, function);
            let (bpftrace_share, bpftrace_diff) = column(&bpftrace, function);
            let _ = writeln!(
                section,
                "| `{function}` | {:.1} % | {ours_share} | {ours_diff} | {bpftrace_share} | \
                 {bpftrace_diff} |",
                perf.percent(function)
            );
        }
        let perf_top: Vec<&str> = perf.top(TOP).into_iter().map(|(f, _)| f).collect();
        for (tool, shares) in [(Tool::Ours, &ours), (Tool::Bpftrace, &bpftrace)] {
            let extra: Vec<String> = shares
                .top(TOP)
                .into_iter()
                .filter(|(f, _)| !perf_top.contains(f))
                .map(|(f, _)| {
                    format!(
                        "`{f}` ({:.1} %, perf {:.1} %)",
                        shares.percent(f),
                        perf.percent(f)
                    )
                })
                .collect();
            if !extra.is_empty() {
                let _ = write!(
                    section,
                    "\nIn {}'s top {TOP} but not perf's: {}.\n",
                    tool.name(),
                    extra.join(", ")
                );
            }
        }
    }

    section += &notes(setup, repeat_runs);
    section
}

/// What makes the three unequal, with what this machine says where it can be read.
fn notes(setup: &Setup, repeat_runs: &[BTreeMap<Tool, PipelineRun>]) -> String {
    // perf picks its default event by what the machine has: cycles with a hardware PMU,
    // cpu-clock (what ours and bpftrace's `profile` use) without.
    let perf_event = Command::new("perf")
        .args(["evlist", "-i"])
        .arg(setup.dir.join("perf.data"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace('\n', ", ")
        })
        .unwrap_or_else(|| "unknown (perf did not run)".to_string());
    let kptr_restrict = fs::read_to_string("/proc/sys/kernel/kptr_restrict")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unreadable".to_string());
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "not exposed".to_string());
    let version = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "not installed".to_string())
    };
    let bpftrace_full = repeat_runs
        .iter()
        .filter_map(|r| r.get(&Tool::Bpftrace)?.map_entries)
        .filter(|&entries| entries >= BPFTRACE_MAP_KEYS)
        .count();
    let bpftrace_entries = repeat_runs
        .iter()
        .filter_map(|r| r.get(&Tool::Bpftrace)?.map_entries)
        .max()
        .unwrap_or(0);
    // Which tools named a vDSO function in burn3's stacks, and which did not.
    let (named, unnamed): (Vec<Tool>, Vec<Tool>) = Tool::ALL
        .into_iter()
        .filter(|tool| repeat_runs.iter().any(|r| r.contains_key(tool)))
        .partition(|tool| {
            repeat_runs
                .iter()
                .filter_map(|r| r.get(tool))
                .any(|r| r.shares.inclusive.keys().any(|f| f.contains("vdso")))
        });
    let names = |tools: &[Tool]| {
        tools
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let vdso = match (named.is_empty(), unnamed.is_empty()) {
        (false, false) => format!(
            "{} named its functions, {} did not",
            names(&named),
            names(&unnamed)
        ),
        (false, true) => "every tool named its functions".to_string(),
        (true, _) => "no tool named its functions".to_string(),
    };
    let xtask_rss_mib = repeat_runs
        .iter()
        .flat_map(|r| r.values())
        .map(|r| mib(r.xtask_rss_kib))
        .fold(0.0, f64::max);
    let bpftrace_lost = if bpftrace_full > 0 {
        format!(
            ", full in {bpftrace_full} repeats: stacks beyond it were lost, and the agreement \
             rows include that"
        )
    } else {
        ", so no stack was lost".to_string()
    };
    format!(
        "\nWhat differs between the three ({}; {}):\n\n\
         - Sampling: ours and bpftrace's `profile` open the cpu-clock software event at \
         {SAMPLE_FREQUENCY_HZ} Hz on every CPU; `perf record` without `-e` opens its default \
         event, here `{perf_event}` (where the machine has a hardware PMU that is cycles, and \
         halted idle CPUs then give perf fewer samples). inferno-collapse-perf counts each \
         sample's period, so perf's shares are weighted by period as in `perf report` (equal \
         to counting samples with cpu-clock's fixed period); the sample rows count perf's \
         samples with `perf script -F comm`, outside the measured pipeline. All three walk \
         frame pointers in the kernel. The kernel's work for each sample (the interrupt, \
         copying the stack, our and bpftrace's eBPF programs) is charged to the interrupted \
         task, not to the tool, so no tool's CPU here includes it; entry 1 shows ours as the \
         workload's throughput.\n\
         - Kernel symbols: no vmlinux or kernel debug info here, so all three name kernel \
         frames from `/proc/kallsyms` (kptr_restrict = {kptr_restrict}, xtask runs as root; \
         lockdown: {lockdown}). None of them needs kprobes, which this kernel lacks. The \
         \"kernel frames resolved\" rows show that each got the addresses.\n\
         - User symbols: burn3 has no debug info (built like entry 1's fixture, without `-g`), \
         so every tool names its functions from the ELF symbol table. perf reads the binaries \
         after recording with the mappings perf.data holds; ours reads each process's mappings \
         while recording and the binaries at the end; bpftrace resolves addresses when it \
         prints its map at exit, from the live processes, so frames of processes that exited \
         during the window stay hex addresses (the \"user frames resolved\" rows, over every \
         process on the machine). burn3 runs until each tool is done, so its frames resolve in \
         all three. libc has no frame pointers, so the function that called into libc drops \
         out of those stacks in all three alike.\n\
         - Names: where several symbols share an address each tool may pick another (with \
         Debian 12's libc, `clock_gettime` is `clock_gettime@@GLIBC_2.17` to perf, \
         `__clock_gettime` to bpftrace, `__GI___clock_gettime` to ours, which also adds \
         inlined functions as frames from DWARF where a library has it); inferno marks \
         `[vdso]` frames `_[k]` and strips C++ argument lists. Such frames count as different \
         functions here. The vDSO (burn3 reads its CPU clock through `clock_gettime`, which \
         enters the kernel from the vDSO): {vdso}. burn3's own functions are plain C \
         symbols.\n\
         - Idle: our agent leaves out the idle task; perf and bpftrace sample idle CPUs \
         (`swapper`) too. That changes their totals, not burn3's shares.\n\
         - perf's CPU includes what its defaults do besides sampling: synthesizing the mappings \
         of every running process at start and reading build ids at the end.\n\
         - bpftrace's CPU includes compiling its program with LLVM at start. Its map holds at \
         most {BPFTRACE_MAP_KEYS} distinct stacks by default (`BPFTRACE_MAP_KEYS_MAX`); the \
         most it held here was {bpftrace_entries}{bpftrace_lost}.\n\
         - Peak RSS: a child's `ru_maxrss` starts from the RSS of the process that spawned it \
         (Rust's `Command` uses vfork, so the child runs in xtask's memory until exec), so \
         xtask resets its own peak right before each spawn; xtask held at most \
         {xtask_rss_mib:.1} MiB then, the floor under every peak above.\n\
         - Every tool profiles the whole machine, so whatever else runs costs each tool \
         symbolization too; the rotation spreads that over the three.\n",
        version("perf"),
        version("bpftrace"),
    )
}
