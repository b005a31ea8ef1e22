//! `profiler-agent run`: continuous profiling. Samples the machine (or some processes) at a low
//! frequency, and every upload interval symbolizes what was collected, splits it into one pprof
//! profile per service (process name unless `--service-name` is given) and queues it for the
//! server. Runs until SIGINT/SIGTERM, then sends what is left.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::Ordering,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use profiler_common::Stat;

use crate::{
    agent::{check_frequency, check_pids, Profiler},
    capture::span::{AttrValue, Attribute, Resource},
    ebpf::SamplerOptions,
    encode::pprof,
    export::{
        http::{ServerUrl, Upload, Uploader},
        otlp::{self_metrics_request, OtlpExporter, OtlpOptions},
    },
    http_capture::{CaptureSinks, HttpCapture},
    metadata::{
        kube_api::{start_pod_source, KubeApiMode, PodSource},
        Metadata,
    },
    signals,
    telemetry::{agent_metrics, AgentState, Telemetry},
    tls::TlsTarget,
};

/// How often the kernel maps are drained.
const DRAIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a status line is logged.
const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// What `run` was asked to do (parsed by `main.rs`).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub server: String,
    /// PEM CA certificates an `https://` server is checked against; `None`: the system's.
    pub server_ca: Option<PathBuf>,
    pub auth_token: Option<String>,
    pub pids: Vec<u32>,
    pub frequency_hz: u64,
    pub upload_interval: Duration,
    pub service_name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub max_queue_bytes: usize,
    pub follow_children: bool,
    /// HTTP capture settings; `None` turns the capture off.
    pub http: Option<HttpOptions>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: nowhere.
    pub telemetry_listen: Option<SocketAddr>,
    /// Whether and how the API server is asked about this node's pods.
    pub kube: KubeOptions,
}

/// `--kube-api`, `--kube-credentials`, `--kube-label-service-names`.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    pub mode: KubeApiMode,
    /// The service account directory (`token`, `ca.crt`).
    pub credentials: PathBuf,
    pub label_service_names: bool,
}

/// What `run` does with the HTTP capture.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// OTLP/gRPC receiver; `None`: the server's host on port 4317.
    pub otlp_endpoint: Option<String>,
    /// PEM CA certificates an `https://` receiver is checked against; `None`: the system's.
    pub otlp_ca: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub max_series_per_service: usize,
    pub max_queued_spans: usize,
}

/// The profiler server's OTLP/gRPC port.
const SERVER_OTLP_PORT: u16 = 4317;

