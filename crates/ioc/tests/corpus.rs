//! Every real-world indicator in the shared corpus must load.

use riposte_ioc::{openioc, yara::YaraRules, IocFormat};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn iocs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            iocs(&p, out);
        } else if p.extension().is_some_and(|e| e == "ioc") {
            out.push(p);
        }
    }
}

#[test]
fn every_openioc_file_parses_with_pinned_term_counts() {
    let mut files = Vec::new();
    iocs(&corpus().join("openioc"), &mut files);
    let (mut sup, mut unsup, mut v10, mut v11) = (0, 0, 0, 0);
    let mut fully_supported = 0;
    let mut by_reason = std::collections::BTreeMap::<String, usize>::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let ioc = openioc::parse_bytes(&bytes, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        match ioc.format {
            IocFormat::OpenIoc10 => v10 += 1,
            IocFormat::OpenIoc11 => v11 += 1,
            IocFormat::Stix21 => unreachable!(),
        }
        println!(
            "{:>3} supported {:>3} unsupported  {}",
            ioc.terms.len(),
            ioc.unsupported.len(),
            f.strip_prefix(corpus()).unwrap().display()
        );
        for u in &ioc.unsupported {
            let head = u.search.split('/').next().unwrap_or("").to_string();
            *by_reason.entry(head).or_default() += 1;
        }
        sup += ioc.terms.len();
        unsup += ioc.unsupported.len();
        if ioc.unsupported.is_empty() {
            fully_supported += 1;
        }
    }
    println!("unsupported by item: {by_reason:?}");
    println!("files {} (1.0: {v10}, 1.1: {v11}), supported terms {sup}, unsupported terms {unsup}, fully supported IOCs {fully_supported}", files.len());
    assert_eq!((files.len(), v10, v11), (116, 24, 92));
    assert_eq!((sup, unsup, fully_supported), (711, 1202, 12));
    assert_eq!(
        format!("{by_reason:?}"),
        r#"{"Email": 1, "EventLogItem": 21, "FileItem": 22, "Network": 21, "ProcessItem": 31, "RegistryItem": 68, "TaskItem": 4, "eventItem": 6, "fileWriteEvent": 173, "imageLoadEvent": 382, "ipv4NetworkEvent": 1, "processEvent": 393, "regKeyEvent": 40, "urlMonitorEvent": 39}"#
    );
}

#[test]
fn fireeye_yara_rules_compile() {
    let path = corpus().join("yara/fireeye-rttc-all.yar");
    let rules = YaraRules::compile_file(&path).unwrap();
    for w in rules.warnings() {
        eprintln!("warning: {w}");
    }
    assert!(rules.warnings().is_empty(), "{:?}", rules.warnings());
    assert_eq!(rules.rule_count(), 169);
}
