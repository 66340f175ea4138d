//! A small fleet against a real server process: every agent gets the offer, every result
//! arrives, and the reported numbers are sane.

use riposte_fleet::{measure, FleetArgs};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_on_sqlite() {
    let mut args = FleetArgs::new(20);
    args.riposte_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_riposte-fleet")));
    args.settle_secs = 1;
    args.timeout_secs = 60;
    let r = measure(args).await.expect("the benchmark runs");
    println!("{}", r.table());
    assert_eq!(r.backend, "SQLite");
    assert_eq!(r.offers, 20, "every agent got the offer");
    assert_eq!(r.completed, 20, "every result arrived");
    assert!(r.enroll_per_sec > 0.0 && r.enroll_secs > 0.0);
    assert!(r.connect_secs > 0.0);
    assert!(r.rss_idle_kb > 0 && r.rss_before_kb > 0 && r.rss_after_kb > 0);
    assert!(r.create_ms > 0.0);
    for l in [r.offer_latency, r.result_latency] {
        assert!(l.max_ms > 0.0, "{l:?}");
        assert!(l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms, "{l:?}");
    }
    // A result is stored after its offer arrived (server clock in ms, so allow 1 ms).
    assert!(r.result_latency.max_ms + 1.0 >= r.offer_latency.p50_ms);
    assert!(r.server_nofile.unwrap_or(0) >= 4 * 20);
    let md = r.markdown_row();
    assert!(md.contains("| SQLite | 20 |"), "{md}");
}

/// With progress reports, every device's last report is stored before the agents
/// complete, and the rate is reported against what the fleet needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_are_stored_and_rated() {
    let mut args = FleetArgs::new(20);
    args.riposte_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_riposte-fleet")));
    args.settle_secs = 1;
    args.timeout_secs = 60;
    args.progress_reports = 3;
    let r = measure(args).await.expect("the benchmark runs");
    println!("{}", r.table());
    assert_eq!(r.progress_reports, 3);
    assert_eq!(r.completed, 20, "every agent completed after its reports");
    assert!(r.progress_secs > 0.0);
    let expected_rate = 60.0 / r.progress_secs;
    assert!(
        (r.progress_per_sec - expected_rate).abs() < 1e-6,
        "{} vs {expected_rate}",
        r.progress_per_sec
    );
    assert!(
        (r.progress_headroom - r.progress_per_sec / (20.0 / 30.0)).abs() < 1e-6,
        "{}",
        r.progress_headroom
    );
    assert!(r.table().contains("3 per agent"), "{}", r.table());
    let md = r.markdown_row();
    assert!(
        md.contains(&format!(
            "{:.0}/s ({:.1}×)",
            r.progress_per_sec, r.progress_headroom
        )),
        "{md}"
    );
    assert_eq!(
        md.matches('|').count(),
        riposte_fleet::FleetReport::markdown_header()
            .lines()
            .next()
            .unwrap()
            .matches('|')
            .count(),
        "row and header have the same columns"
    );
}
