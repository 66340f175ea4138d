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
use std::path::Path;

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

/// Most matches of one string that a scan counts, as `yara` does.
pub const STRING_MAX_MATCHES: u32 = 1_000_000;

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
    let top = split_top_level(src);
    let imports = top
        .imports
        .iter()
        .map(|&(start, end)| format!("{}\n", &src[start..end]))
        .collect();
    (imports, top.rules)
}

/// YARA source split at its top level (see [`split_top_level`]).
#[derive(Debug, Default)]
struct TopLevel {
    /// Spans of the `import` directives.
    imports: Vec<(usize, usize)>,
    /// Spans of the `include` directives.
    includes: Vec<(usize, usize)>,
    /// Each rule's name, text and offset.
    rules: Vec<(String, String, usize)>,
    /// Where text that is neither a rule, a directive nor a comment starts (one offset
    /// per line of it).
    strays: Vec<usize>,
}

/// The name of a rule from its text.
fn rule_name(text: &str) -> String {
    text.split_whitespace()
        .find(|w| !matches!(*w, "rule" | "private" | "global"))
        .unwrap_or("?")
        .trim_end_matches([':', '{'])
        .to_string()
}

/// Whether `src[i..]` starts the word `word` followed by white space.
fn keyword_at(src: &str, i: usize, word: &str) -> bool {
    let b = src.as_bytes();
    let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    word_start
        && src[i..].starts_with(word)
        && b.get(i + word.len()).is_some_and(u8::is_ascii_whitespace)
}

/// Splits YARA source into its imports, includes and top-level rules (text spans),
/// tracking strings, comments, regexes and braces, so that rules can be compiled one by
/// one. A rule left open (a missing `}`) ends where the next `rule` keyword starts (the
/// keyword cannot appear inside a rule), or at the end: it then fails alone instead of
/// swallowing the rules after it. Text outside any rule is noted, not dropped in silence.
fn split_top_level(src: &str) -> TopLevel {
    let b = src.as_bytes();
    let mut out = TopLevel::default();
    let mut i = 0;
    let mut start: Option<usize> = None;
    let mut depth = 0usize;
    let mut stray_line: Option<usize> = None;
    let mut note_stray = |at: usize, out: &mut TopLevel| {
        let line = src[..at].rfind('\n').map_or(0, |n| n + 1);
        if stray_line != Some(line) {
            stray_line = Some(line);
            out.strays.push(at);
        }
    };
    let push_rule = |s: usize, end: usize, out: &mut TopLevel| {
        let text = &src[s..end];
        out.rules.push((rule_name(text), text.to_string(), s));
    };
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
            if depth == 0 && start.is_none() {
                note_stray(i, &mut out);
            }
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
        if depth > 0 && keyword_at(src, i, "rule") {
            if let Some(s) = start.take() {
                // The rule before is still open. Its modifiers on this line belong to
                // the new one.
                let line = src[..i].rfind('\n').map_or(0, |n| n + 1);
                let cut = if src[line..i]
                    .split_whitespace()
                    .all(|w| matches!(w, "private" | "global"))
                    && line > s
                {
                    line
                } else {
                    i
                };
                push_rule(s, cut, &mut out);
                depth = 0;
                i = cut;
                continue;
            }
        }
        if depth == 0 && start.is_none() {
            let rest = &src[i..];
            let directive = ["import", "include"].into_iter().find(|k| {
                keyword_at(src, i, k) || (rest.starts_with(k) && rest[k.len()..].starts_with('"'))
            });
            if let Some(keyword) = directive {
                // A directive ends with its quoted name (a rule may follow on its line),
                // else, broken, with its line.
                let line_end = rest.find('\n').map_or(b.len(), |e| i + e);
                let after = &rest[keyword.len()..];
                let quoted = after.trim_start().strip_prefix('"').and_then(|name| {
                    let opened = i + keyword.len() + (after.len() - name.len());
                    name.find(['"', '\n'])
                        .filter(|&q| name.as_bytes()[q] == b'"')
                        .map(|q| opened + q + 1)
                });
                let end = quoted.unwrap_or(line_end);
                if keyword == "import" {
                    out.imports.push((i, end));
                } else {
                    out.includes.push((i, end));
                }
                i = end;
                continue;
            }
            if ["rule", "private", "global"]
                .into_iter()
                .any(|k| keyword_at(src, i, k))
            {
                start = Some(i);
            } else if !c.is_ascii_whitespace() {
                note_stray(i, &mut out);
                i += 1;
                continue;
            }
        }
        if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                if let Some(s) = start.take() {
                    push_rule(s, i + 1, &mut out);
                }
            }
        }
        i += 1;
    }
    if let Some(s) = start {
        push_rule(s, b.len(), &mut out);
    }
    out
}

