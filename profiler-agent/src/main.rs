//! `profiler-agent`: the per-node agent of the profiler. See `record.rs` for `record`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use profiler_agent::{
    encode::OutputFormat,
    record::{self, RecordOptions},
};

/// eBPF CPU profiler agent: samples stacks of every CPU in the kernel, symbolizes them on the node
/// and writes pprof, folded stacks or flame graphs.
#[derive(Parser, Debug)]
#[command(name = "profiler-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Profile a command, running processes or the whole machine, and write one profile.
    ///
    /// Examples:
    ///   profiler-agent record -o cpu.svg -- ./my-program args
    ///   profiler-agent record --pid 1234 --duration 30 -o cpu.pb.gz
    ///   profiler-agent record --all --duration 10 -o host.folded
    ///
    /// Needs root, or CAP_BPF + CAP_PERFMON (plus CAP_SYS_PTRACE to read other users'
    /// processes). Recording stops at --duration, when the command or all --pid processes
    /// exit, or on Ctrl-C; the profile is written in every case.
    #[command(verbatim_doc_comment)]
    Record(RecordArgs),
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// Profile this running process (its threads, and children it starts while recorded).
    /// Repeat for several processes.
    #[arg(short, long = "pid", value_name = "PID")]
    pids: Vec<u32>,

    /// Profile every process on the machine (the idle task excluded).
    #[arg(short, long)]
    all: bool,

    /// Stop after this many seconds (fractions allowed). Default: until the command or all
    /// --pid processes exit, or Ctrl-C.
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<Duration>,

    /// Samples per second on each CPU. Each sample stands for 1/HZ s of CPU time.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 99)]
    frequency: u64,

    /// Output file. Its extension picks the format unless --format is given: .pb.gz/.pb/.pprof
    /// (pprof), .folded/.txt (folded stacks for inferno/FlameGraph), .svg (interactive flame
    /// graph).
    #[arg(short, long, value_name = "FILE", default_value = "profile.pb.gz")]
    output: PathBuf,

    /// Output format, overriding the file extension.
    #[arg(short, long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<OutputFormat>,

    /// Do not add processes started by the profiled ones to the profile.
    #[arg(long)]
    no_children: bool,

    /// No progress line while recording (the summary is still printed).
    #[arg(short, long)]
    quiet: bool,

    /// The command to start and profile, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("the duration must be positive, got {text}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_format(text: &str) -> Result<OutputFormat, String> {
    text.parse()
        .map_err(|_| format!("unknown format `{text}`: use pprof, folded or svg"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Record(args) => record::run(RecordOptions {
            pids: args.pids,
            all: args.all,
            command: args.command,
            duration: args.duration,
            frequency_hz: args.frequency,
            output: args.output,
            format: args.format,
            follow_children: !args.no_children,
            quiet: args.quiet,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
