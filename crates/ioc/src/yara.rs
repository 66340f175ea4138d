//! The YARA interface of Riposte, backed by the pure-Rust `boreal` engine.
//!
//! Other crates (the EPP scanner, the sandbox, the sweep) call only [`YaraRules`], so
//! the engine can change without touching them: keep this interface stable.
//! A rule file in which some rules are refused by the engine still loads: the refused
//! rules are skipped and listed in [`YaraRules::warnings`], because one exotic rule
//! should not disable a whole rule set.
//!
//! `include "…"` is honoured only for rules read from a local file
//! ([`Includes::RelativeTo`] its folder, as `yara` does). Rules that came over the network
//! (a task's documents, the server checking them) refuse it: an include would read a file
//! of the machine that compiles them, and a compiler error could show its content.

use crate::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest rule text accepted, includes counted: far beyond real rule sets, and it keeps
/// a hostile document from exhausting the compiler's memory.
pub const MAX_RULES_BYTES: usize = 16 << 20;

/// How deep includes may nest (as libyara's limit).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Whether a rule text may include other files, and from where.
#[derive(Debug, Clone, Copy)]
pub enum Includes<'a> {
    /// Any `include` is an error.
    Refused,
    /// Relative includes resolve from this folder (the rule file's), and from the
    /// including file's folder for nested ones.
    RelativeTo(&'a Path),
}

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

#[cfg(test)]
/// Splits YARA source into its imports and top-level rules (text spans), tracking
/// strings, comments, regexes and braces, so that rules can be compiled one by one.
/// Each rule comes with its name and the byte offset where it starts.
fn split_rules(src: &str) -> (String, Vec<(String, String, usize)>) {
    let (imports, _, rules) = split_top_level(src);
    (imports, rules)
}

