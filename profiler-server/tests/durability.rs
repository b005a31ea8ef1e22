//! The real binary as a child process: acknowledged profiles survive `kill -9`, data survives
//! a clean SIGTERM restart, and retention deletes old data.

mod common;

use std::time::{Duration, Instant};

use common::{get_json, http, ChildServer, TempDir, BURN3};

fn ingest(server: &ChildServer, service: &str, from: &str) -> u64 {
    let response = http(
        server.http,
        "POST",
        &format!("/api/v1/profiles?service_name={service}&from={from}"),
        &[],
        BURN3,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["samples"].as_u64().expect("samples")
}

fn total(server: &ChildServer, service: &str) -> u64 {
    let path = format!(
        "/api/v1/flamegraph?from=now-1d&until=now%2B1h&query=%7Bservice_name%3D%22{service}%22%7D"
    );
    get_json(server.http, &path)["total"]
        .as_u64()
        .expect("total")
}

#[test]
fn acknowledged_profiles_survive_kill_9() {
    let dir = TempDir::new("kill9");
    let server = ChildServer::start(&dir.0, &[]);
    let n = 25;
    let mut acknowledged = 0;
    for i in 0..n {
        // Different buckets and the same bucket both: every write must stick.
        acknowledged += ingest(&server, "crash", &format!("now-{}s", (i % 5) * 10));
    }
    server.kill9();

    let server = ChildServer::start(&dir.0, &[]);
    assert_eq!(
        total(&server, "crash"),
        acknowledged,
        "all {n} acknowledged profiles are there"
    );
    // And the store still takes writes after recovering.
    let more = ingest(&server, "crash", "now");
    assert_eq!(total(&server, "crash"), acknowledged + more);
    server.kill9();
}

#[test]
fn data_survives_a_clean_restart() {
    let dir = TempDir::new("restart");
    let server = ChildServer::start(&dir.0, &[]);
    let ingested = ingest(&server, "restart", "now");
    server.terminate();
    // The clean shutdown checkpointed the WAL into the database file.
    let wal = dir.0.join("profiler.sqlite3-wal");
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "WAL left behind"
    );

    let server = ChildServer::start(&dir.0, &[]);
    assert_eq!(total(&server, "restart"), ingested);
    server.terminate();
}

#[test]
fn retention_deletes_old_data() {
    let dir = TempDir::new("retention");
    let server = ChildServer::start(
        &dir.0,
        &["--retention", "1h", "--retention-interval", "200ms"],
    );
    let recent = ingest(&server, "fresh", "now-10m");
    ingest(&server, "stale", "now-2h");
    let deadline = Instant::now() + Duration::from_secs(20);
    while total(&server, "stale") > 0 {
        assert!(Instant::now() < deadline, "old data still there after 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(total(&server, "fresh"), recent, "recent data is kept");
    server.terminate();
}
