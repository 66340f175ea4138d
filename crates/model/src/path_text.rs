//! Lossless text for Unix path bytes.
//!
//! A Unix path is a string of bytes, not of characters: `evil\xff.bin` is a perfectly good
//! file name. Detections, watcher objects, scan hits and quarantine records carry paths as
//! text (JSON, the database, the API), and a lossy conversion (`to_string_lossy`,
//! `display`) turns every such byte into U+FFFD — after which the agent can no longer find
//! the file to quarantine or delete it, and a sample only has to be named badly to stay.
//!
//! This module is the one way a path crosses that boundary, in both directions:
//!
//! * [`encode`] copies valid UTF-8 as it is, except `\`, which becomes `\\`; each byte that
//!   is not part of valid UTF-8 becomes `\xHH` (two lower-case hex digits), and so does
//!   each byte of a control character (a newline, an escape, U+0080–U+009F) or of a
//!   bidirectional override (U+202A–U+202E, U+2066–U+2069): a file named to fake a
//!   line of a report, to send commands to the terminal showing it, or to read as
//!   another extension, shows its name instead.
//! * [`decode`] undoes it: `\\` is `\`, `\xHH` is that byte, and any other backslash is kept
//!   as it is, so that a path typed by hand (`C:\temp` style names, a lone `\`) still means
//!   what it says.
//!
//! `decode(encode(p)) == p` for every byte string (see the tests), and text that is valid
//! UTF-8 without a backslash or a control character is the same in both forms, so every
//! ordinary path already in the database, the API and the tests keeps its spelling.
//!
//! The functions do no I/O; [`as_string`] plugs them into serde for `PathBuf` fields.

use std::borrow::Cow;

/// The text form of path bytes `bytes` (see the [module documentation](self)).
pub fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    encode_bytes_into(bytes, &mut out);
    out
}

/// [`encode_bytes`], appended to `out`: the sweep builds a device path (`/` and the
/// path below the device's root) in one allocation.
pub fn encode_bytes_into(bytes: &[u8], out: &mut String) {
    // Runs of valid text are copied whole: the sweep encodes the path of every file it
    // judges, and nearly all of them have nothing to escape.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let escape = |out: &mut String, b: u8| {
        out.push_str("\\x");
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    };
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        // Lead bytes of the ranges that hold hidden characters: 0xc2 (U+0080–U+00BF, the
        // C1 controls and the soft hyphen), 0xcd (U+0340–U+037F), 0xd8 (U+0600–U+063F),
        // 0xe1 (U+1000–U+1FFF), 0xe2 (U+2000–U+2FFF), 0xe3 (U+3000–U+3FFF), 0xef
        // (U+F000–U+FFFF), 0xf0 (U+10000–U+3FFFF) and 0xf3 (U+C0000–U+FFFFF).
        if !valid.bytes().any(|b| {
            matches!(
                b,
                b'\\' | 0
                    ..=0x1f | 0x7f | 0xc2 | 0xcd | 0xd8 | 0xe1 | 0xe2 | 0xe3 | 0xef | 0xf0 | 0xf3
            )
        }) {
            out.push_str(valid);
        } else {
            for c in valid.chars() {
                if c == '\\' {
                    out.push_str("\\\\");
                } else if hidden(c) {
                    for &b in c.encode_utf8(&mut [0; 4]).as_bytes() {
                        escape(out, b);
                    }
                } else {
                    out.push(c);
                }
            }
        }
        for &b in chunk.invalid() {
            escape(out, b);
        }
    }
}

/// Characters a path's text never shows as they are: controls (a newline, an escape,
/// C1), the bidirectional embeddings, overrides and isolates, with which
/// `invoice\u{202e}fdp.exe` reads as `invoiceexe.pdf`, and the characters that show as
/// nothing at all, with which two different names read alike.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Soft hyphen; combining grapheme joiner; Arabic letter mark; Hangul and
            // Khmer fillers and inherent vowels; Mongolian variation selectors and vowel
            // separator; zero-width spaces, joiners and direction marks; line and
            // paragraph separators, embeddings and overrides; word joiner, invisible
            // operators and isolates; Hangul fillers; the zero-width no-break space
            // (BOM); interlinear annotation marks; shorthand format controls; musical
            // invisible format characters; tags.
            '\u{00ad}'
                | '\u{034f}'
                | '\u{061c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `text` (a name that is not a path: a process's, a unit's) with the characters a path's
