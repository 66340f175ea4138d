//! The YARA interface of Riposte, backed by the pure-Rust `boreal` engine.
//!
//! Other crates (the EPP scanner, the sandbox, the sweep) call only [`YaraRules`], so
//! the engine can change without touching them: keep this interface stable.
//! A rule file in which some rules are refused by the engine still loads: the refused
//! rules are skipped and listed in [`YaraRules::warnings`], because one exotic rule
//! should not disable a whole rule set.

use crate::Error;
use std::path::Path;

/// A compiled set of YARA rules. Cheap to share between threads (`Send + Sync`).
pub struct YaraRules {
    scanner: boreal::Scanner,
    origin: String,
    warnings: Vec<String>,
    rule_count: usize,
}

impl std::fmt::Debug for YaraRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraRules")
            .field("origin", &self.origin)
            .field("rule_count", &self.rule_count)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Splits YARA source into its imports and top-level rules (text spans), tracking
/// strings, comments, regexes and braces, so that rules can be compiled one by one.
/// Each rule comes with its name and the byte offset where it starts.
fn split_rules(src: &str) -> (String, Vec<(String, String, usize)>) {
    let b = src.as_bytes();
    let mut imports = String::new();
    let mut rules = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    let mut depth = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if depth > 0
            && c == b'/'
            && b.get(i.wrapping_sub(1))
                .is_some_and(|p| matches!(p, b' ' | b'=' | b'\t'))
        {
            // A regex literal `/…/`: skip to the closing unescaped slash on this line.
            let mut j = i + 1;
            while j < b.len() && b[j] != b'/' && b[j] != b'\n' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < b.len() && b[j] == b'/' {
                i = j + 1;
                continue;
            }
        }
        if depth == 0 && start.is_none() {
            let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            let rest = &src[i..];
            if word_start && rest.starts_with("import") {
                let end = rest.find('\n').map_or(b.len(), |e| i + e);
                imports.push_str(&src[i..end]);
                imports.push('\n');
                i = end;
                continue;
            }
            if word_start
                && (rest.starts_with("rule")
                    || rest.starts_with("private")
                    || rest.starts_with("global"))
            {
                start = Some(i);
            }
        }
        if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                if let Some(s) = start.take() {
                    let text = &src[s..=i];
                    let name = text
                        .split_whitespace()
                        .find(|w| !matches!(*w, "rule" | "private" | "global"))
                        .unwrap_or("?")
                        .trim_end_matches([':', '{'])
                        .to_string();
                    rules.push((name, text.to_string(), s));
                }
            }
        }
        i += 1;
    }
    (imports, rules)
}

fn describe(e: &boreal::compiler::AddRuleError, origin: &str, src: &str) -> String {
    one_line(boreal::compiler::generate_description(
        &e.to_diagnostic(),
        origin,
        src,
    ))
}

/// [`describe`] of an error in a rule compiled alone (after the imports, `imports_len`
/// bytes), placed at the rule's own offset `start` in the whole file `src`, so that the
/// position given is the file's. An error in the imports is described in the chunk.
fn describe_in_file(
    e: &boreal::compiler::AddRuleError,
    origin: &str,
    chunk: &str,
    imports_len: usize,
    src: &str,
    start: usize,
) -> String {
    let mut diag = e.to_diagnostic();
    if diag.labels.iter().any(|l| l.range.start < imports_len) {
        return describe(e, origin, chunk);
    }
    for l in &mut diag.labels {
        l.range = l.range.start - imports_len + start..l.range.end - imports_len + start;
    }
    one_line(boreal::compiler::generate_description(&diag, origin, src))
}

/// The first lines of a compiler report, on one line.
fn one_line(report: String) -> String {
    report.lines().take(6).collect::<Vec<_>>().join(" | ")
}