/// [`split_rules`], with the `include` lines apart.
fn split_top_level(src: &str) -> (String, String, Vec<(String, String, usize)>) {
    let b = src.as_bytes();
    let mut imports = String::new();
    let mut includes = String::new();
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
            let directive = ["import", "include"]
                .into_iter()
                .find(|k| word_start && rest.starts_with(k));
            if let Some(keyword) = directive {
                let end = rest.find('\n').map_or(b.len(), |e| i + e);
                let into = if keyword == "import" {
                    &mut imports
                } else {
                    &mut includes
                };
                into.push_str(&src[i..end]);
                into.push('\n');
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
    (imports, includes, rules)
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

/// Reads a rule file as text, refusing one over [`MAX_RULES_BYTES`] before reading it.
fn read_rules(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let limit = MAX_RULES_BYTES as u64;
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > limit {
        return Err(format!(
            "larger than {} MiB: not a rule file",
            MAX_RULES_BYTES >> 20
        ));
    }
    Ok(text)
}

/// A compiler whose includes follow `includes`.
fn new_compiler(includes: Includes<'_>) -> boreal::Compiler {
    let mut compiler = boreal::Compiler::new();
    match includes {
        Includes::Refused => {
            compiler.set_params(boreal::compiler::CompilerParams::default().disable_includes(true))
        }
        Includes::RelativeTo(dir) => {
            let base = dir.to_path_buf();
            // boreal names the including document by its include text, not by a path:
            // remember where each text was found to resolve nested includes from there.
            // The depth stops a file that includes itself (boreal has no limit of its own).
            let mut found: HashMap<String, (PathBuf, usize)> = HashMap::new();
            let mut total = 0usize;
            compiler.set_include_callback(move |name, including, _namespace| {
                let parent = including.and_then(|p| found.get(&*p.to_string_lossy()));
                let depth = parent.map_or(1, |(_, d)| d + 1);
                if depth > MAX_INCLUDE_DEPTH {
                    return Err(std::io::Error::other(format!(
                        "includes nested more than {MAX_INCLUDE_DEPTH} deep (a file that includes itself?)"
                    )));
                }
                let from = parent
                    .and_then(|(p, _)| p.parent().map(Path::to_path_buf))
                    .unwrap_or_else(|| base.clone());
                let path = from.join(name);
                let text = read_rules(&path)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                total += text.len();
                if total > MAX_RULES_BYTES {
                    return Err(std::io::Error::other(format!(
                        "the included files pass {} MiB together",
                        MAX_RULES_BYTES >> 20
                    )));
                }
                found.insert(name.to_string(), (path, depth));
                Ok(text)
            });
        }
    }
    compiler
}

impl YaraRules {
    /// Compiles YARA source that may not include files (it came from elsewhere: see the
    /// module docs). `origin` names it in messages. Rules the engine refuses are skipped
    /// with a warning when other rules of the source compile; when none does, the first
    /// error is returned.
    pub fn compile_str(src: &str, origin: &str) -> Result<Self, Error> {
        Self::compile(src, origin, Includes::Refused)
    }

    /// Compiles YARA source, with `include`s as `includes` allows.
    pub fn compile(src: &str, origin: &str, includes: Includes<'_>) -> Result<Self, Error> {
        if src.len() > MAX_RULES_BYTES {
            return Err(Error::TooLarge {
                origin: origin.to_string(),
                size: src.len(),
                limit: MAX_RULES_BYTES,
            });
        }
        let mut compiler = new_compiler(includes);
        let (rules, warnings) = match compiler.add_rules_str(src) {
            Ok(_) => (compiler.finalize(), Vec::new()),
            Err(first) => {
                let first_msg = describe(&first, origin, src);
                let (imports, include_lines, rules) = split_top_level(src);
                let mut compiler = new_compiler(includes);
                let mut warnings = Vec::new();
                if !include_lines.is_empty() {
                    let chunk = format!("{imports}{include_lines}");
                    if let Err(e) = compiler.add_rules_str(&chunk) {
                        warnings.push(format!(
                            "skipped the included files: {}",
                            describe(&e, origin, &chunk)
                        ));
                    }
                }
                for (name, text, start) in &rules {
                    let chunk = format!("{imports}{text}\n");
                    if let Err(e) = compiler.add_rules_str(&chunk) {
                        warnings.push(format!(
                            "skipped rule '{name}': {}",
                            describe_in_file(&e, origin, &chunk, imports.len(), src, *start)
                        ));
                    }
                }
                let compiled = compiler.finalize();
                if compiled.rules().next().is_none() {
                    return Err(Error::Yara {
                        origin: origin.to_string(),
                        msg: first_msg,
                    });
                }
                (compiled, warnings)
            }
        };
        // Included rules count too; a text without any would read every file for nothing.
        let rule_count = rules.rules().count();
        if rule_count == 0 {
            return Err(Error::Yara {
                origin: origin.to_string(),
                msg: "no rule in it: a YARA file must hold at least one rule".into(),
            });
        }
        Ok(YaraRules {
            scanner: rules,
            origin: origin.to_string(),
            warnings,
            rule_count,
        })
    }

    /// Reads and compiles a rule file; its includes resolve from its folder.
    pub fn compile_file(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let src = read_rules(path).map_err(|msg| Error::Yara {
            origin: origin.clone(),
            msg,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::compile(&src, &origin, Includes::RelativeTo(dir))
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

    /// A rule file's includes resolve from its folder, nested ones from the including
    /// file's, whatever the current directory; their rules count. Text that came from
    /// elsewhere may not include anything, and a file including itself is an error, not
    /// a stack overflow.
    #[test]
    fn includes_resolve_from_the_rule_file_and_only_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("main.yar"),
            "include \"sub/a.yar\"\nrule main_rule { condition: a_rule }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/a.yar"),
            "include \"b.yar\"\nrule a_rule { strings: $s = \"alpha\" condition: $s and b_rule }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/b.yar"),
            "rule b_rule { strings: $s = \"beta\" condition: $s }\n",
        )
        .unwrap();
        let r = YaraRules::compile_file(&dir.path().join("main.yar")).unwrap();
        assert_eq!(r.rule_count(), 3);
        assert_eq!(
            r.scan_bytes(b"alpha beta"),
            ["b_rule", "a_rule", "main_rule"]
        );
        assert!(r.scan_bytes(b"alpha").is_empty());

        let sent = std::fs::read_to_string(dir.path().join("main.yar")).unwrap();
        let e = YaraRules::compile_str(&sent, "task.yar")
            .unwrap_err()
            .to_string();
        assert!(e.contains("include"), "{e}");
        // Beside a rule of its own, the include is skipped with a warning (an error under
        // `--strict`), and nothing of the file shows.
        let r = YaraRules::compile_str("include \"/etc/passwd\"\nrule x { condition: true }", "t")
            .unwrap();
        assert_eq!(r.rule_count(), 1);
        let w = r.warnings().join(" ");
        assert!(w.contains("includes are not allowed"), "{w}");
        assert!(!w.contains("root:"), "{w}");

        std::fs::write(
            dir.path().join("loop.yar"),
            "include \"loop.yar\"\nrule l { condition: true }\n",
        )
        .unwrap();
        let r = YaraRules::compile_file(&dir.path().join("loop.yar")).unwrap();
        let w = r.warnings().join(" ");
        assert!(w.contains("nested more than"), "{w}");
    }

    #[test]
    fn a_rule_text_over_the_limit_is_refused_before_compiling() {
        let big = format!(
            "rule x {{ condition: true }}\n/*{}*/",
            " ".repeat(MAX_RULES_BYTES)
        );
        let e = YaraRules::compile_str(&big, "big.yar")
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.yar"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.yar"), &big).unwrap();
        let e = YaraRules::compile_file(&dir.path().join("big.yar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MiB"), "{e}");
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
