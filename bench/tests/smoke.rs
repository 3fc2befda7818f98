//! `bench all --quick` as a smoke test: every benchmark runs at tiny sizes
//! and every figure comes out as a number. Times are never checked.

use std::process::Command;

#[test]
fn every_benchmark_produces_every_figure() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("BENCHMARKS.md");
    std::fs::write(&out, "# Benchmarks\n\nHand-written notes.\n").expect("write the report file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_bench"));
    command.args(["all", "--quick", "--out"]).arg(&out);
    // The Node.js peer needs Node.js and npm, which `cargo xtask test` (and CI) provide.
    let with_peer = std::env::var_os("PROJECTOR_NODE_TESTS").is_some();
    if !with_peer {
        command.arg("--no-peer");
    }
    // The languages benchmark compiles five 12-18 MiB modules (minutes even
    // at --quick); `bench languages --quick` is its own check, outside the suite.
    command.arg("--no-languages");
    let output = command.output().expect("run the bench binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench all --quick failed: {stderr}");

    let report = std::fs::read_to_string(&out).expect("the report was written");
    assert!(report.starts_with("# Benchmarks\n"), "{report}");
    assert!(report.contains("Hand-written notes."), "the prose around the generated section is kept");
    let mut sections =
        vec!["### Event store", "### Projection runtime", "### Cost", "### User registration", "### Several hosts"];
    if with_peer {
        sections.push("### Against the Node.js peer");
    }
    for section in sections {
        assert!(report.contains(section), "no {section} in {report}");
    }
    // Every figure the issue asks for has a row, and every row a number.
    let figures = [
        "boundary: empty guest, batch 1 |",
        "boundary: empty guest, batch 1024 |",
        "guest compute: Wasm over native |",
        "catch-up: user-directory alone",
        "catch-up: signup-stats alone",
        "catch-up: inventory alone",
        "catch-up: all three together",
        "catch-up ceiling",
        "live lag at 2k events/s: acknowledged -> queryable, p99",
        "queries: GET by key, 64 clients |",
        "queries: filtered list (username = ?, indexed), 16 clients |",
        "hot swap: continue",
        "hot swap: GET by key during the rebuild",
        "cost: resident set per additional projection",
        "cost: event log on disk per event",
        "event store: append, batch 1000",
        "event store: read_all",
        "users: registrations, 16 clients",
        "cluster catch-up: all three together, until the last is at the head, into PostgreSQL |",
        "cluster catch-up: all three together, until the last is at the head, PostgreSQL over SQLite |",
        "cluster queries: GET by key, 16 clients, PostgreSQL |",
        "cluster queries: filtered list (username = ?, indexed), 16 clients, PostgreSQL, p99 |",
        "cluster takeover after kill -9: no progress seen, median |",
        "cluster takeover after kill -9: no progress seen, max |",
        "cluster scale: 3 hosts, three projections",
        "cluster scale: three hosts over one |",
    ];
    let rows: Vec<&str> =
        report.lines().filter(|line| line.starts_with("| ") && !line.starts_with("| figure")).collect();
    for figure in figures {
        let row =
            rows.iter().find(|row| row.contains(figure)).unwrap_or_else(|| panic!("no row for {figure}: {report}"));
        let measured = row.split('|').nth(2).expect("a measured column").trim();
        let number = measured.split_whitespace().next().expect("a value").replace(',', "");
        assert!(number.parse::<f64>().is_ok_and(f64::is_finite), "{figure}: {measured:?} is not a number");
    }
}
