//! The web UI in a real headless Chromium, against the real server binary.
//!
//! Each test starts `profiler-server` on free loopback ports with a fresh data directory. The
//! main one ingests the recorded `tests/data/burn3.pb.gz` (CPU split 1:2:3 between
//! `burn_alpha`, `burn_beta` and `burn_gamma`) and a crafted profile whose samples carry
//! `span_id`/`trace_id` labels, sends the matching trace and a request-duration histogram over
//! OTLP/gRPC, then walks the incident path in the browser: RED chart spike → the slow traces of
//! that step → waterfall → the span's own flame graph; then the flame graph page (search with
//! the matched share, tooltip, table sort, zoom and the back button, the link to the traces)
//! and the diff. Screenshots land in `target/browser-artifacts/`.
//!
//! The browser is Debian's `chromium`, driven through Debian's `chromium-driver` over W3C
//! WebDriver (`browser/webdriver.rs`, std TCP + serde_json): `apt-get install -y chromium
//! chromium-driver` is the whole setup. Without them the tests print `skipping: <reason>`, and
//! fail under `CI=true`.

mod common;
#[path = "browser/fixtures.rs"]
mod fixtures;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::{
    env,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use common::{encode, ChildServer, TempDir};
use fixtures::{
    red_request, span_profile, trace_request, ROOT_SPAN, SPAN_FUNCTION, SPAN_SAMPLES, TRACE_ID,
    WORK_SPAN,
};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
};
use serde_json::json;
use webdriver::{Chromedriver, Session};

/// How long before the test's start the traced request ran.
const TRACE_AGE_SECS: u64 = 30;
const TOKEN: &str = "s3cret-token";

/// One browser at a time: two Chromiums on a 2-core CI machine make both slow and flaky.
static BROWSER: Mutex<()> = Mutex::new(());