/// The first lines of a compiler report, on one line.
fn one_line(report: String) -> String {
    let mut said = report.lines().take(6).collect::<Vec<_>>().join(" | ");
    if said.contains("unknown import") {
        // `yara` has modules (magic, cuckoo…) this engine has not: the import is valid
        // YARA, and the user needs to know that the engine is why.
        said.push_str(
            " (a module this scanner's YARA engine does not have: remove the import and \
             the rules that use it)",
        );
    }
    said
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

/// A compiler that refuses `include`: includes are put in place by [`expand`] first.
fn new_compiler() -> boreal::Compiler {
    let mut compiler = boreal::Compiler::new();
    compiler.set_params(boreal::compiler::CompilerParams::default().disable_includes(true));
    compiler
}

/// Rule text with its includes put in place, and where each stretch of it came from, so
/// that an error is told at its own file's line.
struct Expanded {
    text: String,
    /// (offset in `text`, index in `sources`, offset in that source), by offset.
    parts: Vec<(usize, usize, usize)>,
    /// (origin, text) of the top file and of each included file.
    sources: Vec<(String, String)>,
}

impl Expanded {
    fn single(src: &str, origin: &str) -> Expanded {
        Expanded {
            text: src.to_string(),
            parts: vec![(0, 0, 0)],
            sources: vec![(origin.to_string(), src.to_string())],
        }
    }

    /// Puts `src`'s includes in place, resolving them from `dir`, each included file's
    /// own from its folder. Done here rather than by boreal's include callback, which
    /// names the including document only by its include text: two files included as
    /// `x.yar` from different folders could not be told apart.
    fn with_includes(src: &str, origin: &str, dir: &Path) -> Result<Expanded, Error> {
        let mut out = Expanded {
            text: String::new(),
            parts: Vec::new(),
            sources: Vec::new(),
        };
        let mut budget = MAX_RULES_BYTES.saturating_sub(src.len());
        out.append_file(src, origin, dir, 0, &mut budget)?;
        Ok(out)
    }

    fn append_file(
        &mut self,
        src: &str,
        origin: &str,
        dir: &Path,
        depth: usize,
        budget: &mut usize,
    ) -> Result<(), Error> {
        let source = self.sources.len();
        self.sources.push((origin.to_string(), src.to_string()));
        let fail = |at: usize, msg: String| {
            let line = src[..at].matches('\n').count() + 1;
            Error::Yara {
                origin: format!("{origin}:{line}"),
                msg,
            }
        };
        let mut pos = 0;
        for (start, end) in split_top_level(src).includes {
            self.parts.push((self.text.len(), source, pos));
            self.text.push_str(&src[pos..start]);
            let line = &src[start..end];
            let name = line
                .split_once('"')
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(name, _)| name)
                .ok_or_else(|| {
                    fail(
                        start,
                        format!("not an include of a quoted file name: {line}"),
                    )
                })?;
            if depth + 1 > MAX_INCLUDE_DEPTH {
                return Err(fail(
                    start,
                    format!(
                        "includes nested more than {MAX_INCLUDE_DEPTH} deep (a file that includes itself?)"
                    ),
                ));
            }
            let path = dir.join(name);
            // A FIFO or a device would block or never end.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(fail(
                        start,
                        format!("cannot include {}: not a regular file", path.display()),
                    ))
                }
                Err(e) => {
                    return Err(fail(
                        start,
                        format!("cannot include {}: {e}", path.display()),
                    ))
                }
            }
            let text = read_rules(&path)
                .map_err(|e| fail(start, format!("cannot include {}: {e}", path.display())))?;
            *budget = budget.checked_sub(text.len()).ok_or_else(|| {
                fail(
                    start,
                    format!(
                        "the rules and the files they include pass {} MiB together",
                        MAX_RULES_BYTES >> 20
                    ),
                )
            })?;
            let child_dir = path.parent().unwrap_or(dir).to_path_buf();
            self.append_file(
                &text,
                &path.display().to_string(),
                &child_dir,
                depth + 1,
                budget,
            )?;
            self.text.push('\n');
            pos = end;
        }
        self.parts.push((self.text.len(), source, pos));
        self.text.push_str(&src[pos..]);
        Ok(())
    }

    /// `FILE:LINE` of an offset in `self.text`.
    fn locate(&self, at: usize) -> String {
        let part = self.parts.partition_point(|p| p.0 <= at).saturating_sub(1);
        let (part_at, source, offset) = self.parts.get(part).copied().unwrap_or((0, 0, 0));
        let (origin, text) = &self.sources[source];
        let in_source = (at - part_at + offset).min(text.len());
        let line = text[..in_source].matches('\n').count() + 1;
        format!("{origin}:{line}")
    }

    /// A compiler error about `self.text`, told in the file the error is in.
    fn describe(&self, e: &boreal::compiler::AddRuleError) -> String {
        self.describe_at(e, 0, 0)
    }

    /// [`Expanded::describe`] of an error in a rule compiled alone (after the imports,
    /// `imports_len` bytes), the rule starting at `start` in `self.text`. An error in the
    /// imports is described in the chunk.
    fn describe_chunk(
        &self,
        e: &boreal::compiler::AddRuleError,
        chunk: &str,
        imports_len: usize,
        start: usize,
    ) -> String {
        let diag = e.to_diagnostic();
        if diag.labels.iter().any(|l| l.range.start < imports_len) {
            return one_line(boreal::compiler::generate_description(
                &diag,
                &self.sources[0].0,
                chunk,
            ));
        }
        self.describe_at(e, imports_len, start)
    }

    /// The error's labels moved from `from` to `to` in `self.text`, told in the file of
    /// the first label.
    fn describe_at(&self, e: &boreal::compiler::AddRuleError, from: usize, to: usize) -> String {
        let mut diag = e.to_diagnostic();
        for l in &mut diag.labels {
            l.range = l.range.start - from + to..l.range.end - from + to;
        }
        let at = diag.labels.first().map_or(0, |l| l.range.start);
        let part = self.parts.partition_point(|p| p.0 <= at).saturating_sub(1);
        let (part_at, source, offset) = self.parts.get(part).copied().unwrap_or((0, 0, 0));
        let part_end = self.parts.get(part + 1).map_or(self.text.len(), |p| p.0);
        // Labels outside the stretch of the first one belong to another file.
        diag.labels
            .retain(|l| l.range.start >= part_at && l.range.end <= part_end);
        for l in &mut diag.labels {
            l.range = l.range.start - part_at + offset..l.range.end - part_at + offset;
        }
        let (origin, text) = &self.sources[source];
        one_line(boreal::compiler::generate_description(&diag, origin, text))
    }
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
        let expanded = match includes {
            Includes::Refused => Expanded::single(src, origin),
            Includes::RelativeTo(dir) => Expanded::with_includes(src, origin, dir)?,
        };
        let text = expanded.text.as_str();
        let mut compiler = new_compiler();
        let (rules, warnings) = match compiler.add_rules_str(text) {
            Ok(_) => (compiler.finalize(), Vec::new()),
            Err(first) => {
                let first_msg = expanded.describe(&first);
                let TopLevel {
                    imports,
                    includes: include_lines,
                    rules,
                    strays,
                } = split_top_level(text);
                let mut compiler = new_compiler();
                let mut warnings = Vec::new();
                // An import of a module this engine lacks (`magic`, `cuckoo`), valid YARA,
                // would fail every rule compiled after it: it is left out, so that only
                // the rules that use the module are skipped.
                let imports = imports
                    .into_iter()
                    .filter_map(|(start, end)| {
                        let chunk = format!("{}\n", &text[start..end]);
                        match new_compiler().add_rules_str(&chunk) {
                            Ok(_) => Some(chunk),
                            Err(e) => {
                                warnings.push(format!(
                                    "skipped '{}': {}",
                                    chunk.trim(),
                                    expanded.describe_chunk(&e, &chunk, 0, start)
                                ));
                                None
                            }
                        }
                    })
                    .collect::<String>();
                // Only rules that may not include anything still hold include lines.
                for (start, end) in include_lines {
                    let chunk = format!("{imports}{}\n", &text[start..end]);
                    if let Err(e) = compiler.add_rules_str(&chunk) {
                        warnings.push(format!(
                            "skipped an include: {}",
                            expanded.describe_chunk(&e, &chunk, imports.len(), start)
                        ));
                    }
                }
                for at in strays {
                    warnings.push(format!(
                        "skipped text that is not a rule, at {}",
                        expanded.locate(at)
                    ));
                }
                for (name, rule, start) in &rules {
                    let chunk = format!("{imports}{rule}\n");
                    if let Err(e) = compiler.add_rules_str(&chunk) {
                        let why = expanded.describe_chunk(&e, &chunk, imports.len(), *start);
                        // A global rule holds back every other rule of the file: skipped,
                        // it would leave them matching what their author excluded.
                        if rule
                            .split_whitespace()
                            .take_while(|w| *w != "rule")
                            .any(|w| w == "global")
                        {
                            // The imports left out are often why: said too.
                            let imports_left_out: String = warnings
                                .iter()
                                .filter(|w| w.starts_with("skipped 'import"))
                                .map(|w| format!("; {w}"))
                                .collect();
                            return Err(Error::Yara {
                                origin: origin.to_string(),
                                msg: format!(
                                    "the global rule '{name}' cannot run here ({why}); without \
                                     it the file's other rules would match more than they \
                                     should, so none of them is run{imports_left_out}"
                                ),
                            });
                        }
                        warnings.push(format!("skipped rule '{name}': {why}"));
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
        // As many matches of one string as `yara` counts (its YR_MAX_STRING_MATCHES):
        // the engine's default of a thousand would leave `#s > 1000` for ever false.
        let mut rules = rules;
        rules.set_scan_params(
            boreal::scanner::ScanParams::default().string_max_nb_matches(STRING_MAX_MATCHES),
        );
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

    /// A module `yara` has and this engine has not is said to be the engine's, and costs
    /// only the rules that use it: the others of the file still run.
    #[test]
    fn a_module_this_engine_lacks_is_said_so() {
        let rules = YaraRules::compile_str(
            "import \"magic\"\nimport \"hash\"\n\
             rule by_type { condition: magic.mime_type() == \"text/plain\" }\n\
             rule by_text { strings: $a = \"needle\" condition: $a and hash.md5(0, 1) != \"\" }\n",
            "m.yar",
        )
        .unwrap();
        assert_eq!(rules.rule_count(), 1);
        assert_eq!(rules.scan_bytes(b"a needle here"), ["by_text"]);
        let w = rules.warnings().join(" | ");
        assert!(
            w.contains("skipped 'import \"magic\"'")
                && w.contains("unknown import")
                && w.contains("does not have")
                && w.contains("skipped rule 'by_type'"),
            "{w}"
        );
        assert!(!w.contains("by_text"), "{w}");
        // The import is told at its own line; one that shares its line with another
        // import or with a rule costs neither.
        let rules = YaraRules::compile_str(
            "rule first { condition: false }\n  import \"cuckoo\"\n\
             import \"hash\" import \"magic\" rule same_line { strings: $a = \"needle\" \
             condition: $a and hash.md5(0, 1) != \"\" }\n",
            "m.yar",
        )
        .unwrap();
        assert_eq!(rules.scan_bytes(b"a needle here"), ["same_line"]);
        let w = rules.warnings().join(" | ");
        assert!(
            w.contains("skipped 'import \"cuckoo\"'") && w.contains("m.yar:2:3"),
            "{w}"
        );
        assert!(
            w.contains("skipped 'import \"magic\"'") && w.contains("m.yar:3:"),
            "{w}"
        );
        assert!(!w.contains("skipped rule"), "{w}");
        // Nothing left to run: the first error, with the hint.
        let Err(e) = YaraRules::compile_str(
            "import \"magic\"\nrule a { condition: magic.type() == \"x\" }\n",
            "m.yar",
        ) else {
            panic!("compiled");
        };
        let e = e.to_string();
        assert!(
            e.contains("unknown import") && e.contains("does not have"),
            "{e}"
        );
    }

    /// A global rule that cannot run refuses its file: skipped, it would leave the other
    /// rules matching what it holds back.
    #[test]
    fn a_global_rule_that_cannot_run_refuses_its_file() {
        for global in [
            "global rule g { condition: magic.mime_type() == \"x\" }",
            "private global rule g { condition: filesize < }",
        ] {
            let src = format!(
                "import \"magic\"\n{global}\nrule marker {{ strings: $a = \"MARKER\" condition: $a }}\n"
            );
            let Err(e) = YaraRules::compile_str(&src, "g.yar") else {
                panic!("compiled: {global}");
            };
            let e = e.to_string();
            assert!(
                e.contains("the global rule 'g' cannot run here")
                    && e.contains("none of them is run")
                    && e.contains("skipped 'import \"magic\"'")
                    && e.contains("does not have"),
                "{e}"
            );
        }
        // A global rule that runs holds the others back, as it should.
        let rules = YaraRules::compile_str(
            "global rule g { condition: filesize > 100 }\n\
             rule marker { strings: $a = \"MARKER\" condition: $a }\n\
             rule broken { condition: nope }\n",
            "g.yar",
        )
        .unwrap();
        assert!(rules.scan_bytes(b"MARKER").is_empty());
        assert_eq!(rules.warnings().len(), 1, "{:?}", rules.warnings());
    }

    /// A string matched more than a thousand times counts as `yara` counts it (two
    /// FireEye rules of the corpus test `#rat > 1000`), and the `hash` module loads (the
    /// digest is `"rat"` 1,500 times, as `md5sum` gives it).
    #[test]
    fn match_counts_past_a_thousand_and_the_hash_module() {
        let rules = YaraRules::compile_str(
            r#"import "hash"
            rule more_than_1000 { strings: $r = "rat" condition: #r > 1000 }
            rule exactly_1000 { strings: $r = "rat" condition: #r == 1000 }
            rule the_1001st { strings: $r = "rat" condition: @r[1001] == 3000 }
            rule by_md5 { condition: hash.md5(0, filesize) == "4f0cdc1a09982ac8cf32e2a19815aa12" }"#,
            "counts.yar",
        )
        .unwrap();
        let mut hits = rules.scan_bytes(&b"rat".repeat(1500));
        hits.sort();
        assert_eq!(hits, ["by_md5", "more_than_1000", "the_1001st"]);
        assert_eq!(rules.scan_bytes(&b"rat".repeat(1000)), ["exactly_1000"]);
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
        let e = YaraRules::compile_file(&dir.path().join("loop.yar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nested more than"), "{e}");
    }

    /// Two files included under one name from different folders are told apart; an
    /// error in an included file is told at its own line; a broken rule in the top file
    /// does not drop the included rules; a FIFO is not opened; the size limit counts the
    /// top file and its includes together.
    #[test]
    fn includes_are_put_in_place_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write("main.yar", "include \"x.yar\"\n");
        write("x.yar", "include \"sub/q.yar\"\ninclude \"y.yar\"\n");
        write("sub/q.yar", "include \"x.yar\"\n");
        write("sub/x.yar", "rule sub_x { condition: true }\n");
        write("y.yar", "rule y_correct { condition: true }\n");
        write("sub/y.yar", "rule y_wrong_file { condition: true }\n");
        let r = YaraRules::compile_file(&d.join("main.yar")).unwrap();
        assert_eq!(r.scan_bytes(b"x"), ["sub_x", "y_correct"]);

        write(
            "bad_inc.yar",
            "rule fine { condition: true }\n\nrule broken { condition: nosuch }\n",
        );
        write(
            "top.yar",
            "include \"bad_inc.yar\"\nrule top { condition: true }\n",
        );
        let r = YaraRules::compile_file(&d.join("top.yar")).unwrap();
        assert_eq!(r.rule_count(), 2, "{:?}", r.warnings());
        let w = r.warnings().join(" ");
        assert!(
            w.contains("bad_inc.yar:3:"),
            "told at the included file's line: {w}"
        );

        write("base_first.yar", "rule base { condition: true }\ninclude \"uses_base.yar\"\nrule bad { condition: nosuch }\n");
        write("uses_base.yar", "rule derived { condition: base }\n");
        let r = YaraRules::compile_file(&d.join("base_first.yar")).unwrap();
        assert_eq!(
            r.scan_bytes(b"x"),
            ["base", "derived"],
            "{:?}",
            r.warnings()
        );

        let fifo = d.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        write("fifo.yar", "include \"fifo\"\nrule f { condition: true }\n");
        let e = YaraRules::compile_file(&d.join("fifo.yar"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a regular file") && e.contains("fifo.yar:1"),
            "{e}"
        );

        let half = "/".to_string() + &"*".repeat(MAX_RULES_BYTES / 2) + "*/\n";
        write("half.yar", &format!("{half}rule h {{ condition: true }}\n"));
        write("two_halves.yar", &format!("{half}include \"half.yar\"\n"));
        let e = YaraRules::compile_file(&d.join("two_halves.yar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("together"), "{e}");
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

    /// A rule left open (a truncated file) fails alone: the rules after it, in the same
    /// file or in the file that included it, still load. Text that is no rule is named in
    /// a warning, not dropped in silence. An include line may end with a comment.
    #[test]
    fn an_open_rule_or_stray_text_does_not_swallow_what_follows() {
        let src = "rule r1 { strings: $a = \"alpha\" condition: $a }\nrule r2 { strings: $t = \"beta\" condition: $t\n\nprivate rule r3 { strings: $w = \"world\" condition: $w }\nrule r4 { condition: r3 }\n";
        let r = YaraRules::compile_str(src, "t.yar").unwrap();
        assert_eq!(r.rule_count(), 3, "{:?}", r.warnings());
        assert!(
            r.warnings().iter().any(|w| w.contains("'r2'")),
            "{:?}",
            r.warnings()
        );
        // r3 is private: it shows through r4, which needs it.
        assert_eq!(r.scan_bytes(b"world alpha"), ["r1", "r4"]);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("trunc.yar"),
            "rule cut { strings: $t = \"beta\" condition: $t\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("main.yar"),
            "include \"trunc.yar\" // see \"notes\"\nrule after { condition: true }\n",
        )
        .unwrap();
        let r = YaraRules::compile_file(&dir.path().join("main.yar")).unwrap();
        assert_eq!(r.scan_bytes(b"x"), ["after"], "{:?}", r.warnings());
        assert!(
            r.warnings().iter().any(|w| w.contains("'cut'")),
            "{:?}",
            r.warnings()
        );

        std::fs::write(dir.path().join("notes.txt"), "just some text\nand more\n").unwrap();
        std::fs::write(
            dir.path().join("leak.yar"),
            "include \"notes.txt\"\nrule kept { condition: true }\n",
        )
        .unwrap();
        let r = YaraRules::compile_file(&dir.path().join("leak.yar")).unwrap();
        assert_eq!(r.rule_count(), 1);
        let w = r.warnings().join(" ");
        assert!(w.contains("not a rule") && w.contains("notes.txt:1"), "{w}");
        assert!(!w.contains("some text"), "{w}");
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
