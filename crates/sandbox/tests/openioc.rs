//! The OpenIOC 1.1 documents in reports are read back by the sweep's parser
//! (`riposte_ioc::openioc`), so a verdict really becomes a hunt.
#![cfg(feature = "yara")]

mod common;

use riposte_ioc::IocFormat;
use riposte_sandbox::importers::import_cuckoo3;

#[test]
fn report_openioc_parses_with_the_sweep_parser() {
    let r = import_cuckoo3(
        Some(&common::read_corpus(
            "sandbox-reports/cuckoo3/analysis.json",
        )),
        None,
        &common::read_corpus("sandbox-reports/cuckoo3/post.json"),
    )
    .unwrap();
    assert!(r
        .openioc
        .contains("xmlns=\"http://openioc.org/schemas/OpenIOC_1.1\""));
    let ioc = riposte_ioc::openioc::parse(&r.openioc, "report").unwrap();
    assert_eq!(ioc.format, IocFormat::OpenIoc11);
    let items = r.openioc.matches("<IndicatorItem ").count();
    // md5+sha1+sha256 of the object, 2 processes, 2 destinations (IP+port), 2 URLs.
    assert_eq!(items, 3 + 2 + 4 + 2, "{}", r.openioc);
    assert_eq!(ioc.terms.len() + ioc.unsupported.len(), items);
    let text = format!("{:?}", ioc.terms);
    assert!(
        text.contains("cbdb56e796b3fefb8c911e4f9237047d2d805dceccbea3dbac1ff87328e5f425"),
        "{text}"
    );
}
