//! `profiler-agent`: the per-node agent of the profiler. See `record.rs` for `record`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use profiler_agent::{
    encode::OutputFormat,
    metadata::kube_api::{self, KubeApiMode},
    record::{self, RecordOptions},
    run::{self, HttpOptions, KubeOptions, RunOptions},
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
    /// exit, or on Ctrl-C/SIGTERM; the profile is written in every case. A command still
    /// running then gets SIGTERM (SIGKILL 5 s later). With a command, the agent exits with
    /// the command's exit code (128 + signal if it was killed).
    #[command(verbatim_doc_comment)]
    Record(RecordArgs),
    /// Profile continuously and upload one pprof per service every interval to the server.
    ///
    /// Example:
    ///   profiler-agent run --server http://127.0.0.1:4040
    ///
    /// Samples every process (or the --pid ones) at a low frequency, symbolizes on this node,
    /// and sends each service's profile (service = process name, or --service-name) to
    /// POST /api/v1/profiles. When the server is unreachable, profiles wait in a bounded queue
    /// (oldest dropped and counted when full) and are retried with backoff. A status line is
    /// logged every minute. Stops on SIGINT/SIGTERM after sending what is queued.
    #[command(verbatim_doc_comment)]
    // Boxed: RunArgs is much larger than RecordArgs.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The profiler server: http://HOST[:PORT][/PREFIX], or https:// to upload over TLS (the
    /// server's certificate is checked against the system's CAs, or --server-ca).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4040")]
    server: String,

    /// PEM file of the CA certificates to trust for an https:// --server, instead of the
    /// system's bundle (SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE")]
    server_ca: Option<PathBuf>,

    /// Bearer token the server requires (see profiler-server --auth-token).
    #[arg(long, env = "PROFILER_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,

    /// Profile only this process (and children it starts); repeat for several. Default: all.
    #[arg(short, long = "pid", value_name = "PID")]
    pids: Vec<u32>,

    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 19)]
    frequency: u64,

    /// Seconds between uploads (each upload covers that window).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    upload_interval: Duration,

    /// Service name for every profile, span and metric, instead of each process's own: in
    /// Kubernetes the pod's resource.opentelemetry.io/service.name annotation or well-known
    /// label (see --kube-label-service-names), else its workload's (else pod's, else
    /// container's) name; on the host its process name.
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,

    /// Extra label on every profile, KEY=VALUE; repeatable (host_name is added by default).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// Most bytes of profiles waiting for the server; the oldest are dropped past it.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    max_queue_bytes: usize,

    /// Do not add processes started by the --pid ones.
    #[arg(long)]
    no_children: bool,

    /// Do not capture HTTP requests (no spans, no RED metrics, no span labels on samples). The
    /// capture hooks every process's read/write-family syscalls, sockets or not: each pays
    /// about 0.7 us more while it is on (README, "HTTP capture").
    #[arg(long)]
    no_http: bool,

    /// OTLP/gRPC receiver for spans and RED metrics: http://HOST:PORT, or https:// for TLS.
    /// Default: the --server host on port 4317 over plain gRPC (the profiler server's OTLP
    /// port); any OpenTelemetry Collector works.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// PEM file of the CA certificates to trust for an https:// --otlp-endpoint, instead of
    /// the system's bundle (SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE")]
    otlp_ca: Option<PathBuf>,

    /// Seconds between two exports of the RED histograms (delta temporality).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    metrics_interval: Duration,

    /// Most distinct attribute sets (routes x methods x statuses) per service and metric; the
    /// rest is counted in one series marked `otel.metric.overflow=true`.
    #[arg(long, value_name = "N", default_value_t = 500)]
    max_series_per_service: usize,

    /// Most spans waiting for the OTLP receiver; the oldest are dropped (and counted) past it.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    max_queued_spans: usize,

    /// Serve the agent's own metrics (Prometheus text on /metrics) and its health (/healthz:
    /// the main loop runs; /readyz: the sampler is attached) on ADDR; `off` to serve nothing.
    /// Kubernetes probes need a reachable address such as 0.0.0.0:9464.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = parse_listen)]
    telemetry_listen: Listen,

    /// Where pod owners (the workload) and service names come from: `auto` asks the cluster's
    /// API server with the pod's service account when running in a pod (KUBERNETES_SERVICE_HOST
    /// is set), `off` never asks it, an https://HOST[:PORT] URL asks that API server. It lists
    /// the pods of this node (NODE_NAME) and needs `list` on pods (deploy/kubernetes/
    /// 10-agent-rbac.yaml). Without it, names come from the kubelet's log directories only.
    #[arg(long, value_name = "auto|off|URL", default_value = "auto")]
    kube_api: KubeApiMode,

    /// Directory with the service account's `token` and `ca.crt` for --kube-api (the token is
    /// re-read for every request: the kubelet rotates it).
    #[arg(long, value_name = "DIR", default_value = kube_api::SERVICE_ACCOUNT_DIR)]
    kube_credentials: PathBuf,

    /// Let the well-known pod labels app.kubernetes.io/instance, then app.kubernetes.io/name,
    /// name a pod's service when its resource.opentelemetry.io/service.name annotation does not
    /// (OpenTelemetry's order). `false`: the annotation, else the workload's name.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    kube_label_service_names: bool,
}

/// `--telemetry-listen`: an address, or `off`.
#[derive(Clone, Debug)]
struct Listen(Option<std::net::SocketAddr>);

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen(None));
    }
    text.parse()
        .map(|address| Listen(Some(address)))
        .map_err(|_| format!("`{text}` is not an address like 0.0.0.0:9464 (or `off`)"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!(
            "label name `{key}` must be letters, digits, `_` or `.`"
        ));
    }
    Ok((key.to_string(), value.to_string()))
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

    /// Also capture the HTTP/1.x requests the recorded processes serve and send (every process
    /// with --all) and write them to FILE as JSON lines, one span per line. Samples taken
    /// while a thread serves a request then carry `trace_id` and `span_id` labels.
    #[arg(long, value_name = "FILE")]
    spans: Option<PathBuf>,

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
            spans: args.spans,
        }),
        Commands::Run(args) => run::run(run_options(*args)).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The options of `run`, from its flags.
fn run_options(args: RunArgs) -> RunOptions {
    RunOptions {
        server: args.server,
        server_ca: args.server_ca,
        auth_token: args.auth_token,
        pids: args.pids,
        frequency_hz: args.frequency,
        upload_interval: args.upload_interval,
        service_name: args.service_name,
        labels: args.labels,
        max_queue_bytes: args.max_queue_bytes,
        follow_children: !args.no_children,
        http: (!args.no_http).then_some(HttpOptions {
            otlp_endpoint: args.otlp_endpoint,
            otlp_ca: args.otlp_ca,
            metrics_interval: args.metrics_interval,
            max_series_per_service: args.max_series_per_service,
            max_queued_spans: args.max_queued_spans,
        }),
        telemetry_listen: args.telemetry_listen.0,
        kube: KubeOptions {
            mode: args.kube_api,
            credentials: args.kube_credentials,
            label_service_names: args.kube_label_service_names,
        },
    }
}