pub fn run(options: RunOptions) -> Result<()> {
    let url = ServerUrl::parse(&options.server)?;
    let tls = if url.tls {
        let target = TlsTarget::new(options.server_ca.as_deref(), &url.host);
        Some(target.with_context(|| format!("cannot set up TLS for {}", options.server))?)
    } else {
        None
    };
    check_frequency(options.frequency_hz)?;
    if options.upload_interval < Duration::from_secs(1) {
        bail!("--upload-interval must be at least 1 s");
    }
    check_pids(&options.pids)?;
    // Bound first, so the probes answer (503, starting) while the sampler loads.
    let telemetry = options
        .telemetry_listen
        .and_then(|address| match Telemetry::start(address) {
            Ok(telemetry) => Some(telemetry),
            Err(error) => {
                eprintln!("warning: no /metrics and health endpoint: {error:#}");
                None
            }
        });
    signals::install();
    eprint!("{}", crate::features::probe());
    let pods = start_pod_source(
        &options.kube.mode,
        &options.kube.credentials,
        options.kube.label_service_names,
    );
    let mut profiler = Profiler::start(&SamplerOptions {
        frequency_hz: options.frequency_hz,
        pids: (!options.pids.is_empty()).then(|| options.pids.clone()),
        follow_children: options.follow_children,
        http_capture: options.http.is_some(),
    })
    .context("cannot start the CPU sampler")?;
    let (mut capture, mut otlp) = match &options.http {
        Some(http) => start_capture(&mut profiler, http, &url, &options, &pods).unzip(),
        None => (None, None),
    };
    let otlp_stats = otlp.as_ref().map(|otlp| otlp.stats_handle());
    let own_resource = agent_resource();
    let started_unix_ns = crate::agent::unix_now_ns();
    let mut next_own_metrics = Instant::now();
    let uploader = Uploader::start(
        url,
        tls,
        options.auth_token.clone(),
        options.max_queue_bytes,
    );
    let mut metadata = Metadata::new(pods.clone());
    let mut labels = options.labels.clone();
    if !labels.iter().any(|(key, _)| key == "host_name") {
        labels.push((
            "host_name".to_string(),
            crate::metadata::host_name_or_unknown(),
        ));
    }
    eprintln!(
        "profiling {} at {} Hz; uploading every {} s to {}",
        if options.pids.is_empty() {
            "all processes".to_string()
        } else {
            format!("pids {:?}", options.pids)
        },
        options.frequency_hz,
        options.upload_interval.as_secs_f64(),
        options.server
    );

    let mut next_upload = Instant::now() + options.upload_interval;
    let mut next_status = Instant::now() + STATUS_INTERVAL;
    let mut uploaded_samples = 0u64;
    loop {
        let until_upload = next_upload.saturating_duration_since(Instant::now());
        signals::sleep(until_upload.min(DRAIN_INTERVAL));
        profiler.drain()?;
        let own_metrics_due = otlp.is_some() && Instant::now() >= next_own_metrics;
        if telemetry.is_some() || own_metrics_due {
            let kernel = profiler.kernel_stats().unwrap_or_default();
            let metrics = agent_metrics(&AgentState {
                kernel: &kernel,
                read_errors: profiler.collector.read_errors,
                counts_fill: profiler.counts_fill(),
                samples_uploaded: uploaded_samples,
                uploads: uploader.stats(),
                upload_queue_capacity_bytes: options.max_queue_bytes,
                capture: capture.as_ref().map(|c| &*c.counters),
                sample_links: profiler.collector.links,
                otlp: otlp_stats.as_deref(),
                kube: pods.as_ref().map(|pods| pods.stats()),
            });
            if let Some(telemetry) = &telemetry {
                telemetry.update(metrics.finish());
                telemetry.set_ready();
            }
            if let (true, Some(otlp), Some(http)) = (own_metrics_due, &otlp, &options.http) {
                let (request, points) = self_metrics_request(
                    &own_resource,
                    metrics.samples(),
                    started_unix_ns,
                    crate::agent::unix_now_ns(),
                );
                otlp.push_metrics_request(request, points);
                next_own_metrics = Instant::now() + http.metrics_interval;
            }
        }
        let stopping = signals::stop_requested();
        if stopping {
            eprintln!("stopping: sending what is queued (up to 5 s each for spans and profiles)");
            // The capture publishes its last streams as it stops: stopped before the last
            // profile, it lets every waiting sample in. It flushes and shuts the exporter
            // down: let go of that first.
            otlp = None;
            if let Some(capture) = capture.take() {
                log_capture_status(&profiler, &capture);
                if let Err(error) = capture.stop() {
                    eprintln!("warning: the HTTP capture did not stop cleanly: {error:#}");
                }
            }
            profiler.link_waiting();
        }
        if Instant::now() >= next_upload || stopping {
            uploaded_samples +=
                queue_profiles(&mut profiler, &mut metadata, &uploader, &options, &labels)?;
            for pid in profiler.prune() {
                metadata.forget(pid);
            }
            next_upload += options.upload_interval;
        }
        if Instant::now() >= next_status || stopping {
            log_status(&profiler, &uploader, uploaded_samples);
            if let Some(capture) = &capture {
                log_capture_status(&profiler, capture);
            }
            next_status += STATUS_INTERVAL;
        }
        if stopping {
            break;
        }
    }
    let (sent, unsent) = uploader.shutdown(Duration::from_secs(5));
    eprintln!("stopped: {sent} profiles sent, {unsent} left unsent");
    Ok(())
}

/// Symbolizes the window, splits it per service and queues one pprof per service; returns the
/// number of samples queued.
fn queue_profiles(
    profiler: &mut Profiler,
    metadata: &mut Metadata,
    uploader: &Uploader,
    options: &RunOptions,
    labels: &[(String, String)],
) -> Result<u64> {
    let (mut profile, _) = profiler.take_profile();
    if profile.samples.is_empty() {
        return Ok(0);
    }
    metadata.label_samples(&mut profile);
    let mut service_of: HashMap<u32, String> = HashMap::new();
    for sample in &profile.samples {
        service_of.entry(sample.pid).or_insert_with(|| {
            options
                .service_name
                .clone()
                .or_else(|| {
                    metadata
                        .for_pid(sample.pid)
                        .service_name()
                        .map(String::from)
                })
                .or_else(|| {
                    profiler
                        .collector
                        .processes
                        .name(sample.pid)
                        .map(String::from)
                })
                .unwrap_or_else(|| sample.comm.clone())
        });
    }
    let services: BTreeSet<&String> = service_of.values().collect();
    let from_unix_s = profile.start_unix_ns / 1_000_000_000;
    let until_unix_s = (profile.start_unix_ns + profile.duration_ns).div_ceil(1_000_000_000);
    for service in services {
        let part = profile.subset(|s| service_of.get(&s.pid) == Some(service));
        let body = pprof::encode_gzip(&part).context("encoding a pprof profile")?;
        uploader.push(Upload {
            service_name: service.clone(),
            from_unix_s,
            until_unix_s,
            labels: labels.to_vec(),
            body,
        });
    }
    Ok(profile.total_samples())
}

