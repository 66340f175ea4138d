//! PCRE spellings rewritten into this engine's syntax.
//!
//! STIX's `MATCHES` is PCRE, and OpenIOC's `matches` is whatever its editors tested with
//! (PCRE, or .NET, which reads these spellings the same way). The `regex` crate refuses
//! some of their everyday syntax as broken: a brace that starts no quantifier (`x{abc}`,
//! a CLSID's `{…}`), `\h`, `\Z`, `\e`, `\cA`, octal `\053`, `\Q…\E`, a hyphen after a
//! class escape (`[\w-.]`). Refused, such an expression failed its whole document.
//!
//! [`to_rust`] rewrites those into an expression that matches exactly the same texts, so
//! that only what this engine truly lacks (look-around, back-references, atomic groups,
//! possessive quantifiers: see [`crate::value::regex_beyond_this_engine`]) is left
//! unsupported, and only what PCRE refuses too is an error. What it does not know it
//! leaves as written, for the engine's parser to judge.
//!
//! A term only asks whether an expression matches, never where: `\K` (which moves the
//! start of the reported match) is dropped, and `\Z` may consume the final newline it
//! allows.

use std::borrow::Cow;

/// PCRE's `\h`: horizontal white space.
const HORIZONTAL_SPACE: &str =
    r"\t\x20\xA0\x{1680}\x{180E}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}";
/// PCRE's `\v`: vertical white space (in this engine, `\v` is only the vertical tab).
const VERTICAL_SPACE: &str = r"\n\x0B\x0C\r\x85\x{2028}\x{2029}";