/// text never shows as they are ([`hidden`]) written `\xHH`, byte by byte.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max_chars` characters (`max_chars` ≥ 1), its end marked `…`
/// where it was cut: for a table cell or a log field that must stay bounded whatever a
/// caller typed.
pub fn shortened(text: &str, max_chars: usize) -> Cow<'_, str> {
    if text.chars().count() <= max_chars {
        return Cow::Borrowed(text);
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    Cow::Owned(cut)
}

/// The path bytes that `text` stands for: the inverse of [`encode_bytes`]. Never fails:
/// a backslash that starts neither `\\` nor `\xHH` is taken literally. Hex digits may be
/// of either case, and `\xHH` may name any byte, `/` and NUL included: check the decoded
/// path (as `riposte_host::HostRoot` does), never the text.
pub fn decode_bytes(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x') {
                if let Some(v) = b.get(i + 2..i + 4).and_then(hex_byte) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The path that `text` stands for as indicators compare it: its characters as they
/// are, a backslash, a newline or another control character included
/// (`back\slash.txt` is `back\slash.txt` to a term, not `back\\slash.txt`); only bytes
/// that are not UTF-8, which no character stands for, stay written `\xHH`, so that an
/// indicator can name such a file as reports do (and a lossy U+FFFD in their place would
/// confuse it with another file). Where a name holds such a byte, or a real backslash
/// followed by `x` and two hex digits, a backslash could be read as part of an escape:
/// there (in that name: each name of a path on its own) every real backslash is
/// written `\\`, as reports write it, so that `x\xff.bin`
/// (a byte 0xff), `x\\xff.bin` (a backslash, then `xff`) and `x\\\xff.bin` (a
/// backslash, then the byte) stay three names. Text with nothing escaped is itself (no
/// copy).
pub fn matching_text(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let bytes = decode_bytes(text);
    let mut out = String::with_capacity(bytes.len());
    // Name by name: how one is written does not depend on its directory's names, so
    // that a file name reads the same in FullPath as in FileName.
    for (i, name) in bytes.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let reads_as_an_escape = |at: usize| {
            name.get(at + 1) == Some(&b'x') && name.get(at + 2..at + 4).and_then(hex_byte).is_some()
        };
        let escaped = std::str::from_utf8(name).is_err()
            || (0..name.len()).any(|at| name[at] == b'\\' && reads_as_an_escape(at));
        for chunk in name.utf8_chunks() {
            if escaped {
                out.push_str(&chunk.valid().replace('\\', "\\\\"));
            } else {
                out.push_str(chunk.valid());
            }
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    Cow::Owned(out)
}

/// Two ASCII hex digits (either case) as a byte.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let value = |d: u8| (d as char).to_digit(16);
    match digits {
        [h, l] => Some((value(*h)? * 16 + value(*l)?) as u8),
        _ => None,
    }
}

/// The text form of a path (see the [module documentation](self)).
#[cfg(unix)]
pub fn encode(path: impl AsRef<std::ffi::OsStr>) -> String {
    use std::os::unix::ffi::OsStrExt;
    encode_bytes(path.as_ref().as_bytes())
}

/// The path that `text` stands for: the inverse of [`encode`]. As with [`decode_bytes`],
/// validate the path, not the text: `\x2e\x2e` decodes to `..`.
#[cfg(unix)]
pub fn decode(text: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    if needs_decoding(text) {
        std::ffi::OsString::from_vec(decode_bytes(text)).into()
    } else {
        // The common case: nothing to undo, no byte-by-byte copy.
        std::path::PathBuf::from(text)
    }
}

/// The canonical spelling of `text`: what [`encode`] gives for the path `text` stands
/// for. A hand-typed `a\b` becomes `a\\b`; what `encode` wrote comes back unchanged.
pub fn canonical(text: &str) -> Cow<'_, str> {
    if needs_decoding(text) || text.chars().any(hidden) {
        Cow::Owned(encode_bytes(&decode_bytes(text)))
    } else {
        Cow::Borrowed(text)
    }
}

/// Only a backslash starts an escape: text without one is its own decoding.
fn needs_decoding(text: &str) -> bool {
    text.contains('\\')
}