/// The incident path (RED chart → slow traces of that window → waterfall → the span's flame
/// graph), then the flame graph page: search, zoom, URL state, and its link to the traces.
#[test]
fn red_chart_to_traces_to_span_profile_and_flame_graph_search() {
    let Some(ui) = Ui::start(
        "red_chart_to_traces_to_span_profile_and_flame_graph_search",
        None,
    ) else {
        return;
    };
    let (server, b) = (&ui.server, &ui.browser);
    let now = u64::try_from(common::unix_now()).expect("a clock after 1970");
    let trace_start = now - TRACE_AGE_SECS;
    // The recording's own time is when it was made; place it in the last minute instead.
    post_profile(
        server.http,
        &format!("service_name=burn3&from={}&until={now}", now - 60),
        common::BURN3,
    );
    post_profile(
        server.http,
        &format!("service_name=checkout&from={}&until={now}", now - 60),
        &span_profile(trace_start),
    );
    export_otlp(
        server.otlp,
        trace_request(trace_start),
        red_request(now, trace_start),
    );
    let base = format!("http://{}/", server.http);

    // Services: checkout's latency chart; a click in the step of the slow request opens the
    // slowest traces of exactly that step.
    b.goto(&format!("{base}#/services?from=now-15m&until=now"));
    let chart = r#".service-card[data-service="checkout"] .chart:has(svg[aria-label="Duration"])"#;
    b.find(chart);
    b.find(r#".service-card[data-service="burn3"]"#);
    show("services", &b.screenshot("services"));
    let fraction = b.execute(
        "const d = document.querySelector(arguments[0]).dataset; \
         const step = Number(d.step), t = Math.floor(arguments[1] / step) * step + step / 2; \
         return (t - Number(d.from)) / (Number(d.until) - Number(d.from))",
        json!([chart, trace_start]),
    );
    b.click_at(
        &format!("{chart} svg"),
        fraction.as_f64().expect("a chart position"),
    );
    let row = format!(r#"tr[data-trace-id="{TRACE_ID}"]"#);
    b.find(&format!("{row} .badge.profile"));
    let url = b.url();
    for part in [
        "#/traces?",
        "service=checkout",
        "route=%2Fcheckout",
        "sort=duration",
    ] {
        assert!(
            url.contains(part),
            "the chart click led to {url}, without {part}"
        );
    }
    let window = b.execute(
        "const p = new URLSearchParams(location.hash.split('?')[1]); return [Number(p.get('from')), Number(p.get('until'))]",
        json!([]),
    );
    let (from, until) = (window[0].as_f64(), window[1].as_f64());
    assert!(
        from <= Some(trace_start as f64)
            && until > Some(trace_start as f64)
            && until.zip(from).is_some_and(|(u, f)| u - f <= 60.0),
        "the chart click selected {window}, not the step of the trace at {trace_start}"
    );
    show("traces", &b.screenshot("traces"));

    // Its waterfall: both spans, nested, the work span with its profile link.
    b.click(&format!("{row} a.trace-link"));
    let work = format!(r#".span-row[data-span-id="{WORK_SPAN}"]"#);
    b.find(&format!("{work} a.profile-link"));
    let nesting = b.execute(
        "const pad = (id) => parseFloat(document.querySelector(`.span-row[data-span-id=\"${id}\"] .span-label`).style.paddingLeft); return [pad(arguments[0]), pad(arguments[1])]",
        json!([ROOT_SPAN, WORK_SPAN]),
    );
    assert!(
        nesting[1].as_f64() > nesting[0].as_f64(),
        "the child span is not indented below its parent: {nesting}"
    );
    show("waterfall", &b.screenshot("waterfall"));

    // The span's flame graph: only the samples taken inside that span.
    b.click(&format!("{work} a.profile-link"));
    b.find(".span-banner");
    b.find(&format!(r#".flamegraph .fn[data-name="{SPAN_FUNCTION}"]"#));
    let graph = b.execute(
        "return [document.querySelector('.summary').textContent, document.querySelectorAll('.flamegraph .fn[data-name=\"burn_gamma\"]').length]",
        json!([]),
    );
    assert!(
        graph[0]
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{SPAN_SAMPLES} samples"))),
        "the span's flame graph is not its {SPAN_SAMPLES} samples: {graph}"
    );
    assert_eq!(
        graph[1],
        json!(0),
        "the span's flame graph shows other work"
    );
    show("span-flamegraph", &b.screenshot("span-flamegraph"));

    // The flame graph of burn3: the hot function is drawn, search highlights it with its share.
    b.goto(&format!(
        "{base}#/flamegraph?query={}",
        encode(r#"{service_name="burn3"}"#)
    ));
    b.find(r#".flamegraph .fn[data-name="burn_gamma"]"#);
    b.find(r#".top-table td.fn-name"#);
    b.type_into("input[name=search]", "burn_gamma");
    b.find(r#".flamegraph .fn.match[data-name="burn_gamma"]"#);
    let summary = b.wait_for(
        "the matched share",
        "const t = document.querySelector('.match-summary').textContent; return /%/.test(t) && t",
        json!([]),
    );
    let share = percent_in(summary.as_str().unwrap_or_default());
    // burn_gamma burns 3/6 of the fixture's CPU; the recording measured 46%.
    assert!(
        (30.0..=65.0).contains(&share),
        "burn_gamma's matched share is {share}%: {summary}"
    );
    let dimmed = b.execute(
        "return document.querySelectorAll('.flamegraph .fn.dim').length",
        json!([]),
    );
    assert!(
        dimmed.as_u64() > Some(0),
        "frames that do not match are not dimmed"
    );
    assert!(
        b.url().contains("search=burn_gamma"),
        "search is not in the URL: {}",
        b.url()
    );
    // The tooltip: name, samples with their share, self.
    b.hover(r#".flamegraph .fn[data-name="burn_gamma"]"#);
    let tooltip = b.wait_for(
        "the tooltip of burn_gamma",
        "const t = document.getElementById('tooltip'); return !t.hidden && t.textContent",
        json!([]),
    );
    for part in ["burn_gamma", "Samples", "of total", "Self", "CPU time"] {
        assert!(
            tooltip.as_str().is_some_and(|t| t.contains(part)),
            "the tooltip lacks {part}: {tooltip}"
        );
    }
    show("flamegraph-search", &b.screenshot("flamegraph-search"));

    // The table sorts by total on a click of its header, and keeps that in the URL.
    b.click(r#".top-table th:nth-child(3) button.sort"#);
    b.wait_for(
        "the table sorted by total",
        "return location.hash.includes('sort=total') && ['main', '__libc_start_call_main'].includes(document.querySelector('.top-table tbody td.fn-name').textContent)",
        json!([]),
    );

    // Click to zoom: the URL keeps the zoom, the frame fills the width, back undoes it.
    b.click(r#".flamegraph .fn[data-name="burn_gamma"]"#);
    b.wait_for(
        "the zoomed burn_gamma frame",
        r#"const f = document.querySelector('.flamegraph .fn.focused'); return f && f.dataset.name === 'burn_gamma' && f.style.width === '100%'"#,
        json!([]),
    );
    assert!(
        b.url().contains("focus="),
        "zoom is not in the URL: {}",
        b.url()
    );
    b.back();
    b.wait_for(
        "the zoom undone by the back button",
        "return !location.hash.includes('focus=') && !document.querySelector('.flamegraph .fn.focused')",
        json!([]),
    );

    // Its traces link keeps the range and the service: burn3 has no spans, and says so.
    b.click("a.traces-link");
    b.wait_for(
        "the traces of burn3",
        "return location.hash.startsWith('#/traces') && location.hash.includes('service=burn3') && document.querySelector('.state.empty')",
        json!([]),
    );

    // Diff: burn3 against checkout. burn3's frames are new (red), checkout's are gone (green).
    b.goto(&format!(
        "{base}#/diff?base_from=now-1h&base_until=now&base_query={}&query={}",
        encode(r#"{service_name="checkout"}"#),
        encode(r#"{service_name="burn3"}"#)
    ));
    let colors = b.wait_for(
        "the diff flame graph",
        "const rgb = (name) => { const f = document.querySelector(`.flamegraph .fn[data-name=\"${name}\"]`); \
         return f && getComputedStyle(f).backgroundColor.match(/\\d+/g).map(Number); }; \
         const grew = rgb('burn_gamma'), shrank = rgb(arguments[0]); return grew && shrank && [grew, shrank]",
        json!([SPAN_FUNCTION]),
    );
    let channel = |i: usize, c: usize| colors[i][c].as_i64().unwrap_or_default();
    assert!(
        channel(0, 0) > channel(0, 1) + 50,
        "burn_gamma, only in the comparison, is not red: {colors}"
    );
    assert!(
        channel(1, 1) > channel(1, 0) + 30,
        "{SPAN_FUNCTION}, only in the base, is not green: {colors}"
    );
    show("diff", &b.screenshot("diff"));

    ui.finish(|_| false);
}

/// The UI's pure helpers (selectors, times, span nesting), run in the browser as the UI loads
/// them (no Node needed), then the empty and error states.
#[test]
fn helpers_and_empty_and_error_states() {
    let Some(ui) = Ui::start("helpers_and_empty_and_error_states", None) else {
        return;
    };
    let b = &ui.browser;
    b.goto(&format!("http://{}/", ui.server.http));
    b.find("#nav a");
    let failures = b.execute(HELPER_CHECKS, json!([]));
    assert_eq!(failures, json!([]), "UI helper checks failed");

    // Nothing ingested: the empty state. A bad selector: the server's message.
    b.find(".state.empty");
    b.goto(&format!(
        "http://{}/#/flamegraph?query={}",
        ui.server.http,
        encode("{bad")
    ));
    let error = b.wait_for(
        "the server's error message",
        "return document.querySelector('.state.error')?.textContent",
        json!([]),
    );
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("400") && e.contains("selector")),
        "the error state does not show the server's answer: {error}"
    );
    ui.finish(|message| message.contains("status of 400"));
}

/// Checks of `labels.js`, `util.js` and `page-traces.js`; returns the failures. (WebDriver
/// waits for the returned promise.)
const HELPER_CHECKS: &str = r#"
return Promise.all([import('/labels.js'), import('/util.js'), import('/page-traces.js')])
  .then(([labels, util, traces]) => {
    const failures = [];
    const eq = (what, got, want) => {
      if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    };
    const selector = '{service_name="api", comm=~"ng.*",path!="a\\"b"}';
    eq('parse', labels.parseSelector(selector), [
      { name: 'service_name', op: '=', value: 'api' },
      { name: 'comm', op: '=~', value: 'ng.*' },
      { name: 'path', op: '!=', value: 'a"b' }]);
    eq('round trip', labels.formatSelector(labels.parseSelector(selector)), '{service_name="api",comm=~"ng.*",path!="a\\"b"}');
    eq('empty', labels.parseSelector('{}'), []);
    eq('invalid', labels.parseSelector('{bad'), null);
    eq('service', labels.serviceOf(selector), 'api');
    eq('with service', labels.withService('{comm="x"}', 'web'), '{service_name="web",comm="x"}');
    eq('without service', labels.withService(selector, ''), '{comm=~"ng.*",path!="a\\"b"}');
    eq('relative', util.parseTime('now-15m', 10000), 10000 - 900);
    eq('seconds', util.parseTime('1700000000', 0), 1.7e9);
    eq('milliseconds', util.parseTime('1700000000000', 0), 1.7e9);
    eq('nanoseconds', util.parseTime('1700000000000000000', 0), 1.7e9);
    eq('rfc3339', util.parseTime('2023-11-14T22:13:20Z', 0), 1.7e9);
    eq('nanos to ms', util.nanosToMs('1700000000123456789'), 1700000000123.456);
    const span = (id, parent, start) => ({ span_id: id, parent_span_id: parent, start_unix_nano: String(start) });
    const tree = traces.spanTree([span('c', 'a', 30), span('b', 'a', 20), span('a', null, 10), span('o', 'missing', 5)]);
    eq('span tree', tree.map((r) => `${r.span.span_id}${r.depth}`), ['o0', 'a0', 'b1', 'c1']);
    return failures;
  });
"#;

/// With `--auth-token`, the UI asks for the token on the first 401 and sends it from then on.
#[test]
fn asks_for_the_token_when_the_api_answers_401() {
    let Some(ui) = Ui::start("asks_for_the_token_when_the_api_answers_401", Some(TOKEN)) else {
        return;
    };
    let (server, b) = (&ui.server, &ui.browser);
    b.goto(&format!("http://{}/#/services", server.http));
    b.find("dialog#login[open] input[type=password]");
    b.type_into("dialog#login input[type=password]", TOKEN);
    b.click("dialog#login button[type=submit]");
    // No data was ingested: the page must say so, which needs an authorized API answer.
    b.wait_for(
        "the empty state after signing in",
        "return !document.querySelector('dialog#login').open && document.querySelector('.state.empty')?.textContent",
        json!([]),
    );
    let stored = b.execute("return sessionStorage.getItem('profiler.token')", json!([]));
    assert_eq!(stored, json!(TOKEN));
    show("auth", &b.screenshot("auth"));
    // The first API calls were refused: expected in the console, and nothing else.
    ui.finish(|message| message.contains("401"));
}

/// A server with its own data directory and a headless Chromium, for one test. Fields drop in
/// order: the browser closes before its driver, and only one test holds a browser at a time.
struct Ui {
    browser: Session,
    _driver: Chromedriver,
    server: ChildServer,
    _data: TempDir,
    _one_browser: MutexGuard<'static, ()>,
}

impl Ui {
    /// Starts the server (with `--auth-token` when `token` is set) and a browser, or returns
    /// `None` after printing `skipping: <reason>` when chromium or chromedriver is missing (a
    /// panic under CI, which installs them).
    fn start(test: &str, token: Option<&str>) -> Option<Self> {
        let chromium = env::var_os("CHROMIUM")
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        let chromedriver = env::var_os("CHROMEDRIVER")
            .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
        for path in [&chromium, &chromedriver] {
            if !path.exists() {
                tests::skip(
                    test,
                    &format!(
                        "{} not found (apt-get install -y chromium chromium-driver, or set \
                         CHROMIUM and CHROMEDRIVER)",
                        path.display()
                    ),
                );
                return None;
            }
        }
        let one_browser = BROWSER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let data = TempDir::new(test);
        let server = match token {
            Some(token) => ChildServer::start(&data.0, &["--auth-token", token]),
            None => ChildServer::start(&data.0, &[]),
        };
        let artifacts = artifacts_dir();
        let driver = Chromedriver::start(
            &chromedriver,
            &artifacts.join(format!("{test}.chromedriver.log")),
        );
        let browser = driver.session(&chromium, artifacts);
        Some(Self {
            browser,
            _driver: driver,
            server,
            _data: data,
            _one_browser: one_browser,
        })
    }

    /// Fails on browser console errors other than `expected` ones.
    fn finish(self, expected: impl Fn(&str) -> bool) {
        let errors: Vec<_> = self
            .browser
            .console()
            .into_iter()
            .filter(|(level, message)| level == "SEVERE" && !expected(message))
            .collect();
        assert!(errors.is_empty(), "browser console errors: {errors:#?}");
    }
}

/// `target/browser-artifacts` (created if missing): screenshots and logs kept after the run.
fn artifacts_dir() -> PathBuf {
    let dir = tests::target_dir().join("browser-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn show(what: &str, path: &Path) {
    eprintln!("screenshot of {what}: {}", path.display());
}

/// The first "12.5%" in `text`, as 12.5.
fn percent_in(text: &str) -> f64 {
    let end = text
        .find('%')
        .unwrap_or_else(|| panic!("no percentage in {text:?}"));
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    text[start..end]
        .parse()
        .unwrap_or_else(|e| panic!("bad percentage in {text:?}: {e}"))
}

/// Posts a pprof profile to `/api/v1/profiles?<query>`.
fn post_profile(server: SocketAddr, query: &str, body: &[u8]) {
    let path = format!("/api/v1/profiles?{query}");
    let response = common::http(server, "POST", &path, &[], body);
    assert_eq!(response.status, 200, "POST {path}: {}", response.text());
    let counts = response.json();
    assert!(
        counts["samples"].as_u64() > Some(0),
        "nothing ingested: {counts}"
    );
}

/// Sends spans and metrics to the OTLP/gRPC port.
fn export_otlp(
    otlp: SocketAddr,
    traces: ExportTraceServiceRequest,
    metrics: ExportMetricsServiceRequest,
) {
    let endpoint = format!("http://{otlp}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async move {
            let channel = tonic::transport::Endpoint::new(endpoint)
                .expect("OTLP endpoint")
                .connect()
                .await
                .expect("connect to the OTLP/gRPC port");
            TraceServiceClient::new(channel.clone())
                .export(traces)
                .await
                .expect("OTLP trace export");
            MetricsServiceClient::new(channel)
                .export(metrics)
                .await
                .expect("OTLP metrics export");
        });
}
