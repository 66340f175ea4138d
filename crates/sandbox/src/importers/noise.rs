//! Background-noise filter for sandbox network captures.
//!
//! Why: a Windows guest talks to Windows Update, telemetry, NTP, OCSP/CRL servers and
//! its LAN (NetBIOS, LLMNR, SSDP) whatever the sample does. Turning that traffic into
//! IOCs would make the sweep flag every Windows machine, so importers drop it.

use std::collections::HashSet;
use std::net::IpAddr;

/// Domain suffixes whose traffic is operating-system or PKI background.
const NOISE_SUFFIXES: &[&str] = &[
    "microsoft.com",
    "windows.com",
    "windowsupdate.com",
    "windows.net",
    "msftncsi.com",
    "msftconnecttest.com",
    "live.com",
    "live.net",
    "passport.net",
    "msn.com",
    "bing.com",
    "office.com",
    "office.net",
    "office365.com",
    "skype.com",
    "msedge.net",
    "akadns.net",
    "trafficmanager.net",
    "digicert.com",
    "verisign.com",
    "symcd.com",
    "symcb.com",
    "globalsign.com",
    "globalsign.net",
    "lencr.org",
    "letsencrypt.org",
    "sectigo.com",
    "usertrust.com",
    "comodoca.com",
    "entrust.net",
    "identrust.com",
    "pki.goog",
    "gvt1.com",
    "update.googleapis.com",
    "pool.ntp.org",
    "in-addr.arpa",
    "ip6.arpa",
    "local",
];

/// Host-name prefixes of certificate-status services.
const NOISE_PREFIXES: &[&str] = &["ocsp.", "crl.", "ocsp2.", "crl3.", "crl4.", "wpad."];

/// `true` if `domain` is background noise.
pub fn is_noise_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || !d.contains('.') {
        return true; // single-label names (WPAD, NetBIOS) are LAN chatter
    }
    NOISE_PREFIXES.iter().any(|p| d.starts_with(p))
        || NOISE_SUFFIXES
            .iter()
            .any(|s| d == *s || d.ends_with(&format!(".{s}")))
}

/// `true` if `ip` is local, multicast, broadcast or otherwise never an IOC.
pub fn is_noise_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.octets()[3] == 255 && v4.is_private()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Noise context built from one report: resolvers and addresses resolved from noise names.
#[derive(Debug, Default)]
pub struct NoiseFilter {
    noise_ips: HashSet<String>,
}

impl NoiseFilter {
    /// Empty filter (static rules only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark `ip` as noise (e.g. the guest's DNS server, or an answer for a noise name).
    pub fn add_noise_ip(&mut self, ip: &str) {
        self.noise_ips.insert(ip.to_string());
    }

    /// `true` if a destination is background: unparsable, local, resolver, or resolved
    /// from a noise domain.
    pub fn ip_is_noise(&self, ip: &str) -> bool {
        match ip.parse::<IpAddr>() {
            Ok(a) => is_noise_ip(&a) || self.noise_ips.contains(ip),
            Err(_) => true,
        }
    }

    /// `true` if a URL's host is noise.
    pub fn url_is_noise(&self, url: &str) -> bool {
        let host = url
            .split("://")
            .nth(1)
            .unwrap_or(url)
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if host.parse::<IpAddr>().is_ok() {
            self.ip_is_noise(host)
        } else {
            is_noise_domain(host)
        }
    }
}

/// Windows system processes that run in every guest regardless of the sample.
pub fn is_noise_process(image: &str) -> bool {
    let lower = image.to_ascii_lowercase().replace('/', "\\");
    // NT object-manager prefix as in `\??\c:\windows\...`.
    let lower = lower.trim_start_matches("\\??\\").to_string();
    let name = lower.rsplit('\\').next().unwrap_or(&lower);
    let system_dir = lower.starts_with("c:\\windows\\system32\\")
        || lower.starts_with("c:\\program files\\windows defender\\")
        || lower.starts_with("c:\\programdata\\microsoft\\windows defender\\")
        || !lower.contains('\\');
    system_dir
        && matches!(
            name,
            "svchost.exe"
                | "lsass.exe"
                | "services.exe"
                | "wmiprvse.exe"
                | "sppextcomobj.exe"
                | "sppsvc.exe"
                | "taskhostw.exe"
                | "taskhost.exe"
                | "conhost.exe"
                | "dllhost.exe"
                | "searchindexer.exe"
                | "searchprotocolhost.exe"
                | "searchfilterhost.exe"
                | "wermgr.exe"
                | "werfault.exe"
                | "mpcmdrun.exe"
                | "msmpeng.exe"
                | "backgroundtaskhost.exe"
                | "runtimebroker.exe"
                | "compattelrunner.exe"
                | "smartscreen.exe"
                | "trustedinstaller.exe"
                | "tiworker.exe"
                | "audiodg.exe"
                | "ctfmon.exe"
                | "sihost.exe"
                | "wuauclt.exe"
                | "csrss.exe"
                | "winlogon.exe"
                | "smss.exe"
                | "spoolsv.exe"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise() {
        assert!(is_noise_domain("ctldl.windowsupdate.com"));
        assert!(is_noise_domain("ocsp.digicert.com"));
        assert!(is_noise_domain("time.windows.com"));
        assert!(!is_noise_domain("evil-c2.example.org"));
        assert!(!is_noise_domain("notmicrosoft.com"));
        assert!(is_noise_ip(&"224.0.0.252".parse().unwrap()));
        assert!(is_noise_ip(&"192.168.56.255".parse().unwrap()));
        assert!(!is_noise_ip(&"41.220.119.246".parse().unwrap()));
        assert!(is_noise_process("C:\\Windows\\system32\\svchost.exe"));
        assert!(!is_noise_process(
            "C:\\Windows\\SysWOW64\\structsreadand.exe"
        ));
    }
}
