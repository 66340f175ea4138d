//! Builds an OpenIOC 1.1 document from detection data (hashes and sizes of malicious
//! objects), for the autonomous IOC-scan task: once one device detects a file, every
//! other device sweeps for it. Each object becomes `AND(SizeInBytes is N, <hash> is H)`
//! so that a sweeping device only hashes files of exactly that size.

use crate::value::format_datetime;

/// One malicious object as seen by a detection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectedObject {
    /// Size in bytes, when known (strongly recommended: it avoids hashing other files).
    pub size: Option<u64>,
    /// MD5, hex.
    pub md5: Option<String>,
    /// SHA-1, hex.
    pub sha1: Option<String>,
    /// SHA-256, hex.
    pub sha256: Option<String>,
    /// File name, informational (put in a comment-free `FileName` only if no hash).
    pub name: Option<String>,
}

/// Detection data to turn into an indicator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    /// Indicator id; when empty one is derived from the content (stable for equal input).
    pub id: String,
    /// Short description, e.g. the detection name.
    pub name: String,
    /// Longer description.
    pub description: String,
    /// Author recorded in the metadata.
    pub author: String,
    /// Authoring time, Unix seconds.
    pub time: i64,
    /// The objects.
    pub objects: Vec<DetectedObject>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fnv(data: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn uuid_like(data: &str) -> String {
    let a = fnv(data, 1);
    let b = fnv(data, 2);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Generates an OpenIOC 1.1 XML document matching any of the detected objects.
///
/// Per object the strongest valid hash is used (SHA-256, then SHA-1, then MD5), ANDed
/// with `SizeInBytes` when the size is known. Objects with no valid hash but a name
/// are matched by `FileName`; objects with neither are left out.
pub fn ioc_from_detection(detection: &Detection) -> String {
    let mut items = String::new();
    let mut n = 0usize;
    let mut item = |out: &mut String, search: &str, ty: &str, value: &str, key: &str| {
        n += 1;
        let id = uuid_like(&format!("{key}/{n}/{search}/{value}"));
        out.push_str(&format!(
            "        <IndicatorItem id=\"{id}\" condition=\"is\" preserve-case=\"false\" negate=\"false\">\n          <Context document=\"FileItem\" search=\"{search}\" type=\"mir\" />\n          <Content type=\"{ty}\">{}</Content>\n        </IndicatorItem>\n",
            esc(value)
        ));
    };
    for (i, o) in detection.objects.iter().enumerate() {
        let hash = [
            (&o.sha256, 64, "FileItem/Sha256sum", "sha256"),
            (&o.sha1, 40, "FileItem/Sha1sum", "sha1"),
            (&o.md5, 32, "FileItem/Md5sum", "md5"),
        ]
        .into_iter()
        .find_map(|(h, len, search, ty)| {
            h.as_deref()
                .map(str::trim)
                .filter(|h| is_hex(h, len))
                .map(|h| (h.to_ascii_lowercase(), search, ty))
        });
        let key = format!("{}/{i}", detection.id);
        let mut body = String::new();
        match (&hash, &o.name) {
            (Some((h, search, ty)), _) => {
                if let Some(size) = o.size {
                    item(
                        &mut body,
                        "FileItem/SizeInBytes",
                        "int",
                        &size.to_string(),
                        &key,
                    );
                }
                item(&mut body, search, ty, h, &key);
            }
            (None, Some(name)) if !name.is_empty() => {
                if let Some(size) = o.size {
                    item(
                        &mut body,
                        "FileItem/SizeInBytes",
                        "int",
                        &size.to_string(),
                        &key,
                    );
                }
                item(&mut body, "FileItem/FileName", "string", name, &key);
            }
            _ => continue,
        }
        let and_id = uuid_like(&format!("{key}/and"));
        items.push_str(&format!(
            "      <Indicator operator=\"AND\" id=\"{and_id}\">\n{body}      </Indicator>\n"
        ));
    }
    let id = if detection.id.is_empty() {
        uuid_like(&items)
    } else {
        detection.id.clone()
    };
    let or_id = uuid_like(&format!("{id}/or"));
    let when = format_datetime(detection.time);
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<OpenIOC xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\" id=\"{}\" last-modified=\"{when}\" published-date=\"{when}\">\n  <metadata>\n    <short_description>{}</short_description>\n    <description>{}</description>\n    <authored_by>{}</authored_by>\n    <authored_date>{when}</authored_date>\n    <links />\n  </metadata>\n  <criteria>\n    <Indicator operator=\"OR\" id=\"{or_id}\">\n{items}    </Indicator>\n  </criteria>\n  <parameters />\n</OpenIOC>\n",
        esc(&id),
        esc(&detection.name),
        esc(&detection.description),
        esc(&detection.author),
    )
}