/// Serde for `PathBuf` fields kept as [`encode`]d text:
/// `#[serde(with = "riposte_model::path_text::as_string")]`.
///
/// Plain serde refuses to serialise a path that is not UTF-8 (and a lossy copy could not
/// find the file again); through this module any path is stored, and an ordinary one is
/// stored exactly as before.
#[cfg(unix)]
pub mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::{Path, PathBuf};

    /// Writes `path` as its [`encode`](super::encode)d text.
    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(path))
    }

    /// Reads a path from its [`encode`](super::encode)d text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let text = String::deserialize(d)?;
        Ok(super::decode(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_text_is_the_characters_with_only_non_utf8_bytes_escaped() {
        assert!(matches!(matching_text("/tmp/plain.txt"), Cow::Borrowed(_)));
        assert_eq!(
            matching_text(&encode_bytes(b"/t/back\\slash.txt")),
            "/t/back\\slash.txt"
        );
        assert_eq!(
            matching_text(&encode_bytes(b"/t/new\nline")),
            "/t/new\nline"
        );
        assert_eq!(
            matching_text(&encode_bytes("/t/a\u{202e}b".as_bytes())),
            "/t/a\u{202e}b"
        );
        assert_eq!(
            matching_text(&encode_bytes(b"/t/odd\xff\xfe.bin")),
            "/t/odd\\xff\\xfe.bin"
        );
        // A real backslash that would read as a byte's escape is written as reports
        // write it; one that would not stays as it is.
        assert_eq!(
            matching_text(&encode_bytes(b"/t/x\\xff.bin")),
            "/t/x\\\\xff.bin"
        );
        assert_eq!(
            matching_text(&encode_bytes(b"/t/x\\xzz\\x.bin")),
            "/t/x\\xzz\\x.bin"
        );
        // Names that differ stay different, however backslashes and bytes that are not
        // UTF-8 sit next to each other.
        let names: [&[u8]; 7] = [
            b"x\xff.bin",
            b"x\\xff.bin",
            b"x\\\xff.bin",
            b"x\\\\xff.bin",
            b"x\\\\\xff.bin",
            b"a\\b\xff",
            b"a\\\\b\xff",
        ];
        let texts: std::collections::HashSet<String> = names
            .iter()
            .map(|n| matching_text(&encode_bytes(n)).into_owned())
            .collect();
        assert_eq!(texts.len(), names.len(), "{texts:?}");
        // A name is written the same whatever its directory's names hold.
        assert_eq!(matching_text(&encode_bytes(b"/d\xff/a\\b")), "/d\\xff/a\\b");
    }

    /// The fast path of `encode_bytes` (a run with no lead byte of a hidden character is
    /// copied whole) agrees with `hidden` on every character.
    #[test]
    fn every_hidden_character_is_escaped_and_no_other() {
        for c in (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| c != '\\')
        {
            let text = format!("a{c}b");
            let escaped = encode_bytes(text.as_bytes()) != text;
            assert_eq!(escaped, hidden(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn shortened_keeps_short_text_and_marks_a_cut() {
        assert_eq!(shortened("abc", 3), "abc");
        assert_eq!(shortened("abcd", 3), "ab…");
        assert_eq!(shortened("éééé", 2), "é…");
    }

    #[test]
    fn examples() {
        let cases: &[(&[u8], &str)] = &[
            (b"/home/alice/evil.bin", "/home/alice/evil.bin"),
            (b"/tmp/evil\xff\xfe.bin", "/tmp/evil\\xff\\xfe.bin"),
            (b"a\\b", "a\\\\b"),
            (b"\\x41", "\\\\x41"),
            (b"\\", "\\\\"),
            (
                "/tmp/caf\u{e9}/\u{1F600}".as_bytes(),
                "/tmp/caf\u{e9}/\u{1F600}",
            ),
            // A truncated multibyte sequence is invalid: each byte is escaped.
            (b"\xe2\x82", "\\xe2\\x82"),
            (b"ok\xc3\xa9\xc3", "ok\u{e9}\\xc3"),
            (b"", ""),
            // Control characters: a fake report line, a terminal escape, a C1 CSI.
            (b"/tmp/new\nline.exe", "/tmp/new\\x0aline.exe"),
            (b"a\x1b[2Jb\x7f\t", "a\\x1b[2Jb\\x7f\\x09"),
            ("x\u{9b}31m\u{a3}".as_bytes(), "x\\xc2\\x9b31m\u{a3}"),
            // A right-to-left override (invoice<RLO>fdp.exe reads as invoiceexe.pdf).
            (
                "invoice\u{202e}fdp.exe \u{2014}".as_bytes(),
                "invoice\\xe2\\x80\\xaefdp.exe \u{2014}",
            ),
        ];
        for (bytes, text) in cases {
            assert_eq!(encode_bytes(bytes), *text, "{bytes:?}");
            assert_eq!(decode_bytes(text), *bytes, "{text:?}");
        }
    }

    #[test]
    fn a_hand_typed_backslash_is_kept() {
        for (typed, bytes) in [
            ("C:\\temp", &b"C:\\temp"[..]),
            ("\\", b"\\"),
            ("end\\x", b"end\\x"),
            ("\\x4", b"\\x4"),
            ("\\xzz", b"\\xzz"),
            ("\\xFF", b"\xff"),
            ("\\x41", b"A"),
        ] {
            assert_eq!(decode_bytes(typed), bytes, "{typed:?}");
        }
        assert_eq!(canonical("a\\b"), "a\\\\b");
        assert_eq!(canonical("raw\nline"), "raw\\x0aline");
        assert_eq!(
            shown("top\u{202e}gpj.sh\t\\"),
            "top\\xe2\\x80\\xaegpj.sh\\x09\\"
        );
        assert!(matches!(shown("plain \u{2014} name"), Cow::Borrowed(_)));
        for c in [
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{2028}',
            '\u{feff}',
            '\u{200b}',
            // Characters that show as nothing: a soft hyphen, a Mongolian vowel
            // separator, a Hangul filler, an interlinear annotation mark, a tag.
            '\u{00ad}',
            '\u{180e}',
            '\u{3164}',
            '\u{fff9}',
            '\u{e0041}',
        ] {
            let name = format!("a{c}b");
            assert_eq!(encode(&name).matches("\\x").count(), c.len_utf8(), "{c:?}");
            assert_eq!(decode(&encode(&name)), std::path::Path::new(&name));
        }
        assert_eq!(
            encode("\u{0627}\u{0644}\u{fe8e}"),
            "\u{0627}\u{0644}\u{fe8e}"
        );
        assert_eq!(canonical("/tmp/e\\xff"), "/tmp/e\\xff");
        assert!(matches!(canonical("/plain/path"), Cow::Borrowed(_)));
    }

    /// A small deterministic generator, so that a failure is reproducible without a
    /// property-testing dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    /// Random bytes biased towards what could confuse the encoding: backslashes, `x`,
    /// hex digits, invalid bytes, and whole or partial multibyte sequences.
    fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"\\",
            b"x",
            b"\\x",
            b"\\\\",
            b"ff",
            b"4",
            b"A",
            b"/",
            b".",
            b"\xff",
            b"\xfe",
            b"\x80",
            b"\xc3",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
            b"\xe2\x82",
            b"\xf0\x9f\x98\x80",
            b"\xf0\x9f",
            b"\xed\xa0\x80",
            b"\0",
            b"\n",
        ];
        let len = rng.below(24);
        let mut v = Vec::new();
        for _ in 0..len {
            match rng.below(3) {
                0 => v.push(rng.next() as u8),
                _ => v.extend_from_slice(PIECES[rng.below(PIECES.len() as u64)]),
            }
        }
        v
    }

    #[test]
    fn decode_undoes_encode_for_any_bytes() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..50_000 {
            let bytes = random_bytes(&mut rng);
            let text = encode_bytes(&bytes);
            assert_eq!(decode_bytes(&text), bytes, "{bytes:?} → {text:?}");
            assert_eq!(canonical(&text), text, "encoded text is canonical");
            assert!(
                !text.contains('\u{fffd}') || bytes.windows(3).any(|w| w == "\u{fffd}".as_bytes()),
                "no replacement character is invented: {bytes:?} → {text:?}"
            );
        }
    }

    #[test]
    fn utf8_without_backslashes_or_controls_is_unchanged_both_ways() {
        let mut rng = XorShift(42);
        for _ in 0..20_000 {
            let s: String = String::from_utf8_lossy(&random_bytes(&mut rng))
                .chars()
                .filter(|c| *c != '\\' && !hidden(*c))
                .collect();
            assert_eq!(encode_bytes(s.as_bytes()), s);
            assert_eq!(decode_bytes(&s), s.as_bytes());
            assert!(matches!(canonical(&s), Cow::Borrowed(_)));
        }
    }

    #[cfg(unix)]
    #[test]
    fn paths_and_serde() {
        use std::os::unix::ffi::OsStrExt;
        use std::path::{Path, PathBuf};
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/watched/evil\xff\xfe.bin"));
        assert_eq!(encode(p), "/watched/evil\\xff\\xfe.bin");
        assert_eq!(decode(&encode(p)), p);
        assert_eq!(decode("/etc/passwd"), Path::new("/etc/passwd"));

        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Record {
            #[serde(with = "as_string")]
            path: PathBuf,
        }
        let r = Record { path: p.into() };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"path":"/watched/evil\\xff\\xfe.bin"}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        // Records written before this module read the same.
        let old: Record = serde_json::from_str(r#"{"path":"/home/u/x"}"#).unwrap();
        assert_eq!(old.path, Path::new("/home/u/x"));
    }
}