impl YaraRules {
    /// Compiles YARA source. `origin` names it in messages. Rules the engine refuses are
    /// skipped with a warning when other rules of the source compile; when none does,
    /// the first error is returned.
    pub fn compile_str(src: &str, origin: &str) -> Result<Self, Error> {
        let mut compiler = boreal::Compiler::new();
        match compiler.add_rules_str(src) {
            Ok(_) => {
                let (_, rules) = split_rules(src);
                // A file without a rule would read every file for nothing.
                if rules.is_empty() {
                    return Err(Error::Yara {
                        origin: origin.to_string(),
                        msg: "no rule in it: a YARA file must hold at least one rule".into(),
                    });
                }
                Ok(YaraRules {
                    scanner: compiler.finalize(),
                    origin: origin.to_string(),
                    warnings: Vec::new(),
                    rule_count: rules.len(),
                })
            }
            Err(first) => {
                let first_msg = describe(&first, origin, src);
                let (imports, rules) = split_rules(src);
                let mut compiler = boreal::Compiler::new();
                let mut warnings = Vec::new();
                let mut ok = 0;
                for (name, text, start) in &rules {
                    let chunk = format!("{imports}{text}\n");
                    match compiler.add_rules_str(&chunk) {
                        Ok(_) => ok += 1,
                        Err(e) => warnings.push(format!(
                            "skipped rule '{name}': {}",
                            describe_in_file(&e, origin, &chunk, imports.len(), src, *start)
                        )),
                    }
                }
                if ok == 0 {
                    return Err(Error::Yara {
                        origin: origin.to_string(),
                        msg: first_msg,
                    });
                }
                Ok(YaraRules {
                    scanner: compiler.finalize(),
                    origin: origin.to_string(),
                    warnings,
                    rule_count: ok,
                })
            }
        }
    }

    /// Reads and compiles a rule file.
    pub fn compile_file(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| Error::Yara {
            origin: origin.clone(),
            msg: e.to_string(),
        })?;
        Self::compile_str(&src, &origin)
    }

    /// Names of the rules matching `data` (namespace-less), in rule order.
    pub fn scan_bytes(&self, data: &[u8]) -> Vec<String> {
        let res = match self.scanner.scan_mem(data) {
            Ok(r) => r,
            // Timeouts and similar: report what matched so far.
            Err((_, r)) => r,
        };
        res.rules.iter().map(|r| r.name.to_string()).collect()
    }

    /// Reads a file and returns the names of the matching rules.
    pub fn scan_file(&self, path: &Path) -> std::io::Result<Vec<String>> {
        let data = std::fs::read(path)?;
        Ok(self.scan_bytes(&data))
    }

    /// Rules that the engine refused and that were skipped.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of rules compiled.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The name given at compile time.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_rule_is_refused() {
        for src in ["", "// nothing here\n", "import \"pe\"\n"] {
            let e = YaraRules::compile_str(src, "empty.yar")
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("no rule in it")),
                "{src:?}: {e:?}"
            );
        }
    }

    #[test]
    fn split_handles_strings_and_braces() {
        let src = "import \"pe\"\n// rule fake {\nrule a { strings: $s = \"}{\" condition: $s }\nprivate rule b : tag { strings: $h = { 4D 5A } $r = /ab{1,2}/ condition: any of them }";
        let (imports, rules) = split_rules(src);
        assert_eq!(imports.trim(), "import \"pe\"");
        let names: Vec<_> = rules.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_rule_is_skipped_good_rule_kept() {
        let src = "rule good { strings: $a = \"evil\" condition: $a }\nrule bad { condition: nosuchthing }";
        let r = YaraRules::compile_str(src, "t.yar").unwrap();
        assert_eq!(r.rule_count(), 1);
        assert_eq!(r.warnings().len(), 1);
        assert!(r.warnings()[0].contains("bad"), "{:?}", r.warnings());
        assert_eq!(r.scan_bytes(b"xx evil xx"), ["good"]);
        assert!(r.scan_bytes(b"benign").is_empty());
    }

    #[test]
    fn a_skipped_rule_is_named_at_its_line_and_column_in_the_file() {
        // The error is on line 5 (`and and`), column 24, after an import and a good rule.
        let src = "import \"math\"\nrule good { condition: true }\n\n  rule bad {\n    condition: true and and false\n  }\n";
        let r = YaraRules::compile_str(src, "t.yar").unwrap();
        assert_eq!(r.rule_count(), 1);
        assert!(r.warnings()[0].contains("t.yar:5:"), "{:?}", r.warnings());
    }

    #[test]
    fn all_bad_is_error() {
        let e = YaraRules::compile_str("rule { oops", "x.yar").unwrap_err();
        assert!(e.to_string().starts_with("x.yar: YARA:"), "{e}");
    }
}
