//! Render a report's IOCs as an OpenIOC 1.1 document.
//!
//! Why: the fleet sweep (crate `riposte-ioc`) evaluates OpenIOC 1.1, so a sandbox
//! verdict becomes a hunt across all endpoints without a translation step. Each IOC
//! becomes one `Indicator` branch under a top-level `OR`; a network destination is an
//! `AND` of remote IP and port.

use std::fmt::Write;

use crate::report::Report;
use crate::util::{rfc3339, uuid4};

/// The OpenIOC 1.1 namespace.
pub const NAMESPACE: &str = "http://openioc.org/schemas/OpenIOC_1.1";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

fn item(out: &mut String, indent: &str, document: &str, search: &str, ctype: &str, value: &str) {
    let _ = write!(
        out,
        "{indent}<IndicatorItem id=\"{}\" condition=\"is\" preserve-case=\"false\" negate=\"false\">\n\
         {indent}  <Context document=\"{document}\" search=\"{search}\" type=\"mir\" />\n\
         {indent}  <Content type=\"{ctype}\">{}</Content>\n\
         {indent}</IndicatorItem>\n",
        uuid4(),
        esc(value)
    );
}

/// Render `report`'s IOCs as an OpenIOC 1.1 XML document.
pub fn render(report: &Report) -> String {
    let now = rfc3339(report.analysed_at);
    let mut out = String::new();
    let desc = match &report.threat_name {
        Some(t) => format!("{:?} ({t}) from {}", report.verdict, report.source),
        None => format!("{:?} from {}", report.verdict, report.source),
    };
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <OpenIOC xmlns=\"{NAMESPACE}\" id=\"{}\" last-modified=\"{now}\" published-date=\"{now}\">\n\
         \x20 <metadata>\n\
         \x20   <short_description>{}</short_description>\n\
         \x20   <description>{}</description>\n\
         \x20   <authored_by>riposte-sandbox</authored_by>\n\
         \x20   <authored_date>{now}</authored_date>\n\
         \x20   <links />\n\
         \x20 </metadata>\n\
         \x20 <criteria>\n\
         \x20   <Indicator operator=\"OR\" id=\"{}\">\n",
        uuid4(),
        esc(&format!("riposte sandbox: {}", report.object_name)),
        esc(&desc),
        uuid4()
    );
    let ind = "      ";
    let iocs = &report.iocs;
    let files = iocs.object.iter().chain(iocs.dropped_files.iter());
    for f in files {
        if !f.md5.is_empty() {
            item(&mut out, ind, "FileItem", "FileItem/Md5sum", "md5", &f.md5);
        }
        if !f.sha1.is_empty() {
            item(
                &mut out,
                ind,
                "FileItem",
                "FileItem/Sha1sum",
                "sha1",
                &f.sha1,
            );
        }
        if !f.sha256.is_empty() {
            item(
                &mut out,
                ind,
                "FileItem",
                "FileItem/Sha256sum",
                "sha256",
                &f.sha256,
            );
        }
    }
    // One term per executable even when it ran with several command lines.
    let mut seen = std::collections::HashSet::new();
    for p in &iocs.processes {
        if seen.insert(p.path.as_str()) {
            item(
                &mut out,
                ind,
                "ProcessItem",
                "ProcessItem/path",
                "string",
                &p.path,
            );
        }
    }
    for d in &iocs.destinations {
        match d.port {
            Some(port) => {
                let _ = writeln!(out, "{ind}<Indicator operator=\"AND\" id=\"{}\">", uuid4());
                let inner = format!("{ind}  ");
                item(
                    &mut out,
                    &inner,
                    "PortItem",
                    "PortItem/remoteIP",
                    "IP",
                    &d.ip,
                );
                item(
                    &mut out,
                    &inner,
                    "PortItem",
                    "PortItem/remotePort",
                    "int",
                    &port.to_string(),
                );
                let _ = writeln!(out, "{ind}</Indicator>");
            }
            None => item(&mut out, ind, "PortItem", "PortItem/remoteIP", "IP", &d.ip),
        }
    }
    for d in &iocs.domains {
        item(
            &mut out,
            ind,
            "DnsEntryItem",
            "DnsEntryItem/Host",
            "string",
            d,
        );
    }
    for u in &iocs.urls {
        item(
            &mut out,
            ind,
            "UrlHistoryItem",
            "UrlHistoryItem/URL",
            "string",
            u,
        );
    }
    for p in &iocs.persistence {
        if p.location.starts_with("HKEY_")
            || p.location.starts_with("HK") && p.location.contains('\\')
        {
            item(
                &mut out,
                ind,
                "RegistryItem",
                "RegistryItem/Path",
                "string",
                &p.location,
            );
        } else {
            item(
                &mut out,
                ind,
                "FileItem",
                "FileItem/FullPath",
                "string",
                &p.location,
            );
        }
    }
    out.push_str("    </Indicator>\n  </criteria>\n</OpenIOC>\n");
    out
}