/// `pattern`, a PCRE expression, in this engine's syntax: borrowed when nothing needed
/// rewriting. See the module's documentation for what is rewritten.
pub fn to_rust(pattern: &str) -> Cow<'_, str> {
    // Most expressions hold none of the spellings rewritten here.
    if !pattern.contains(['\\', '{', '[', '(', '$']) {
        return Cow::Borrowed(pattern);
    }
    let chars: Vec<char> = pattern.chars().collect();
    let multi_line = sets_multi_line(&chars);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i = escape(&chars, i, &mut out, false),
            '[' => i = class(&chars, i, &mut out),
            // PCRE's `$` also holds before a final newline (this engine's only at the
            // very end), unless multi-line mode makes it the end of any line in both.
            // Only where nothing can follow it in the match (the end, a `)` or a `|`):
            // `a$\n` still needs the newline, as in PCRE.
            '$' if !multi_line && ends_a_branch(&chars, i + 1) => {
                out.push_str(r"(?:\n?\z)");
                i += 1;
            }
            '{' => {
                match quantifier_end(&chars, i) {
                    Some(end) => out.extend(&chars[i..end]),
                    // PCRE reads a brace that starts no quantifier as itself.
                    None => out.push_str(r"\{"),
                }
                i = quantifier_end(&chars, i).unwrap_or(i + 1);
            }
            '(' if chars[i + 1..].starts_with(&['?', '#']) => {
                // A comment group: PCRE skips it up to the first `)`.
                match chars[i..].iter().position(|&c| c == ')') {
                    Some(n) => i += n + 1,
                    None => {
                        // Unclosed: left for the parser to refuse, as PCRE does.
                        out.extend(&chars[i..]);
                        i = chars.len();
                    }
                }
            }
            '(' if chars[i + 1..].starts_with(&['?', '\'']) => {
                // `(?'name'…)`: the named group this engine writes `(?<name>…)`.
                match chars[i + 3..].iter().position(|&c| c == '\'') {
                    Some(n) => {
                        out.push_str("(?<");
                        out.extend(&chars[i + 3..i + 3 + n]);
                        out.push('>');
                        i += 3 + n + 1;
                    }
                    None => {
                        out.push('(');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out == pattern {
        Cow::Borrowed(pattern)
    } else {
        Cow::Owned(out)
    }
}

/// Whether an inline flag group (`(?m)`, `(?im:…)`) outside any class or escape turns
/// multi-line mode on, where `$` is the end of any line, in PCRE as here.
fn sets_multi_line(chars: &[char]) -> bool {
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class && chars.get(i + 1) == Some(&'?') => {
                let flags = chars[i + 2..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic() || **c == '-');
                let mut on = true;
                for &c in flags {
                    match c {
                        '-' => on = false,
                        'm' if on => return true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether nothing can follow position `at` in a match: the pattern's end, a `)` or a
/// `|`.
fn ends_a_branch(chars: &[char], at: usize) -> bool {
    matches!(chars.get(at), None | Some(')') | Some('|'))
}

/// The end of the quantifier `{n}`, `{n,}` or `{n,m}` starting at `at`, if one does.
fn quantifier_end(chars: &[char], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while chars.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (chars.get(i) == Some(&'}')).then_some(i + 1)
}

/// Writes the escape at `chars[at]` (a backslash) in this engine's syntax; returns where
/// the next token starts. `in_class`: inside `[…]`, where `\b` is a backspace.
fn escape(chars: &[char], at: usize, out: &mut String, in_class: bool) -> usize {
    let Some(&c) = chars.get(at + 1) else {
        // A trailing backslash: broken in both.
        out.push('\\');
        return at + 1;
    };
    let code = |out: &mut String, n: u32| out.push_str(&format!(r"\x{{{n:X}}}"));
    match c {
        'Q' => {
            let start = at + 2;
            let end = (start..chars.len())
                .find(|&j| chars[j] == '\\' && chars.get(j + 1) == Some(&'E'))
                .unwrap_or(chars.len());
            for &q in &chars[start..end] {
                out.push_str(&regex_syntax::escape(q.encode_utf8(&mut [0; 4])));
            }
            (end + 2).min(chars.len())
        }
        // A `\E` with no `\Q` before it: PCRE ignores it.
        'E' => at + 2,
        // Where the reported match starts: nothing to whether there is one.
        'K' if !in_class => at + 2,
        'Z' if !in_class => {
            out.push_str(if ends_a_branch(chars, at + 2) {
                r"(?:\n?\z)"
            } else {
                r"\z"
            });
            at + 2
        }
        'h' | 'H' | 'v' | 'V' => {
            let set = if c.eq_ignore_ascii_case(&'h') {
                HORIZONTAL_SPACE
            } else {
                VERTICAL_SPACE
            };
            let negated = if c.is_ascii_uppercase() { "^" } else { "" };
            out.push_str(&format!("[{negated}{set}]"));
            at + 2
        }
        'R' if !in_class => {
            out.push_str(&format!(r"(?:\r\n|[{VERTICAL_SPACE}])"));
            at + 2
        }
        'N' if !in_class && chars.get(at + 2) != Some(&'{') => {
            out.push_str(r"[^\n]");
            at + 2
        }
        'e' => {
            code(out, 0x1B);
            at + 2
        }
        'a' => {
            code(out, 0x07);
            at + 2
        }
        'b' if in_class => {
            code(out, 0x08);
            at + 2
        }
        'c' => match chars.get(at + 2) {
            Some(x) if x.is_ascii() && !x.is_ascii_control() => {
                code(out, u32::from(x.to_ascii_uppercase() as u8 ^ 0x40));
                at + 3
            }
            _ => {
                out.push_str(r"\c");
                at + 2
            }
        },
        // `\0` and up to two more octal digits.
        '0' => {
            let mut j = at + 2;
            let mut n = 0;
            while j < at + 4 && chars.get(j).is_some_and(|d| ('0'..='7').contains(d)) {
                n = n * 8 + chars[j].to_digit(8).unwrap_or(0);
                j += 1;
            }
            code(out, n);
            j
        }
        'o' if chars.get(at + 2) == Some(&'{') => {
            let digits_end = (at + 3..chars.len()).find(|&j| chars[j] == '}');
            let value = digits_end.and_then(|e| {
                let text: String = chars[at + 3..e].iter().collect();
                u32::from_str_radix(&text, 8)
                    .ok()
                    .filter(|&n| char::from_u32(n).is_some())
            });
            match (digits_end, value) {
                (Some(e), Some(n)) => {
                    code(out, n);
                    e + 1
                }
                // Broken: left for the parser to refuse.
                _ => {
                    out.push_str(r"\o");
                    at + 2
                }
            }
        }
        'x' if chars.get(at + 2) != Some(&'{') => {
            // PCRE takes up to two hex digits, none meaning NUL.
            let mut j = at + 2;
            let mut n = 0;
            while j < at + 4 && chars.get(j).is_some_and(char::is_ascii_hexdigit) {
                n = n * 16 + chars[j].to_digit(16).unwrap_or(0);
                j += 1;
            }
            if j == at + 4 {
                // `\xHH`, which this engine reads alike.
                out.extend(&chars[at..j]);
            } else {
                code(out, n);
            }
            j
        }
        // `\G` first is where the match must start: the start of the text, here.
        'G' if at == 0 => {
            out.push_str(r"\A");
            at + 2
        }
        // `\p{…}`, `\x{…}` and the named references `\k{…}`, `\g{…}` keep their
        // braces: no quantifier there. (A reference is then told unsupported by name.)
        'p' | 'P' | 'x' | 'k' | 'g' if chars.get(at + 2) == Some(&'{') => {
            let end = (at + 3..chars.len())
                .find(|&j| chars[j] == '}')
                .map_or(chars.len(), |e| e + 1);
            out.extend(&chars[at..end]);
            end
        }
        // In PCRE an escaped sign is that sign; this engine reads `\<` and `\>` as word
        // boundaries.
        '<' | '>' => {
            out.push(c);
            at + 2
        }
        _ => {
            out.push('\\');
            out.push(c);
            at + 2
        }
    }
}

/// Writes the class `[…]` starting at `chars[at]`; returns where the next token starts.
fn class(chars: &[char], at: usize, out: &mut String) -> usize {
    out.push('[');
    let mut i = at + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first is itself, in PCRE as here.
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    // After a class escape or a POSIX class, a hyphen is itself in PCRE (`[\w-.]`); this
    // engine would read it as a range and refuse it.
    let mut after_set = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ']' => {
                out.push(']');
                return i + 1;
            }
            '\\' => {
                let set = chars
                    .get(i + 1)
                    .is_some_and(|e| "dDsSwWhHvVpP".contains(*e));
                i = escape(chars, i, out, true);
                after_set = set;
                continue;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // A POSIX class, `[:alpha:]` or `[:^alpha:]`: letters only, up to `:]`.
                let start = i + 2 + usize::from(chars.get(i + 2) == Some(&'^'));
                let letters = chars[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
                let end = start + letters;
                if letters > 0 && chars.get(end..end + 2) == Some(&[':', ']'][..]) {
                    out.extend(&chars[i..end + 2]);
                    i = end + 2;
                    after_set = true;
                    continue;
                }
                out.push_str(r"\[");
            }
            // Nested classes and set operations are this engine's, not PCRE's: there
            // these are themselves.
            '[' => out.push_str(r"\["),
            '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '-' if after_set => out.push_str(r"\-"),
            // `--` is this engine's set difference; in PCRE the second is itself.
            '-' if chars[i - 1] == '-' => out.push_str(r"\-"),
            c => out.push(c),
        }
        after_set = false;
        i += 1;
    }
    // Unclosed: left for the parser to refuse, as PCRE does.
    i
}

#[cfg(test)]
mod tests {
    use super::to_rust;

    fn matches(pcre: &str, text: &str) -> bool {
        let rust = to_rust(pcre);
        regex::Regex::new(&rust)
            .unwrap_or_else(|e| panic!("{pcre} -> {rust}: {e}"))
            .is_match(text)
    }

    #[test]
    fn everyday_expressions_are_left_as_written() {
        for p in [
            r"^evil\d{2,4}\.(exe|dll)\z",
            r"a{3}b{1,}c{2,5}",
            r"[a-z0-9_]+\s\w\W\D\S\b\B",
            r"\x41\x{263A}\p{L}\pL\P{Greek}",
            r"(?i)(?<name>x)(?P<other>y)",
            r"[[:alpha:]][^[:digit:]]",
            r"\.\*\+\?\(\)\[\]\{\}\|\^\$\\\/\-",
            r"\Aabc\z",
        ] {
            assert_eq!(to_rust(p), p, "{p}");
        }
    }

    #[test]
    fn braces_that_start_no_quantifier_are_themselves() {
        assert!(matches(r"^\{[0-9A-F]{8}\}$", "{DEADBEEF}"));
        assert!(matches(r"^{[0-9A-F]{8}}$", "{DEADBEEF}"));
        assert!(!matches(r"^{[0-9A-F]{8}}$", "DEADBEEF"));
        assert!(matches(r"x{abc}", "x{abc}"));
        // PCRE1 and .NET: `{,3}` is no quantifier.
        assert!(matches(r"^a{,3}$", "a{,3}"));
        assert!(!matches(r"^a{,3}$", "aa"));
        assert!(matches(r"a{3", "a{3"));
        assert!(matches(r"^x{abc}+$", "x{abc}}}"));
        assert!(matches(r"^{+$", "{{"));
        assert!(matches(r"^a{2}$", "aa"));
        assert!(matches(r"^a{2,}$", "aaa"));
    }

    #[test]
    fn pcre_escapes_mean_what_they_mean_in_pcre() {
        assert!(matches(r"^a\hb$", "a\u{a0}b"));
        assert!(!matches(r"^a\hb$", "a\nb"));
        assert!(matches(r"^a\Hb$", "axb"));
        assert!(matches(r"^a\vb$", "a\nb"));
        assert!(!matches(r"^a\vb$", "a b"));
        assert!(matches(r"^a\Vb$", "a b"));
        assert!(matches(r"^a\Rb$", "a\r\nb"));
        assert!(matches(r"^a\Nb$", "axb"));
        assert!(!matches(r"^a\Nb$", "a\nb"));
        assert!(matches(r"^\e\a\cA\cz$", "\x1b\x07\x01\x1a"));
        assert!(matches(r"^ab\053$", "ab+"));
        assert!(matches(r"^\0$", "\0"));
        assert!(matches(r"^\o{101}$", "A"));
        assert!(matches(r"^\x4$", "\x04"));
        assert!(matches(r"^a\x$", "a\0"));
        assert!(matches(r"^\x41B$", "AB"));
        assert!(matches(r"evil\.exe\Z", "evil.exe"));
        assert!(matches(r"evil\.exe\Z", "evil.exe\n"));
        assert!(!matches(r"evil\.exe\Z", "evil.exe\nx"));
        assert!(matches(r"^ab\Kc$", "abc"));
        // `$` holds before a final newline too, as in PCRE, but not before another
        // one; in multi-line mode it is any line's end, as in both.
        assert!(matches(r"^evil\.exe$", "evil.exe\n"));
        assert!(!matches(r"^evil\.exe$", "evil.exe\nx"));
        assert!(matches(r"(?m)^a$", "a\nb"));
        // Where something follows it, `$` is this engine's end of the text, and so is
        // `\Z` (a rewrite that took the newline would need it twice).
        assert!(matches(r"a\Z|b", "a\n"));
        assert!(!matches(r"a\Z\n", "a\n"));
        assert!(matches(r"^(a$|b)", "a\n"));
        // Only a real flag group turns multi-line mode on.
        assert!(matches(r"^foo\(?mode$", "foomode\n"));
        assert!(!matches(r"(?-m)^a$", "a\nb"));
        assert!(matches(r"^a[$]$", "a$"));
        // An escaped sign is that sign: `\<` is no word boundary.
        assert!(matches(r"^a\<b\>c$", "a<b>c"));
        assert!(matches(r"\Gabc", "abcd"));
        assert!(!matches(r"\Gabc", "xabc"));
    }

    #[test]
    fn quoted_sequences_and_comments() {
        assert!(matches(r"^\Qa.b*c\E$", "a.b*c"));
        assert!(!matches(r"^\Qa.b*c\E$", "axbbc"));
        assert!(matches(r"^\Qa.b", "a.b"));
        assert!(matches(r"^a(?#a comment)b$", "ab"));
        assert!(matches(r"^(?'n'ab)$", "ab"));
        assert!(matches(r"^a\Eb$", "ab"));
    }

    #[test]
    fn classes_read_as_pcre_reads_them() {
        assert!(matches(r"^[\w-.]+$", "a-b.c"));
        assert!(matches(r"^[\d-z]+$", "1-z"));
        assert!(!matches(r"^[\d-z]+$", "y"));
        assert!(matches(r"^[[:alpha:]-]+$", "a-b"));
        assert!(matches(r"^[]a]+$", "]a"));
        assert!(matches(r"^[^]a]+$", "bc"));
        assert!(matches(r"^[a[]+$", "a["));
        assert!(matches(r"^[a&&b]+$", "a&b"));
        assert!(matches(r"^[a~~b]+$", "~"));
        assert!(matches(r"^[\h]+$", " \t"));
        assert!(matches(r"^[\H]+$", "ab"));
        assert!(matches(r"^[\b]$", "\x08"));
        assert!(matches(r"^[\Qa]\E]+$", "a]"));
        assert!(matches(r"^[+--]$", "-"));
        assert!(matches(r"^[[:;]\d+[a-f:]+$", "[2a"));
        assert!(matches(r"^[[:;]\d+[a-f:]+$", ";2a"));
        assert!(matches(r"^[[:^digit:]]+$", "ab"));
    }

    /// What is broken in PCRE stays broken: the parser refuses it after the rewrite.
    /// Named references keep their braces, to be told unsupported by name.
    #[test]
    fn named_references_keep_their_braces() {
        assert_eq!(to_rust(r"(?<n>a)\k{n}"), r"(?<n>a)\k{n}");
        assert_eq!(to_rust(r"(a)\g{1}"), r"(a)\g{1}");
    }

    #[test]
    fn broken_expressions_stay_broken() {
        for p in [r"(ab", r"[ab", r"ab\", r"a\o{9}", r"(?#unclosed"] {
            assert!(
                regex::Regex::new(&to_rust(p)).is_err(),
                "{p} -> {}",
                to_rust(p)
            );
        }
    }

    /// Any text, however broken, is rewritten without a panic (the parsers' fuzz
    /// targets reach this too).
    #[test]
    fn any_text_is_rewritten_without_a_panic() {
        const ALPHABET: &[char] = &[
            '\\', '[', ']', '{', '}', '(', ')', '?', '#', '\'', ':', '^', '-', ',', '0', '1', '7',
            '9', 'a', 'c', 'e', 'h', 'o', 'p', 'x', 'E', 'G', 'K', 'N', 'Q', 'R', 'Z', '&', '~',
            'é',
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..(state % 12) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let _ = regex::Regex::new(&to_rust(&text));
        }
    }

    /// STIX `LIKE` becomes an expression in this engine's syntax, every special
    /// character escaped; the rewrite must leave it as it is.
    #[test]
    fn escaped_text_is_left_alone() {
        let text = r"a.b*c{1}[x]&&~~-\h\Q(?#)#";
        let escaped = regex::escape(text);
        assert_eq!(to_rust(&escaped), escaped);
    }
}
