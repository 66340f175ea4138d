//! Throughput and latency of the built-in sandbox, with baselines from the same run.
//!
//! `cargo bench -p riposte-sandbox` prints a Markdown table (copied into BENCH.md):
//! - static analysis objects/s over /usr/bin programs vs `sha256sum` and in-process
//!   hashing of the same bytes;
//! - verdict latency (submit → poll → verdict over HTTPS) p50/p99 for static-only
//!   objects and for scripts run in the bubblewrap jail, vs running the same script
//!   directly with `sh` (no jail, no trace).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use riposte_sandbox::report::FileIoc;
use riposte_sandbox::static_analysis::{HashList, StaticAnalyzer};
use riposte_sandbox::{serve, ClientConfig, SandboxClient, SandboxConfig, Submitted, TaskStatus};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(c: &SandboxClient, objects: &[(String, Vec<u8>)]) -> Vec<Duration> {
    let mut out = Vec::new();
    for (name, data) in objects {
        let t = Instant::now();
        match c.submit(name, data).await {
            Ok(Submitted::Queued(id)) => loop {
                match c.poll(&id).await {
                    Ok(TaskStatus::Processing) => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Ok(_) => break,
                    Err(e) => panic!("poll failed: {e}"),
                }
            },
            Ok(Submitted::AlreadyScanned(_)) => {}
            Err(e) => panic!("submit failed: {e}"),
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/usr/bin")
        .expect("/usr/bin")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        if files.len() == 300 {
            break;
        }
        // Objects the service accepts (60 MB default limit).
        let small = std::fs::metadata(&p)
            .is_ok_and(|m| m.len() <= riposte_sandbox::service::DEFAULT_MAX_OBJECT_SIZE);
        if !small {
            continue;
        }
        if let Ok(d) = std::fs::read(&p) {
            files.push((p, d));
        }
    }
    let n = files.len();
    let bytes: usize = files.iter().map(|(_, d)| d.len()).sum();
    let mb = bytes as f64 / 1e6;
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // Baseline: sha256sum over the same files (page cache warm: they were just read).
    let t = Instant::now();
    let st = std::process::Command::new("sha256sum")
        .args(files.iter().map(|(p, _)| p.as_os_str()))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("sha256sum");
    assert!(st.success());
    let e = t.elapsed();
    rows.push((
        "baseline: `sha256sum` (one process, all files)".into(),
        format!("{:.0} objects/s", n as f64 / e.as_secs_f64()),
        format!("{:.0} MB/s", mb / e.as_secs_f64()),
    ));

    let t = Instant::now();
    for (_, d) in &files {
        std::hint::black_box(FileIoc::from_bytes(None, d));
    }
    let e = t.elapsed();
    rows.push((
        "baseline: in-process MD5+SHA-1+SHA-256".into(),
        format!("{:.0} objects/s", n as f64 / e.as_secs_f64()),
        format!("{:.0} MB/s", mb / e.as_secs_f64()),
    ));

    let mut hashes = HashList::new();
    hashes
        .load_file(&corpus.join("clamav/all-hashes.csv"))
        .expect("hash list");
    let empty = tempfile::tempdir().expect("tempdir");
    for (label, rules_dir) in [
        (
            "static analysis: hashes + YARA default rules",
            empty.path().to_path_buf(),
        ),
        (
            "static analysis: hashes + YARA default + 173 FireEye rules",
            {
                let d = tempfile::tempdir().expect("tempdir").keep();
                std::fs::copy(
                    corpus.join("yara/fireeye-rttc-all.yar"),
                    d.join("fireeye.yar"),
                )
                .expect("rules");
                d
            },
        ),
    ] {
        let engines = riposte_sandbox::service::default_engines(&rules_dir).expect("engines");
        let a = StaticAnalyzer::new(hashes.clone(), engines);
        let t = Instant::now();
        let mut malicious = 0;
        for (p, d) in &files {
            if a.analyse(&p.display().to_string(), d)
                .verdict
                .is_malicious()
            {
                malicious += 1;
            }
        }
        let e = t.elapsed();
        rows.push((
            format!("{label} ({malicious} malicious)"),
            format!("{:.0} objects/s", n as f64 / e.as_secs_f64()),
            format!("{:.0} MB/s", mb / e.as_secs_f64()),
        ));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut lat_rows: Vec<(String, usize, Duration, Duration)> = Vec::new();
    rt.block_on(async {
        // Static-only service, the first 100 programs as objects.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = SandboxConfig::new(dir.path());
        cfg.dynamic = false;
        let h = serve(
            cfg,
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        )
        .await
        .expect("serve");
        let c = SandboxClient::new(ClientConfig::new(
            vec![format!("https://{}", h.addr)],
            h.cert_pem.clone(),
        ))
        .expect("client");
        let objs: Vec<(String, Vec<u8>)> = files
            .iter()
            .take(100)
            .map(|(p, d)| (p.display().to_string(), d.clone()))
            .collect();
        let l = latency(&c, &objs).await;
        lat_rows.push((
            "static (/usr/bin programs, HTTPS submit → verdict)".into(),
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
        ));
        // Same objects again: answered from the verdict store.
        let l = latency(&c, &objs).await;
        lat_rows.push((
            "already_scanned (same objects again)".into(),
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
        ));
        h.shutdown().await;

        // Dynamic: distinct scripts, each run in a fresh jail under strace.
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SandboxConfig::new(dir.path());
        let h = serve(
            cfg,
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        )
        .await
        .expect("serve");
        let c = SandboxClient::new(ClientConfig::new(
            vec![format!("https://{}", h.addr)],
            h.cert_pem.clone(),
        ))
        .expect("client");
        let scripts: Vec<(String, Vec<u8>)> = (0..30)
            .map(|i| {
                (
                    format!("s{i}.sh"),
                    format!(
                        "#!/bin/sh\necho {i} > /tmp/out.txt\n/usr/bin/id > /dev/null\nexit 0\n"
                    )
                    .into_bytes(),
                )
            })
            .collect();
        let l = latency(&c, &scripts).await;
        lat_rows.push((
            "dynamic (script in bubblewrap + strace, HTTPS submit → verdict)".into(),
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
        ));
        h.shutdown().await;

        // Baseline: the same scripts run directly (no jail, no trace, no HTTP).
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut base = Vec::new();
        for (name, s) in &scripts {
            let body = String::from_utf8_lossy(s).replace(
                "/tmp/out.txt",
                &tmp.path().join("out.txt").display().to_string(),
            );
            let p = tmp.path().join(name);
            std::fs::write(&p, body).expect("write");
            let t = Instant::now();
            let st = tokio::process::Command::new("sh")
                .arg(&p)
                .status()
                .await
                .expect("sh");
            assert!(st.success());
            base.push(t.elapsed());
        }
        base.sort();
        lat_rows.push((
            "baseline: same script run directly with `sh`".into(),
            base.len(),
            pct(&base, 0.5),
            pct(&base, 0.99),
        ));
    });

    println!("\nObjects: {n} files from /usr/bin (≤ 60 MB each), {mb:.1} MB\n");
    println!("| throughput | objects/s | MB/s |\n|---|---:|---:|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
    println!("\n| verdict latency | n | p50 | p99 |\n|---|---:|---:|---:|");
    for (a, n, p50, p99) in lat_rows {
        println!("| {a} | {n} | {} | {} |", ms(p50), ms(p99));
    }
}