fn log_status(profiler: &Profiler, uploader: &Uploader, uploaded_samples: u64) {
    let stats = uploader.stats();
    let kernel = profiler.kernel_stats().ok();
    let lost = kernel.map_or(0, |k| k.get(Stat::CountsMapFull));
    eprintln!(
        "status: {uploaded_samples} samples profiled, {lost} lost in the kernel; profiles sent {}, \
         failed attempts {}, dropped (queue full) {}, dropped (rejected) {}, queued {} ({} bytes)",
        stats.sent.load(Ordering::Relaxed),
        stats.failed_attempts.load(Ordering::Relaxed),
        stats.dropped_queue_full.load(Ordering::Relaxed),
        stats.dropped_rejected.load(Ordering::Relaxed),
        uploader.queued(),
        stats.queued_bytes.load(Ordering::Relaxed),
    );
}

/// Starts the HTTP capture with its OTLP exporter (also returned: the agent's own metrics use
/// it). A
/// failure turns the capture off with a message; profiling goes on (the agent runs with what
/// works).
fn start_capture(
    profiler: &mut Profiler,
    http: &HttpOptions,
    server: &ServerUrl,
    options: &RunOptions,
    pods: &Option<Arc<PodSource>>,
) -> Option<(HttpCapture, Arc<OtlpExporter>)> {
    let endpoint = http
        .otlp_endpoint
        .clone()
        .unwrap_or_else(|| format!("http://{}:{SERVER_OTLP_PORT}", server.host_for_url()));
    let started = (|| -> Result<(HttpCapture, Arc<OtlpExporter>)> {
        let mut otlp = OtlpOptions::new(endpoint.clone());
        otlp.ca_file = http.otlp_ca.clone();
        otlp.auth_token = options.auth_token.clone();
        otlp.max_queued_spans = http.max_queued_spans;
        let exporter = Arc::new(OtlpExporter::start(otlp)?);
        let (events, windows) = profiler.start_http_capture()?;
        let capture = HttpCapture::start(
            events,
            windows,
            CaptureSinks {
                otlp: Some(exporter.clone()),
                spans_file: None,
                metrics_interval: http.metrics_interval,
                max_series_per_service: http.max_series_per_service,
                service_name: options.service_name.clone(),
                pods: pods.clone(),
            },
        )?;
        Ok((capture, exporter))
    })();
    match started {
        Ok(started) => {
            eprintln!("HTTP capture on: spans and RED metrics go to {endpoint} (OTLP/gRPC)");
            Some(started)
        }
        Err(error) => {
            eprintln!("warning: HTTP capture off: {error:#}");
            None
        }
    }
}

fn log_capture_status(profiler: &Profiler, capture: &HttpCapture) {
    let kernel = profiler.kernel_stats().unwrap_or_default();
    eprintln!(
        "http: {}; kernel: {} records lost (ring buffer full), {} connections not followed \
         (map full), {} syscalls not inspected (argument map full)",
        capture.counters.describe(),
        kernel.get(Stat::HttpEventsLost),
        kernel.get(Stat::HttpConnsFull),
        kernel.get(Stat::HttpArgsFull),
    );
    let links = profiler.collector.links;
    if kernel.get(Stat::TimedSamples) > 0 {
        eprintln!("{links}");
    }
}

/// The resource of the agent's own metrics.
fn agent_resource() -> Resource {
    let host = crate::metadata::host_name_or_unknown();
    let mut attributes: Vec<Attribute> = vec![
        (
            "service.name".into(),
            AttrValue::Str("profiler-agent".into()),
        ),
        (
            "service.version".into(),
            AttrValue::Str(env!("CARGO_PKG_VERSION").into()),
        ),
        ("service.instance.id".into(), AttrValue::Str(host.clone())),
        ("host.name".into(), AttrValue::Str(host)),
        (
            "process.pid".into(),
            AttrValue::Int(i64::from(std::process::id())),
        ),
    ];
    if let Ok(node) = std::env::var("NODE_NAME") {
        attributes.push(("k8s.node.name".into(), AttrValue::Str(node)));
    }
    attributes.sort();
    Resource {
        service_name: "profiler-agent".into(),
        attributes,
    }
}
