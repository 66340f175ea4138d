//! End-to-end sweeps over planted files, a spawned process, a bound port and a fake
//! device tree (`host_root`).

use riposte_scan::items::HitItem;
use riposte_scan::{
    ioc_from_detection, sweep, DetectedObject, Detection, DocumentKind, Error, IocDocument, Scope,
    SweepRequest, Verdict,
};
use std::path::{Path, PathBuf};

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn ioc(id: &str, body: &str) -> IocDocument {
    IocDocument {
        include_dir: None,
        kind: DocumentKind::OpenIoc,
        origin: format!("{id}.ioc"),
        text: format!(
            r#"<OpenIOC xmlns="http://openioc.org/schemas/OpenIOC_1.1" id="{id}" last-modified="2020-01-01T00:00:00Z" published-date="2020-01-01T00:00:00Z"><metadata><short_description>{id} name</short_description><authored_date>2020-01-01T00:00:00Z</authored_date></metadata><criteria>{body}</criteria></OpenIOC>"#
        ),
    }
}

fn term(search: &str, cond: &str, ty: &str, val: &str) -> String {
    term_x(search, cond, ty, val, false, false)
}

fn term_x(search: &str, cond: &str, ty: &str, val: &str, negate: bool, pc: bool) -> String {
    format!(
        r#"<IndicatorItem id="{search}:{cond}:{val}" condition="{cond}" preserve-case="{pc}" negate="{negate}"><Context document="x" search="{search}" type="mir"/><Content type="{ty}">{val}</Content></IndicatorItem>"#
    )
}

fn and(items: &[String]) -> String {
    format!(
        r#"<Indicator operator="AND" id="and">{}</Indicator>"#,
        items.concat()
    )
}
fn or(items: &[String]) -> String {
    format!(
        r#"<Indicator operator="OR" id="or">{}</Indicator>"#,
        items.concat()
    )
}

const EVIL: &[u8] = b"this is a planted malware payload";

fn device() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "etc/passwd", b"rootish:x:0:0:Root:/root:/bin/bash\nalice:x:1000:1000:Alice A:/home/alice:/bin/zsh\nbob:x:1001:1001::/home/bob:/usr/sbin/nologin\n");
    write(
        r,
        "etc/hosts",
        b"127.0.0.1 localhost\n203.0.113.9 evil.example c2.evil.example\n",
    );
    write(r, "etc/hostname", b"testhost\n");
    write(r, "tmp/evil.bin", EVIL);
    write(r, "var/cache/evil.bin", EVIL);
    write(r, "opt/app/Readme.TXT", b"hello");
    write(r, "home/alice/notes.txt", &vec![b'n'; 4096]);
    write(r, "etc/systemd/system/backdoor.service", b"[Unit]\nDescription=Totally legit\n[Service]\nExecStart=/opt/app/bd --listen 4444\n[Install]\nWantedBy=multi-user.target\n");
    std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "../backdoor.service",
        r.join("etc/systemd/system/multi-user.target.wants/backdoor.service"),
    )
    .unwrap();
    d
}

fn request(root: &Path, docs: Vec<IocDocument>) -> SweepRequest {
    SweepRequest {
        documents: docs,
        scope: Scope {
            host_root: root.to_path_buf(),
            paths: vec![PathBuf::from("/")],
            ..Default::default()
        },
        ..Default::default()
    }
}

fn hit_paths(r: &riposte_scan::SweepReport, id: &str) -> Vec<String> {
    let mut v: Vec<String> = r
        .hits
        .iter()
        .filter(|h| h.ioc_id == id)
        .map(|h| h.item.to_string())
        .collect();
    v.sort();
    v
}

fn verdict(r: &riposte_scan::SweepReport, id: &str) -> Verdict {
    r.iocs.iter().find(|i| i.id == id).unwrap().verdict
}

#[test]
fn files_users_hosts_services_on_a_fake_device() {
    let d = device();
    let size = EVIL.len().to_string();
    let docs = vec![
        ioc(
            "hash-size",
            &and(&[
                term("FileItem/SizeInBytes", "is", "int", &size),
                term("FileItem/Md5sum", "is", "md5", &md5_hex(EVIL)),
            ]),
        ),
        ioc(
            "name-path",
            &and(&[
                term("FileItem/FileName", "ends-with", "string", ".txt"),
                term("FileItem/FullPath", "contains", "string", "/opt/"),
            ]),
        ),
        ioc(
            "case",
            &or(&[term_x(
                "FileItem/FileName",
                "is",
                "string",
                "readme.txt",
                false,
                true,
            )]),
        ),
        ioc(
            "undetermined",
            &or(&[
                term("RegistryItem/Path", "is", "string", "HKLM\\Run"),
                term("FileItem/FileName", "is", "string", "absent.exe"),
            ]),
        ),
        ioc(
            "nomatch",
            &and(&[
                term("FileItem/SizeInBytes", "is", "int", "7"),
                term("FileItem/Sha256sum", "is", "sha256", &"0".repeat(64)),
            ]),
        ),
        ioc(
            "user",
            &and(&[
                term("UserItem/Username", "is", "string", "ALICE"),
                term("UserItem/shell", "is", "string", "/bin/zsh"),
                term("UserItem/userid", "greater-than", "int", "999"),
            ]),
        ),
        ioc(
            "nologin",
            &and(&[term_x(
                "UserItem/shell",
                "ends-with",
                "string",
                "nologin",
                true,
                false,
            )]),
        ),
        ioc(
            "owner",
            &and(&[
                term("FileItem/Username", "is", "string", "rootish"),
                term("FileItem/FilePath", "is", "string", "/tmp"),
                term("FileItem/FileExtension", "is", "string", "bin"),
            ]),
        ),
        ioc(
            "dns",
            &or(&[
                term("DnsEntryItem/Host", "matches", "string", "^c2\\."),
                term(
                    "DnsEntryItem/RecordData/IPv4Address",
                    "is",
                    "IP",
                    "198.51.100.1",
                ),
            ]),
        ),
        ioc(
            "service",
            &and(&[
                term("ServiceItem/serviceDLL", "is", "string", "/opt/app/bd"),
                term("ServiceItem/mode", "is", "string", "enabled"),
                term("ServiceItem/name", "is", "string", "backdoor"),
            ]),
        ),
        ioc(
            "sysinfo",
            &and(&[term("SystemInfoItem/hostname", "is", "string", "testhost")]),
        ),
        ioc(
            "mtime",
            &and(&[
                term("FileItem/FileName", "is", "string", "notes.txt"),
                term(
                    "FileItem/Modified",
                    "greater-than",
                    "date",
                    "2001-01-01T00:00:00Z",
                ),
                term("FileItem/SizeInBytes", "is", "int", "4000 TO 5000"),
            ]),
        ),
    ];
    let mut req = request(d.path(), docs.clone());
    req.scope.exclude = vec!["/var/cache/**".into()];
    let r = sweep(&req).unwrap();
    // Each indicator alone hits what it hits among the others, and with the same verdict.
    // How the walk learns a file's status depends on all the indicators loaded (by name,
    // by opening every file, or only for the files some name or path test selects), and
    // must not change what hits.
    for doc in docs {
        let id = doc.origin.trim_end_matches(".ioc").to_string();
        let mut alone = request(d.path(), vec![doc]);
        alone.scope.exclude = req.scope.exclude.clone();
        let ra = sweep(&alone).unwrap();
        assert_eq!(hit_paths(&ra, &id), hit_paths(&r, &id), "{id}");
        assert_eq!(verdict(&ra, &id), verdict(&r, &id), "{id}");
    }
    assert_eq!(
        hit_paths(&r, "hash-size"),
        ["file /tmp/evil.bin"],
        "excluded copy not reported"
    );
    assert_eq!(hit_paths(&r, "name-path"), ["file /opt/app/Readme.TXT"]);
    assert!(hit_paths(&r, "case").is_empty(), "preserve-case");
    assert_eq!(verdict(&r, "case"), Verdict::NoMatch);
    assert_eq!(verdict(&r, "undetermined"), Verdict::Undetermined);
    assert_eq!(verdict(&r, "nomatch"), Verdict::NoMatch);
    assert_eq!(hit_paths(&r, "user"), ["user alice (uid 1000)"]);
    assert_eq!(
        hit_paths(&r, "nologin"),
        ["user alice (uid 1000)", "user rootish (uid 0)"]
    );
    assert_eq!(hit_paths(&r, "owner"), ["file /tmp/evil.bin"]);
    assert_eq!(
        hit_paths(&r, "dns"),
        ["hosts entry c2.evil.example 203.0.113.9"]
    );
    assert_eq!(hit_paths(&r, "service"), ["service backdoor.service"]);
    assert_eq!(hit_paths(&r, "sysinfo"), ["system testhost"]);
    assert_eq!(hit_paths(&r, "mtime"), ["file /home/alice/notes.txt"]);
    let h = r.hits.iter().find(|h| h.ioc_id == "hash-size").unwrap();
    let searches: Vec<_> = h.matched.iter().map(|m| m.search.as_str()).collect();
    assert_eq!(searches, ["FileItem/SizeInBytes", "FileItem/Md5sum"]);
    // Only the one file of the right size was read: the size term comes first.
    assert_eq!(r.stats.files_read, 1, "{:?}", r.stats);
    assert!(
        r.stats.skipped.get("excluded").copied().unwrap_or(0) >= 1,
        "{:?}",
        r.stats
    );
    assert_eq!(r.stats.files_seen, 7, "{:?}", r.stats);
    let u = &r
        .iocs
        .iter()
        .find(|i| i.id == "undetermined")
        .unwrap()
        .unsupported;
    assert_eq!(u[0].search, "RegistryItem/Path");
}

/// In an OR of terms on different item types, a hosts entry that matches makes the
/// indicator hold on every file, but only the items that match a term of their own type
/// are hits, each listing every term of its own that matched.
#[test]
fn an_or_across_item_types_hits_only_the_items_that_match_it() {
    let d = device();
    let docs = vec![
        ioc(
            "elsewhere",
            &or(&[
                term("FileItem/FileName", "is", "string", "nowhere.exe"),
                term("DnsEntryItem/Host", "is", "string", "evil.example"),
            ]),
        ),
        ioc(
            "both",
            &or(&[
                term("DnsEntryItem/Host", "is", "string", "evil.example"),
                term("FileItem/FileName", "is", "string", "notes.txt"),
                term("FileItem/SizeInBytes", "is", "int", "4096"),
                term("FileItem/FileExtension", "is", "string", "exe"),
            ]),
        ),
        ioc(
            "joined",
            &and(&[
                term("FileItem/FileName", "is", "string", "notes.txt"),
                term("DnsEntryItem/Host", "is", "string", "evil.example"),
            ]),
        ),
    ];
    let r = sweep(&request(d.path(), docs)).unwrap();
    assert_eq!(
        hit_paths(&r, "elsewhere"),
        ["hosts entry evil.example 203.0.113.9"]
    );
    assert_eq!(
        hit_paths(&r, "both"),
        [
            "file /home/alice/notes.txt",
            "hosts entry evil.example 203.0.113.9"
        ]
    );
    let file_hit = r
        .hits
        .iter()
        .find(|h| h.ioc_id == "both" && h.item.to_string().starts_with("file"))
        .unwrap();
    let mut terms: Vec<&str> = file_hit.matched.iter().map(|t| t.search.as_str()).collect();
    terms.sort();
    assert_eq!(
        terms,
        ["FileItem/FileName", "FileItem/SizeInBytes"],
        "every term of its own that matched, and none of the hosts entry's"
    );
    // In an AND, the hosts entry's term is part of why the file is a hit.
    assert_eq!(
        hit_paths(&r, "joined"),
        [
            "file /home/alice/notes.txt",
            "hosts entry evil.example 203.0.113.9"
        ]
    );
    let joined = r
        .hits
        .iter()
        .find(|h| h.ioc_id == "joined" && h.item.to_string().starts_with("file"))
        .unwrap();
    assert_eq!(joined.matched.len(), 2, "{joined:?}");
}

/// A hit by name carries its SHA-256 (so an action can refuse a changed object), read
/// for it and counted as read, but never past the scope's maximum file size.
#[test]
fn a_hit_by_name_is_hashed_only_within_the_size_limit() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "srv/small.evil", &[7u8; 900]);
    write(d.path(), "srv/large.evil", &[7u8; 5000]);
    let docs = vec![ioc(
        "byname",
        &or(&[term("FileItem/FileExtension", "is", "string", "evil")]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.max_file_size = Some(1000);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    let sha = |name: &str| {
        r.hits
            .iter()
            .find_map(|h| match &h.item {
                HitItem::File { path, sha256, .. } if path.ends_with(name) => Some(sha256.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no hit on {name}: {r:?}"))
    };
    assert_eq!(sha("small.evil"), Some(sha256_hex(&[7u8; 900])));
    assert_eq!(
        sha("large.evil"),
        None,
        "5000 bytes, over the 1000-byte limit"
    );
    assert_eq!(
        r.stats
            .skipped
            .get("hit's SHA-256: larger than max file size"),
        Some(&1),
        "{:?}",
        r.stats
    );
    assert_eq!((r.stats.hits_hashed, r.stats.hits_hashed_bytes), (1, 900));
    assert_eq!(r.stats.files_read, 0, "nothing read to evaluate");
}

#[test]
fn stix_yara_and_generated_ioc() {
    let d = device();
    write(
        d.path(),
        "srv/payload.js",
        b"var x = 'henlOZXRUb0pzY3JpcHRMb2Fk';",
    );
    write(d.path(), "srv/benign.js", b"var x = 'hello world';");
    let bundle = format!(
        r#"{{"type":"bundle","id":"bundle--1","objects":[
        {{"type":"indicator","id":"indicator--sha","name":"evil by hash","pattern_type":"stix","pattern":"[file:hashes.'SHA-256' = '{}' AND file:size = {}]"}},
        {{"type":"indicator","id":"indicator--seq","name":"sequence","pattern_type":"stix","pattern":"[file:name = 'evil.bin'] FOLLOWEDBY [file:size = 33]"}},
        {{"type":"indicator","id":"indicator--user","pattern_type":"stix","pattern":"[user-account:account_login = 'bob' AND user-account:extensions.'unix-account-ext'.shell LIKE '%nologin']"}},
        {{"type":"indicator","id":"indicator--one-file","pattern_type":"stix","pattern":"[file:name = 'payload.js'] AND [file:size = {}]"}},
        {{"type":"indicator","id":"indicator--two-files","pattern_type":"stix","pattern":"[file:name = 'payload.js'] AND [file:name = 'benign.js']"}},
        {{"type":"indicator","id":"indicator--one-missing","pattern_type":"stix","pattern":"[file:name = 'payload.js'] AND [file:name = 'missing.js']"}},
        {{"type":"indicator","id":"indicator--either","pattern_type":"stix","pattern":"[file:name = 'payload.js'] OR ([file:name = 'benign.js'] AND [file:name = 'missing.js'])"}},
        {{"type":"indicator","id":"indicator--file-and-user","pattern_type":"stix","pattern":"[file:name = 'benign.js'] AND [user-account:account_login = 'bob']"}},
        {{"type":"indicator","id":"indicator--then","pattern_type":"stix","pattern":"[file:name = 'payload.js'] FOLLOWEDBY [file:name = 'benign.js']"}}]}}"#,
        sha256_hex(EVIL),
        EVIL.len(),
        b"var x = 'henlOZXRUb0pzY3JpcHRMb2Fk';".len()
    );
    let gen = ioc_from_detection(&Detection {
        id: "gen-1".into(),
        name: "generated".into(),
        time: 1_700_000_000,
        objects: vec![DetectedObject {
            size: Some(EVIL.len() as u64),
            sha256: Some(sha256_hex(EVIL)),
            ..Default::default()
        }],
        ..Default::default()
    });
    let yara = std::fs::read_to_string(corpus().join("yara/fireeye-rttc-all.yar")).unwrap();
    let docs = vec![
        IocDocument {
            include_dir: None,
            kind: DocumentKind::Stix,
            origin: "b.json".into(),
            text: bundle,
        },
        IocDocument {
            include_dir: None,
            kind: DocumentKind::OpenIoc,
            origin: "gen.ioc".into(),
            text: gen,
        },
        IocDocument {
            include_dir: None,
            kind: DocumentKind::Yara,
            origin: "rttc.yar".into(),
            text: yara,
        },
    ];
    let r = sweep(&request(d.path(), docs)).unwrap();
    assert_eq!(
        hit_paths(&r, "indicator--sha"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    assert_eq!(verdict(&r, "indicator--seq"), Verdict::Undetermined);
    // The observations an AND joins are matched by different objects, as STIX defines
    // it: one file cannot be both; two files, one for each, are a hit of both.
    assert_eq!(verdict(&r, "indicator--one-file"), Verdict::NoMatch);
    assert!(hit_paths(&r, "indicator--one-file").is_empty());
    assert_eq!(verdict(&r, "indicator--two-files"), Verdict::Hit);
    assert_eq!(
        hit_paths(&r, "indicator--two-files"),
        ["file /srv/benign.js", "file /srv/payload.js"]
    );
    assert_eq!(verdict(&r, "indicator--one-missing"), Verdict::NoMatch);
    assert!(hit_paths(&r, "indicator--one-missing").is_empty());
    // benign.js matched an observation, but not one that made the pattern hold.
    assert_eq!(hit_paths(&r, "indicator--either"), ["file /srv/payload.js"]);
    assert_eq!(
        hit_paths(&r, "indicator--file-and-user"),
        ["file /srv/benign.js", "user bob (uid 1001)"]
    );
    // An order in time stays unknown however the observations fare.
    assert_eq!(verdict(&r, "indicator--then"), Verdict::Undetermined);
    assert!(hit_paths(&r, "indicator--then").is_empty());
    // Observations are swept apart but listed as their pattern, once.
    assert!(r.iocs.iter().all(|i| !i.id.contains("#observation")));
    assert!(r.hits.iter().all(|h| !h.ioc_id.contains("#observation")));
    assert_eq!(
        r.iocs
            .iter()
            .filter(|i| i.id == "indicator--two-files")
            .count(),
        1
    );
    let then = r.iocs.iter().find(|i| i.id == "indicator--then").unwrap();
    assert_eq!(then.supported_terms, 2);
    assert_eq!(then.unsupported.len(), 1);
    assert_eq!(hit_paths(&r, "indicator--user"), ["user bob (uid 1001)"]);
    assert_eq!(
        hit_paths(&r, "gen-1"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    assert_eq!(
        hit_paths(&r, "Hunting_GadgetToJScript_1"),
        ["file /srv/payload.js"]
    );
    let yara_hits = r.hits.iter().filter(|h| h.origin == "rttc.yar").count();
    assert_eq!(yara_hits, 1, "no false positives on the other files");
    // The text report counts the rules, and those that matched.
    assert!(r.yara_rules > 100, "{}", r.yara_rules);
    let mut text = Vec::new();
    riposte_scan::cli::print_text(&mut text, &r).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!("YARA rules: {} (1 matched)", r.yara_rules)),
        "{text}"
    );
    // YARA reads every file once; hashes reuse that content.
    assert_eq!(r.stats.files_read, r.stats.files_seen);
}

#[test]
fn spawned_process_and_listening_port() {
    let d = device();
    let mut child = std::process::Command::new("sleep")
        .arg("987.654321")
        .spawn()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let me = std::process::id().to_string();
    let exe_name = std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(exe_name.len() > 15, "{exe_name}: longer than a comm");
    // A program whose file name is longer than its comm: a copy of `sleep`.
    let long = d.path().join("a-program-named-at-length");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    std::fs::copy(sleep, &long).unwrap();
    let mut long_child = std::process::Command::new(&long)
        .arg("987.654321")
        .spawn()
        .unwrap();
    let long_pid = long_child.id().to_string();
    let docs = vec![
        ioc(
            "proc",
            &and(&[
                term("ProcessItem/name", "is", "string", "sleep"),
                term("ProcessItem/arguments", "contains", "string", "987.654321"),
                term("ProcessItem/parentpid", "is", "int", &me),
                term(
                    "ProcessItem/startTime",
                    "greater-than",
                    "date",
                    "2001-01-01T00:00:00Z",
                ),
            ]),
        ),
        ioc(
            "proc-miss",
            &and(&[term(
                "ProcessItem/arguments",
                "contains",
                "string",
                "987.654322",
            )]),
        ),
        ioc(
            "port",
            &and(&[
                term("PortItem/localPort", "is", "int", &port),
                term("PortItem/state", "is", "string", "LISTEN"),
                term("PortItem/localIP", "is", "IP", "127.0.0.1"),
                term("PortItem/pid", "is", "int", &me),
            ]),
        ),
        // The listening process by the name ProcessItem/name gives it: its program's
        // file name (this test binary's is longer than the 15 bytes of its comm).
        ioc(
            "port-process",
            &and(&[
                term("PortItem/localPort", "is", "int", &port),
                term("PortItem/process", "is", "string", &exe_name),
            ]),
        ),
        ioc(
            "long-by-name",
            &and(&[
                term(
                    "ProcessItem/name",
                    "is",
                    "string",
                    "a-program-named-at-length",
                ),
                term("ProcessItem/pid", "is", "int", &long_pid),
            ]),
        ),
        // The sweeping process is no item: its arguments name the indicators.
        ioc("me", &and(&[term("ProcessItem/pid", "is", "int", &me)])),
    ];
    let mut req = request(d.path(), docs);
    req.scope.paths.clear();
    let r = sweep(&req);
    let _ = child.kill();
    let _ = child.wait();
    let _ = long_child.kill();
    let _ = long_child.wait();
    drop(listener);
    let r = r.unwrap();
    let procs: Vec<_> = r
        .hits
        .iter()
        .filter(|h| h.ioc_id == "proc")
        .map(|h| h.item.clone())
        .collect();
    assert_eq!(
        procs,
        [HitItem::Process {
            pid: child.id() as i64,
            name: "sleep".into()
        }]
    );
    assert_eq!(verdict(&r, "proc-miss"), Verdict::NoMatch);
    let ports: Vec<_> = r
        .hits
        .iter()
        .filter(|h| h.ioc_id == "port")
        .map(|h| h.item.clone())
        .collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    match &ports[0] {
        HitItem::Port { pid, local, .. } => {
            assert_eq!(*pid, Some(std::process::id() as i64));
            assert_eq!(local, &format!("127.0.0.1:{port}"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(verdict(&r, "port-process"), Verdict::Hit);
    assert_eq!(verdict(&r, "long-by-name"), Verdict::Hit);
    assert_eq!(verdict(&r, "me"), Verdict::NoMatch);
    assert_eq!(r.stats.files_seen, 0);
}

/// A path named explicitly is swept even inside an area skipped by default, but not
/// when it is itself on a pseudo file system such as proc.
#[test]
fn a_named_path_on_a_pseudo_file_system_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("evil.bin"), b"x").unwrap();
    let named = ioc(
        "named",
        &or(&[term("FileItem/FileName", "is", "string", "evil.bin")]),
    );
    let mut req = request(Path::new("/"), vec![named]);
    // A directory of procfs (its files say 0 bytes and some never end).
    req.scope.paths = vec![PathBuf::from("/proc/sys"), d.path().to_path_buf()];
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    let hits: Vec<String> = r.hits.iter().map(|h| h.item.to_string()).collect();
    assert_eq!(
        hits,
        [format!("file {}", d.path().join("evil.bin").display())]
    );
    assert_eq!(
        r.stats.skipped.get("pseudo or network file system"),
        Some(&1),
        "{:?}",
        r.stats
    );
    assert_eq!(r.stats.files_seen, 1, "{:?}", r.stats);
}

/// When a sweep ends, its progress has counted the bytes of every file it saw, once,
/// however each was handled: hashed through the lanes, read for YARA and then hashed from
/// memory, read alone, or not read at all. A sweep of names and paths counts none.
#[test]
fn progress_counts_the_bytes_of_every_file_once() {
    let d = device();
    write(d.path(), "data/big.bin", &vec![1u8; 300_000]);
    write(d.path(), "data/mid.bin", &vec![2u8; 70_001]);
    fn sizes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    sizes(&e.path())
                } else if t.is_file() {
                    e.metadata().unwrap().len()
                } else {
                    0
                }
            })
            .sum()
    }
    let total = sizes(d.path());
    let sha = ioc(
        "sha",
        &or(&[term(
            "FileItem/Sha256sum",
            "is",
            "sha256",
            &sha256_hex(EVIL),
        )]),
    );
    let sized = ioc(
        "sized",
        &and(&[
            term("FileItem/SizeInBytes", "is", "int", &EVIL.len().to_string()),
            term("FileItem/Md5sum", "is", "md5", &md5_hex(EVIL)),
        ]),
    );
    let md5 = ioc(
        "md5",
        &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(EVIL))]),
    );
    let yara = IocDocument {
        include_dir: None,
        kind: DocumentKind::Yara,
        origin: "r.yar".into(),
        text: "rule r { strings: $a = \"never-there\" condition: $a }".into(),
    };
    let named = ioc(
        "named",
        &or(&[term("FileItem/FileName", "is", "string", "evil.bin")]),
    );
    for (what, docs, want) in [
        ("sha256 only", vec![sha], total),
        ("size and md5", vec![sized], total),
        ("yara and md5", vec![yara, md5], total),
        ("names only", vec![named], 0),
    ] {
        let mut req = request(d.path(), docs);
        req.scope.system_items = false;
        let progress = std::sync::Arc::new(riposte_scan::Progress::default());
        req.progress = Some(progress.clone());
        let r = sweep(&req).unwrap();
        let bytes = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(bytes, want, "{what}: {:?}", r.stats);
        assert_eq!(progress.counts_sizes.get(), Some(&(want > 0)), "{what}");
    }
}

/// Without system items nothing is collected to test a user or process term on: the
/// indicator is undetermined, not "no match". With them it is decided.
#[test]
fn terms_on_items_not_collected_are_unknown() {
    let d = device();
    let user = ioc(
        "user",
        &or(&[term("UserItem/Username", "is", "string", "nobody-here")]),
    );
    let mixed = ioc(
        "mixed",
        &and(&[
            term("FileItem/FileName", "is", "string", "evil.bin"),
            term("ProcessItem/name", "is", "string", "no-such-process"),
        ]),
    );
    let mut req = request(d.path(), vec![user.clone(), mixed.clone()]);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(verdict(&r, "user"), Verdict::Undetermined);
    assert_eq!(verdict(&r, "mixed"), Verdict::Undetermined);
    // The text report names them, though they have no unsupported term.
    let mut text = Vec::new();
    riposte_scan::cli::print_text(&mut text, &r).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("undetermined (a term could not be decided")
            && text.contains("  user name [user] (user.ioc)")
            && text.contains("  mixed name [mixed] (mixed.ioc)"),
        "{text}"
    );
    // And say why, under each.
    assert!(
        text.contains(
            "  user name [user] (user.ioc)\n    because items other than files (processes, \
             ports, users, services…) were not collected\n"
        ),
        "{text}"
    );
    let r = sweep(&request(d.path(), vec![user, mixed])).unwrap();
    assert_eq!(verdict(&r, "user"), Verdict::NoMatch);
    assert_eq!(verdict(&r, "mixed"), Verdict::NoMatch);
    // Decided verdicts carry no reason (and no field in the JSON).
    assert!(r.iocs.iter().all(|i| i.undetermined_because.is_empty()));
    let json = serde_json::to_value(&r).unwrap();
    assert!(
        json["iocs"][0].get("undetermined_because").is_none(),
        "{json}"
    );
}

/// The report reads as the indicators' authors write: a negated OpenIOC 1.0 term as
/// `isnot` / `containsnot`, a 1.1 `negate="true"` as `(negated)`, in the text and the
/// JSON alike, and verdicts in the summary's words, not the program's names.
#[test]
fn negated_terms_and_verdicts_read_as_their_authors_write_them() {
    let d = device();
    let v10 = IocDocument {
        include_dir: None,
        kind: DocumentKind::OpenIoc,
        origin: "old.ioc".into(),
        text: "<ioc xmlns=\"http://schemas.mandiant.com/2010/ioc\" id=\"old\" last-modified=\"2014-01-01T00:00:00\"><short_description>old</short_description><authored_date>2014-01-01T00:00:00</authored_date><definition><Indicator operator=\"AND\" id=\"a\">\
<IndicatorItem id=\"1\" condition=\"is\"><Context document=\"FileItem\" search=\"FileItem/FileName\" type=\"mir\"/><Content type=\"string\">evil.bin</Content></IndicatorItem>\
<IndicatorItem id=\"2\" condition=\"isnot\"><Context document=\"FileItem\" search=\"FileItem/FullPath\" type=\"mir\"/><Content type=\"string\">/var/cache/evil.bin</Content></IndicatorItem>\
<IndicatorItem id=\"3\" condition=\"containsnot\"><Context document=\"FileItem\" search=\"FileItem/FullPath\" type=\"mir\"/><Content type=\"string\">/usr/</Content></IndicatorItem>\
</Indicator></definition></ioc>".into(),
    };
    let v11 = ioc(
        "new",
        &and(&[
            term("FileItem/FileName", "is", "string", "evil.bin"),
            term_x(
                "FileItem/FullPath",
                "starts-with",
                "string",
                "/var/",
                true,
                false,
            ),
        ]),
    );
    let unsupported = ioc(
        "reg",
        &or(&[term("RegistryItem/Path", "is", "string", "HKLM\\Run")]),
    );
    let mut req = request(d.path(), vec![v10, v11, unsupported]);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    let conditions = |id: &str| {
        let mut c: Vec<String> = r
            .hits
            .iter()
            .filter(|h| h.ioc_id == id)
            .flat_map(|h| h.matched.iter().map(|t| t.condition.clone()))
            .collect();
        c.sort();
        c
    };
    assert_eq!(conditions("old"), ["containsnot", "is", "isnot"]);
    assert_eq!(conditions("new"), ["is", "starts-with (negated)"]);
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains(r#""condition":"isnot""#)
            && json.contains(r#""condition":"starts-with (negated)""#)
            && !json.contains(r#""condition":"not "#),
        "{json}"
    );
    let mut text = Vec::new();
    riposte_scan::cli::print_text(&mut text, &r).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(r#"FileItem/FullPath isnot "/var/cache/evil.bin""#)
            && text.contains(r#"FileItem/FullPath containsnot "/usr/""#)
            && text.contains(r#"FileItem/FullPath starts-with (negated) "/var/""#),
        "{text}"
    );
    assert_eq!(verdict(&r, "reg"), Verdict::Undetermined);
    assert!(
        text.contains("  reg name [reg] (undetermined):")
            && text.contains("(2 hit, 0 no match, 1 undetermined)")
            && !text.contains("(Undetermined)"),
        "{text}"
    );
}

#[test]
fn strict_unreadable_limits_and_cancel() {
    let d = device();
    let unsupported = ioc("u", &or(&[term("RegistryItem/Path", "is", "string", "x")]));
    let mut req = request(d.path(), vec![unsupported.clone()]);
    req.strict = true;
    match sweep(&req) {
        Err(Error::Unsupported { ioc_id, search, .. }) => {
            assert_eq!(
                (ioc_id.as_str(), search.as_str()),
                ("u", "RegistryItem/Path")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sweep(&request(d.path(), vec![])),
        Err(Error::NoIndicators(set_aside)) if set_aside.is_empty()
    ));
    // A STIX document whose only indicator is withdrawn says so, rather than that no
    // indicator was given.
    let withdrawn = IocDocument {
        include_dir: None,
        origin: "w.json".into(),
        kind: DocumentKind::Stix,
        text: r#"{"type":"indicator","id":"indicator--w","revoked":true,"pattern":"[file:name = 'w']"}"#.into(),
    };
    let e = sweep(&request(d.path(), vec![withdrawn]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "no indicators given to evaluate; set aside: w.json: indicator indicator--w is revoked by its producer: not evaluated"
    );
    // A STIX file without any indicator, given beside others, is named as the mistake
    // it is rather than left out.
    let not_stix = IocDocument {
        include_dir: None,
        origin: "package.json".into(),
        kind: DocumentKind::Stix,
        text: r#"{"name": "app", "version": "1.0.0"}"#.into(),
    };
    let pattern = IocDocument {
        include_dir: None,
        origin: "p.stix".into(),
        kind: DocumentKind::Stix,
        text: "[file:name = 'x']".into(),
    };
    let e = sweep(&request(d.path(), vec![pattern, not_stix]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("package.json: no STIX indicator in it"),
        "{e}"
    );
    // A rule the YARA engine refuses is skipped with a warning, or under strict mode an
    // error that names it.
    let half_bad = IocDocument {
        include_dir: None,
        kind: DocumentKind::Yara,
        origin: "half.yar".into(),
        text: "rule good { condition: true }\nrule broken { condition: true and and false }\n"
            .into(),
    };
    let mut lenient = request(d.path(), vec![half_bad.clone()]);
    lenient.scope.system_items = false;
    let r = sweep(&lenient).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("broken")),
        "{:?}",
        r.warnings
    );
    let mut strict = request(d.path(), vec![half_bad]);
    strict.strict = true;
    match sweep(&strict) {
        Err(e @ Error::RefusedRule { .. }) => {
            let e = e.to_string();
            assert!(
                e.starts_with("half.yar: a YARA rule or import did not compile"),
                "{e}"
            );
            assert!(e.contains("'broken'") && e.contains("half.yar:2:"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // An import of a module this engine lacks costs the rules that use it, not the file
    // nor the other rule files of the sweep.
    let magic = IocDocument {
        include_dir: None,
        kind: DocumentKind::Yara,
        origin: "magic.yar".into(),
        text: "import \"magic\"\nrule by_type { condition: magic.type() == \"x\" }\n\
               rule by_name { strings: $a = \"zq-marker-7\" condition: $a }\n"
            .into(),
    };
    std::fs::write(d.path().join("planted.bin"), b"a zq-marker-7 here").unwrap();
    let mut lenient = request(d.path(), vec![magic.clone()]);
    lenient.scope.system_items = false;
    let r = sweep(&lenient).unwrap();
    let w = r.warnings.join(" | ");
    assert!(
        w.contains("magic.yar: skipped 'import \"magic\"'") && w.contains("skipped rule 'by_type'"),
        "{w}"
    );
    let hit: Vec<_> = r.hits.iter().filter(|h| h.ioc_id == "by_name").collect();
    assert_eq!(hit.len(), 1, "{:?}", r.hits);
    assert!(
        matches!(&hit[0].item, HitItem::File { path, .. } if path.ends_with("planted.bin")),
        "{:?}",
        hit[0].item
    );
    std::fs::remove_file(d.path().join("planted.bin")).unwrap();
    let mut strict = request(d.path(), vec![magic]);
    strict.strict = true;
    let e = sweep(&strict).unwrap_err().to_string();
    assert!(
        e.starts_with("magic.yar: a YARA rule or import did not compile")
            && e.contains("does not have"),
        "{e}"
    );
    let bad = IocDocument {
        include_dir: None,
        kind: DocumentKind::OpenIoc,
        origin: "bad.ioc".into(),
        text: "<nope".into(),
    };
    assert!(sweep(&request(d.path(), vec![bad]))
        .unwrap_err()
        .to_string()
        .starts_with("bad.ioc:1:"));

    // A missing scope path is listed as unreadable; a too-large file is counted.
    let hash = ioc(
        "h",
        &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(EVIL))]),
    );
    let mut req = request(d.path(), vec![hash.clone()]);
    req.scope.paths = vec![PathBuf::from("/tmp"), PathBuf::from("/nonexistent")];
    req.scope.max_file_size = Some(10);
    let r = sweep(&req).unwrap();
    assert!(r.hits.is_empty());
    assert_eq!(r.unreadable.len(), 1);
    assert_eq!(r.unreadable[0].path, "/nonexistent");
    assert_eq!(
        r.stats.skipped.get("content: larger than max file size"),
        Some(&1)
    );

    let req = request(d.path(), vec![hash]);
    req.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = sweep(&req).unwrap();
    assert!(r.cancelled);
    assert_eq!(r.stats.files_seen, 0);
    // Nothing found by a sweep that did not finish is no answer.
    assert!(
        r.iocs.iter().all(|i| i.verdict == Verdict::Undetermined),
        "{:?}",
        r.iocs
    );
}

#[test]
fn cli_exit_codes() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scan: riposte_scan::cli::ScanArgs,
    }
    let d = device();
    let hit = d.path().join("hit.ioc");
    std::fs::write(
        &hit,
        ioc(
            "c",
            &or(&[term("FileItem/FileName", "is", "string", "evil.bin")]),
        )
        .text,
    )
    .unwrap();
    let miss = d.path().join("miss.ioc");
    std::fs::write(
        &miss,
        ioc(
            "m",
            &or(&[term("FileItem/FileName", "is", "string", "none.bin")]),
        )
        .text,
    )
    .unwrap();
    let root = d.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let mut a = vec!["scan", "--host-root", root, "--no-system-items"];
        a.extend_from_slice(args);
        riposte_scan::cli::run(Cli::parse_from(a).scan).unwrap()
    };
    // `--ioc FILE...` takes several files: paths go first (or after `--`).
    assert_eq!(run(&["/tmp", "--ioc", hit.to_str().unwrap(), "--json"]), 1);
    assert_eq!(
        run(&[
            "--ioc",
            miss.to_str().unwrap(),
            hit.to_str().unwrap(),
            "--",
            "/tmp"
        ]),
        1
    );
    assert_eq!(run(&["/tmp", "--ioc", miss.to_str().unwrap()]), 0);
    assert_eq!(run(&["/tmp", "--ioc", "/does/not/exist.ioc"]), 2);
    assert_eq!(run(&["/tmp", "--stix", hit.to_str().unwrap()]), 2);
    // A mistyped path is an error, as in grep, not a clean "no hit".
    assert_eq!(run(&["/no/such/dir", "--ioc", hit.to_str().unwrap()]), 2);
    let request = |args: &[&str]| {
        let mut a = vec!["scan"];
        a.extend_from_slice(args);
        riposte_scan::cli::request(&Cli::parse_from(a).scan).map(|r| r.scope.paths)
    };
    // The synopsis `--ioc FILE... PATH...` works as written: from the first value that
    // is a directory or a file not of the option's format on, the values are PATHs.
    let (hit_s, miss_s) = (hit.to_str().unwrap(), miss.to_str().unwrap());
    let elf = d.path().join("bin-tool");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01 not an indicator").unwrap();
    let elf_s = elf.to_str().unwrap();
    let parsed = |args: &[&str]| {
        let mut a = vec!["scan"];
        a.extend_from_slice(args);
        riposte_scan::cli::request(&Cli::parse_from(a).scan)
    };
    let r = parsed(&["--ioc", hit_s, miss_s, root, elf_s]).unwrap();
    assert_eq!(r.documents.len(), 2);
    assert_eq!(r.scope.paths, [PathBuf::from(root), elf.clone()]);
    // Each occurrence of the option on its own: a PATH ends the first's files, and the
    // next `--ioc` gives indicator files again (it was swept as a PATH).
    let r = parsed(&["--ioc", hit_s, root, "--ioc", miss_s]).unwrap();
    assert_eq!(r.documents.len(), 2, "{:?}", r.scope.paths);
    assert_eq!(r.scope.paths, [PathBuf::from(root)]);
    // Any XML is not OpenIOC: a `pom.xml` after the indicator files is a PATH.
    let pom = d.path().join("pom.xml");
    std::fs::write(
        &pom,
        "<?xml version=\"1.0\"?>\n<project><modelVersion>4.0.0</modelVersion></project>\n",
    )
    .unwrap();
    let r = parsed(&["--ioc", hit_s, pom.to_str().unwrap()]).unwrap();
    assert_eq!(r.documents.len(), 1);
    assert_eq!(r.scope.paths, std::slice::from_ref(&pom));
    // Any JSON is not STIX: a `package.json` after the patterns is a PATH.
    let pattern = d.path().join("p.stix");
    std::fs::write(&pattern, "[file:name = 'package.json']").unwrap();
    let package = d.path().join("package.json");
    std::fs::write(&package, r#"{"name": "app", "version": "1.0.0"}"#).unwrap();
    let r = parsed(&[
        "--stix",
        pattern.to_str().unwrap(),
        package.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(r.documents.len(), 1);
    assert_eq!(r.scope.paths, std::slice::from_ref(&package));
    // JSON that merely says "indicator" is no STIX either; a feed whose indicators come
    // after kilobytes of other objects is.
    std::fs::write(
        &package,
        r#"{"name": "dashboard", "description": "an \"indicator\" light"}"#,
    )
    .unwrap();
    let feed = d.path().join("feed.json");
    std::fs::write(
        &feed,
        format!(
            r#"[{{"type":"identity","id":"identity--1","name":"{}"}},{{"type":"indicator","id":"indicator--late","pattern":"[file:name = 'x']"}}]"#,
            "x".repeat(20_000)
        ),
    )
    .unwrap();
    let r = parsed(&[
        "--stix",
        pattern.to_str().unwrap(),
        feed.to_str().unwrap(),
        package.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(r.documents.len(), 2, "{:?}", r.scope.paths);
    assert_eq!(r.scope.paths, std::slice::from_ref(&package));
    // A file to sweep whose name says it is no indicator file is a PATH whatever it
    // holds (it may be the attacker's): not rules that leave it unswept.
    let rules = d.path().join("r.yar");
    std::fs::write(&rules, "rule a { condition: false }\n").unwrap();
    let notes = d.path().join("notes.txt");
    std::fs::write(&notes, "rule planted { condition: false }\n").unwrap();
    let r = parsed(&["--yara", rules.to_str().unwrap(), notes.to_str().unwrap()]).unwrap();
    assert_eq!(r.documents.len(), 1);
    assert_eq!(r.scope.paths, std::slice::from_ref(&notes));
    // One named as rules files often are, or with no extension, is judged by what it
    // holds.
    let more = d.path().join("more.rules");
    std::fs::write(&more, "rule b { condition: false }\n").unwrap();
    let r = parsed(&[
        "--yara",
        rules.to_str().unwrap(),
        more.to_str().unwrap(),
        notes.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(r.documents.len(), 2);
    assert_eq!(r.scope.paths, std::slice::from_ref(&notes));
    // Without an extension, a file is rules only where it declares one: a script that
    // imports, a makefile that includes, is a PATH.
    let script = d.path().join("dropper");
    std::fs::write(&script, "#!/usr/bin/python3\nimport os\nos.system('id')\n").unwrap();
    let makefile = d.path().join("Makefile");
    std::fs::write(&makefile, "include config.mk\nall:\n\tcc x.c\n").unwrap();
    let bare_rules = d.path().join("myrules");
    std::fs::write(&bare_rules, "rule c : tag { condition: false }\n").unwrap();
    let r = parsed(&[
        "--yara",
        rules.to_str().unwrap(),
        bare_rules.to_str().unwrap(),
        script.to_str().unwrap(),
        makefile.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(r.documents.len(), 2);
    assert_eq!(r.scope.paths, [script.clone(), makefile.clone()]);
    // A named FIFO is a PATH, not a document to wait on for ever.
    let fifo = d.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = parsed(&["--ioc", hit_s, fifo.to_str().unwrap()]).unwrap();
    assert_eq!((r.documents.len(), r.scope.paths.len()), (1, 1));
    // Named first, it is read without waiting for a writer that never comes: empty.
    let r = parsed(&["--ioc", fifo.to_str().unwrap(), "--", root]).unwrap();
    assert_eq!(r.documents[0].text, "");
    assert_eq!(run(&["--ioc", fifo.to_str().unwrap(), "--", root]), 2);
    std::fs::remove_file(&fifo).unwrap();
    // A file named as an indicator document is one, whatever it holds: a broken one is
    // refused, not swept as a PATH with its indicators dropped.
    let broken = d.path().join("broken.ioc");
    std::fs::write(&broken, b"\x00\x01 not xml").unwrap();
    let r = parsed(&["--ioc", hit_s, broken.to_str().unwrap(), root]).unwrap();
    assert_eq!(r.documents.len(), 2);
    assert_eq!(r.scope.paths, [PathBuf::from(root)]);
    assert_eq!(run(&["--ioc", hit_s, broken.to_str().unwrap(), "/tmp"]), 2);
    assert_eq!(r.scope.preset, None, "PATHs given: no preset");
    // A file named twice is read once.
    let twice = format!(
        "{}/../{}",
        d.path().display(),
        hit.strip_prefix(d.path().parent().unwrap())
            .unwrap()
            .display()
    );
    let r = parsed(&["--ioc", hit_s, &twice, hit_s, "--", root]).unwrap();
    assert_eq!(r.documents.len(), 1);
    let r = parsed(&["--ioc", hit_s, elf_s, "--json"]).unwrap();
    assert_eq!((r.documents.len(), r.scope.paths.len()), (1, 1));
    assert_eq!(run(&["--ioc", hit_s, "/tmp"]), 1);
    assert_eq!(run(&["--ioc", miss_s, "/tmp"]), 0);
    // The first value stays an indicator file: a directory there is the mistake named.
    let e = request(&["--ioc", root]).unwrap_err();
    assert!(
        e.to_string().contains("a directory, not an indicator file"),
        "{e}"
    );
    // An endless document is refused, not read into memory.
    let e = request(&["--ioc", "/dev/zero", "--", root]).unwrap_err();
    assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
    // On the real root, a PATH that is a symbolic link is followed, as `grep -r` does.
    let links = tempfile::tempdir().unwrap();
    std::fs::create_dir(links.path().join("real")).unwrap();
    std::fs::write(links.path().join("real/evil.bin"), b"x").unwrap();
    let link = links.path().join("link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let real = std::fs::canonicalize(links.path().join("real")).unwrap();
    let named = request(&["--ioc", hit.to_str().unwrap(), "--", link.to_str().unwrap()]);
    assert_eq!(named.unwrap(), std::slice::from_ref(&real));
    // So is a link on the way to it: the file is reported, and path terms read, by its
    // real path (as terms through the system's own directory links are rewritten).
    let inside = link.join("evil.bin");
    let named = request(&[
        "--ioc",
        hit.to_str().unwrap(),
        "--",
        inside.to_str().unwrap(),
    ]);
    assert_eq!(named.unwrap(), [real.join("evil.bin")]);
    // Not a link of a pseudo file system: `/proc/self/root` reads as `/` from here.
    let named = request(&["--ioc", hit.to_str().unwrap(), "--", "/proc/self/root"]);
    assert_eq!(named.unwrap(), [PathBuf::from("/proc/self/root")]);
    let args = Cli::parse_from([
        "scan",
        "--no-system-items",
        "--ioc",
        hit.to_str().unwrap(),
        "--",
        link.to_str().unwrap(),
    ]);
    assert_eq!(riposte_scan::cli::run(args.scan).unwrap(), 1);
    // Excluded as named, a link is left as named, and the walk leaves it out.
    let link_s = link.to_str().unwrap();
    let named = request(&["--exclude", link_s, "--ioc", hit_s, "--", link_s]);
    assert_eq!(named.unwrap(), std::slice::from_ref(&link));
    let args = Cli::parse_from([
        "scan",
        "--no-system-items",
        "--exclude",
        link_s,
        "--ioc",
        hit_s,
        "--",
        link_s,
    ]);
    assert_eq!(riposte_scan::cli::run(args.scan).unwrap(), 0);
    // A `..` is resolved, so that path terms and exclusions see the path as it is:
    // through the file system on the real root (the link before it counts)…
    let climbing = format!("{}/../real/../real", link.display());
    let named = request(&["--ioc", hit_s, "--", &climbing]).unwrap();
    assert_eq!(
        named,
        [std::fs::canonicalize(links.path()).unwrap().join("real")]
    );
    // …and inside the device under --host-root, never above its `/`, its links read as
    // its own: an absolute link is taken from the device's `/`, not the host's.
    let named = request(&["--host-root", root, "--ioc", hit_s, "--", "/var/../tmp/./"]);
    assert_eq!(named.unwrap(), [PathBuf::from("/tmp")]);
    let named = request(&["--host-root", root, "--ioc", hit_s, "--", "/../../etc/.."]);
    assert_eq!(named.unwrap(), [PathBuf::from("/")]);
    std::os::unix::fs::symlink("/tmp", d.path().join("var/run")).unwrap();
    std::os::unix::fs::symlink("../../../../../../opt", d.path().join("home/up")).unwrap();
    let named = request(&[
        "--host-root",
        root,
        "--ioc",
        hit_s,
        "--",
        "/var/run",
        "/home/up/app",
    ]);
    assert_eq!(
        named.unwrap(),
        [PathBuf::from("/tmp"), PathBuf::from("/opt/app")]
    );
    assert_eq!(
        run(&["--ioc", hit_s, "--", "/var/run"]),
        1,
        "the device's /tmp/evil.bin"
    );
    let e = request(&["--host-root", root, "--ioc", hit_s, "--", "/var/run/none"]).unwrap_err();
    assert!(e.to_string().contains("No such file"), "{e}");
    // A path in an error is escaped as in reports: no terminal escape nor override.
    let e = request(&["--ioc", hit_s, "--", "/no/such\u{202e}txt.exe\x1b[2J"]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/no/such\\xe2\\x80\\xaetxt.exe\\x1b[2J: "),
        "{e}"
    );
}

/// A file name cannot fake a line of the text report, nor send escapes to the terminal
/// showing it: its control characters are printed as `\xHH`, in the report's paths and
/// in JSON alike, and the path still names the file.
#[test]
fn control_characters_in_names_are_escaped_in_reports() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "srv/new\nHIT fake [x] (y)\x1b[2J.exe", b"x");
    let docs = vec![ioc(
        "exe",
        &or(&[term("FileItem/FileExtension", "is", "string", "exe")]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    let mut text = Vec::new();
    riposte_scan::cli::print_text(&mut text, &r).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("file /srv/new\\x0aHIT fake [x] (y)\\x1b[2J.exe"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("HIT")).count(),
        1,
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
    let HitItem::File { path, .. } = &r.hits[0].item else {
        panic!("{:?}", r.hits)
    };
    assert_eq!(
        riposte_model::path_text::decode(path),
        Path::new("/srv/new\nHIT fake [x] (y)\x1b[2J.exe")
    );
}

/// An indicator document is outside input too: its id, name and values cannot fake a
/// line of the text report or reach the terminal raw (a newline, a C1 escape, a
/// right-to-left override: all legal in XML).
#[test]
fn indicator_names_and_values_are_escaped_in_reports() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "srv/a.exe", b"x");
    let docs = vec![ioc(
        "evil&#10;HIT fake [x] (y)&#x9b;2J&#x202e;",
        &or(&[
            term("FileItem/FileExtension", "is", "string", "exe&#x202e;"),
            term("FileItem/FileName", "is", "string", "a.exe"),
        ]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(r.hits.len(), 1, "{:?}", r.hits);
    let mut text = Vec::new();
    riposte_scan::cli::print_text(&mut text, &r).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("HIT")).count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("HIT evil\\x0aHIT fake [x] (y)\\xc2\\x9b2J\\xe2\\x80\\xae name"),
        "{text}"
    );
    assert!(
        !text.contains('\u{9b}') && !text.contains('\u{202e}'),
        "{text}"
    );
}

/// Under another root, a preset's directory that is a link in the image is followed as
/// the device's own link: `/var/tmp -> /data/vt` leads to the image's `/data/vt`.
#[test]
fn preset_links_in_an_image_are_the_images() {
    let d = device();
    write(d.path(), "data/vt/evil.bin", EVIL);
    // Where droppers and rootkits put their objects: the preset's too.
    for place in [
        "usr/local/lib/x",
        "boot",
        "run/user/0",
        "usr/lib/modules/6.1/extra",
    ] {
        write(d.path(), &format!("{place}/evil.bin"), EVIL);
    }
    // The packages' own libraries are not: system-drives sweeps those.
    write(d.path(), "usr/lib/x86_64-linux-gnu/evil.bin", EVIL);
    std::fs::create_dir_all(d.path().join("var")).unwrap();
    std::os::unix::fs::symlink("/data/vt", d.path().join("var/tmp")).unwrap();
    let docs = vec![ioc(
        "evil",
        &or(&[term("FileItem/FileName", "is", "string", "evil.bin")]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.paths.clear();
    req.scope.preset = Some(riposte_scan::Preset::CriticalAreas);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(
        hit_paths(&r, "evil"),
        [
            "file /boot/evil.bin",
            "file /data/vt/evil.bin",
            "file /run/user/0/evil.bin",
            "file /tmp/evil.bin",
            "file /usr/lib/modules/6.1/extra/evil.bin",
            "file /usr/local/lib/x/evil.bin",
        ]
    );
}

/// Exclusions hold for the roots themselves (named PATHs, preset directories, a named
/// file) as for what is under them, and each is counted; one directory reached by two
/// preset paths (merged /usr) is swept once.
#[test]
fn exclusions_hold_for_roots_and_one_directory_is_swept_once() {
    let d = device();
    write(
        d.path(),
        "usr/lib/systemd/system/apt-daily.timer",
        b"[Timer]\n",
    );
    std::os::unix::fs::symlink("usr/lib", d.path().join("lib")).unwrap();
    let docs = vec![ioc(
        "named",
        &or(&[
            term("FileItem/FileName", "is", "string", "evil.bin"),
            term("FileItem/FileName", "is", "string", "apt-daily.timer"),
        ]),
    )];
    let mut req = request(d.path(), docs.clone());
    req.scope.paths.clear();
    req.scope.preset = Some(riposte_scan::Preset::CriticalAreas);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(
        hit_paths(&r, "named"),
        [
            "file /tmp/evil.bin",
            "file /usr/lib/systemd/system/apt-daily.timer"
        ]
    );
    // As a shell completes a directory: with a trailing slash.
    req.scope.exclude = vec!["/tmp/".into()];
    let r = sweep(&req).unwrap();
    assert_eq!(
        hit_paths(&r, "named"),
        ["file /usr/lib/systemd/system/apt-daily.timer"]
    );
    assert_eq!(r.stats.skipped.get("excluded"), Some(&1), "{:?}", r.stats);
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    req.scope.paths = vec![PathBuf::from("/tmp/evil.bin"), PathBuf::from("/var/cache")];
    req.scope.exclude = vec!["*.bin".into()];
    let r = sweep(&req).unwrap();
    assert!(r.hits.is_empty(), "{:?}", r.hits);
    assert_eq!(r.stats.skipped.get("excluded"), Some(&2), "{:?}", r.stats);
}

/// The files a pattern's observations matched are read for their SHA-256 only once
/// the pattern holds: not for a pattern that turns out not to.
#[test]
fn observation_hits_are_hashed_only_for_patterns_that_hold() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "srv/a.js", b"first");
    write(d.path(), "srv/b.js", b"second");
    let stix = |pattern: &str| IocDocument {
        include_dir: None,
        kind: DocumentKind::Stix,
        origin: "p.json".into(),
        text: pattern.into(),
    };
    let mut req = request(
        d.path(),
        vec![stix("[file:name = 'a.js'] AND [file:name = 'missing.js']")],
    );
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert!(r.hits.is_empty(), "{:?}", r.hits);
    assert_eq!(r.stats.hits_hashed, 0, "{:?}", r.stats);
    req.documents = vec![stix("[file:name = 'a.js'] AND [file:name = 'b.js']")];
    let r = sweep(&req).unwrap();
    let shas: Vec<_> = r
        .hits
        .iter()
        .map(|h| match &h.item {
            HitItem::File { sha256, .. } => sha256.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shas,
        [Some(sha256_hex(b"first")), Some(sha256_hex(b"second"))]
    );
    assert_eq!(r.stats.hits_hashed, 2, "{:?}", r.stats);
}

/// FOLLOWEDBY binds loosest (STIX 2.1): `[a] OR [nope] FOLLOWEDBY [b]` is
/// `([a] OR [nope]) FOLLOWEDBY [b]`, which a point-in-time sweep cannot decide, so the
/// file matching `[a]` is no hit and the pattern is undetermined.
#[test]
fn a_followedby_after_an_or_is_undetermined_not_a_hit() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "srv/a.txt", b"a");
    write(d.path(), "srv/b.bin", b"b");
    for pattern in [
        "[file:name = 'a.txt'] OR [file:name = 'nope'] FOLLOWEDBY [file:name = 'b.bin']",
        "[file:name = 'a.txt'] FOLLOWEDBY [file:name = 'nope'] OR [file:name = 'b.bin']",
    ] {
        let doc = IocDocument {
            include_dir: None,
            kind: DocumentKind::Stix,
            origin: "q.json".into(),
            text: pattern.into(),
        };
        let mut req = request(d.path(), vec![doc]);
        req.scope.system_items = false;
        let r = sweep(&req).unwrap();
        assert!(r.hits.is_empty(), "{pattern}: {:?}", r.hits);
        assert_eq!(verdict(&r, "q.json"), Verdict::Undetermined, "{pattern}");
        let unsupported: Vec<&str> = r.iocs[0]
            .unsupported
            .iter()
            .map(|u| u.search.as_str())
            .collect();
        assert_eq!(unsupported, ["FOLLOWEDBY"], "{pattern}");
    }
}

/// PATHs inside other PATHs are swept once: no file is seen, nor a hit listed, twice.
#[test]
fn nested_paths_are_swept_once() {
    let d = device();
    let docs = vec![ioc(
        "evil",
        &or(&[term("FileItem/FileName", "is", "string", "evil.bin")]),
    )];
    let mut once = request(d.path(), docs.clone());
    once.scope.system_items = false;
    let once = sweep(&once).unwrap();
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    req.scope.paths = ["/tmp", "/tmp/evil.bin", "/", "/var/cache"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let r = sweep(&req).unwrap();
    assert_eq!(r.stats.files_seen, once.stats.files_seen, "{:?}", r.stats);
    assert_eq!(
        hit_paths(&r, "evil"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    assert!(r.hits.iter().all(|h| h.matched.len() == 1), "{:?}", r.hits);
}

/// Hash IOCs with sizes (what detections produce) hash only the files of those sizes,
/// and name-constrained ones only the files of that name; the answer is unchanged.
#[test]
fn size_and_name_prefilter_reads_only_candidate_files() {
    let d = device();
    for i in 0..40 {
        write(d.path(), &format!("data/f{i}.bin"), &vec![b'x'; 100 + i]);
    }
    // Same size as the payload, different content: read, hashed, not a hit.
    write(d.path(), "data/decoy.bin", &vec![b'y'; EVIL.len()]);
    let gen = ioc_from_detection(&Detection {
        id: "gen-1".into(),
        name: "generated".into(),
        time: 1_700_000_000,
        objects: vec![DetectedObject {
            size: Some(EVIL.len() as u64),
            sha256: Some(sha256_hex(EVIL)),
            md5: Some(md5_hex(EVIL)),
            ..Default::default()
        }],
        ..Default::default()
    });
    let by_name = ioc(
        "named",
        &and(&[
            term("FileItem/FileName", "is", "string", "F7.BIN"),
            term("FileItem/Md5sum", "is", "md5", &md5_hex(&[b'x'; 107])),
        ]),
    );
    let run = |docs: Vec<IocDocument>| sweep(&request(d.path(), docs)).unwrap();
    let gen_doc = IocDocument {
        include_dir: None,
        kind: DocumentKind::OpenIoc,
        origin: "gen.ioc".into(),
        text: gen,
    };
    let r = run(vec![gen_doc]);
    assert_eq!(
        hit_paths(&r, "gen-1"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    // Two payload copies and the decoy have the payload's size: three reads of 50 files.
    assert_eq!(r.stats.files_read, 3, "{:?}", r.stats);
    assert!(r.stats.files_seen >= 48, "{:?}", r.stats);
    let r = run(vec![by_name]);
    assert_eq!(hit_paths(&r, "named"), ["file /data/f7.bin"]);
    assert_eq!(r.stats.files_read, 1, "{:?}", r.stats);
}

/// Reading a file's content for a hash must not change its access time.
#[test]
fn hashing_keeps_access_times() {
    let d = device();
    let f = d.path().join("tmp/evil.bin");
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    // atime older than mtime: under `relatime` a plain read would update it.
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(old))
        .unwrap();
    let r = sweep(&request(
        d.path(),
        vec![ioc(
            "h",
            &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(EVIL))]),
        )],
    ))
    .unwrap();
    assert_eq!(
        hit_paths(&r, "h"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    assert!(r.stats.files_read >= 2);
    assert_eq!(std::fs::metadata(&f).unwrap().accessed().unwrap(), old);
}

/// A file's times keep their fraction of a second from `statx`: a term written to a
/// fraction compares to it (2020-01-01T00:00:07 and .2 or .7 seconds).
#[test]
fn file_times_compare_to_a_fraction_of_a_second() {
    let d = device();
    let at = |name: &str, millis: u64| {
        let f = d.path().join("tmp").join(name);
        std::fs::write(&f, b"x").unwrap();
        let t =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_577_836_807_000 + millis);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    at("early.txt", 200);
    at("late.txt", 700);
    let mut req = request(
        d.path(),
        vec![
            ioc(
                "before_half",
                &and(&[
                    term("FileItem/FileExtension", "is", "string", "txt"),
                    term(
                        "FileItem/Modified",
                        "less-than",
                        "date",
                        "2020-01-01T00:00:07.5Z",
                    ),
                ]),
            ),
            ioc(
                "in_the_second",
                &and(&[
                    term("FileItem/FileExtension", "is", "string", "txt"),
                    term("FileItem/Modified", "is", "date", "2020-01-01T00:00:07Z"),
                ]),
            ),
        ],
    );
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(hit_paths(&r, "before_half"), ["file /tmp/early.txt"]);
    assert_eq!(
        hit_paths(&r, "in_the_second"),
        ["file /tmp/early.txt", "file /tmp/late.txt"]
    );
}

#[test]
fn relative_paths_are_the_current_directorys() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scan: riposte_scan::cli::ScanArgs,
    }
    let args = Cli::parse_from(["scan", "--ioc", "x.ioc", "--", "some/dir", "/abs"]).scan;
    let scope = riposte_scan::cli::scope_of(&args).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(scope.paths, [cwd.join("some/dir"), PathBuf::from("/abs")]);
    // Under another device root, a relative path is the device's, from its `/`.
    let image = tempfile::tempdir().unwrap();
    let args = Cli::parse_from([
        "scan",
        "--host-root",
        image.path().to_str().unwrap(),
        "--ioc",
        "x.ioc",
        "--",
        "rel",
    ])
    .scan;
    let scope = riposte_scan::cli::scope_of(&args).unwrap();
    assert_eq!(scope.paths, [PathBuf::from("/rel")]);
}

/// Many files hashed together (sixteen lanes per thread where the CPU has AVX-512 or AVX2):
/// exactly the planted ones match, and a cheap term that fails keeps a file unread.
#[test]
fn hash_only_sweep_over_many_files() {
    let d = device();
    let mut wanted_md5 = Vec::new();
    let mut wanted_sha = Vec::new();
    for i in 0..300usize {
        let size = (i * 7919) % 150_000;
        let data: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
        let rel = format!("bulk/d{}/f{i}.dat", i % 7);
        write(d.path(), &rel, &data);
        if i % 50 == 3 {
            wanted_md5.push((format!("file /{rel}"), md5_hex(&data)));
        }
        if i % 70 == 5 {
            wanted_sha.push((format!("file /{rel}"), sha256_hex(&data)));
        }
    }
    // Two files over a MiB: with YARA, their buffers are hashed outside the lanes.
    for i in 0..2usize {
        let data: Vec<u8> = (0..1_300_000 + i).map(|j| (j * 7 + i) as u8).collect();
        let rel = format!("bulk/big{i}.dat");
        write(d.path(), &rel, &data);
        if i == 1 {
            wanted_md5.push((format!("file /{rel}"), md5_hex(&data)));
        }
    }
    let md5_terms: Vec<String> = wanted_md5
        .iter()
        .map(|(_, h)| term("FileItem/Md5sum", "is", "md5", h))
        .collect();
    let sha_terms: Vec<String> = wanted_sha
        .iter()
        .map(|(_, h)| term("FileItem/Sha256sum", "is", "sha256", h))
        .collect();
    // Only files under /bulk/d3 may match: the others are never read.
    let scoped = and(&[
        term("FileItem/FullPath", "contains", "string", "/bulk/d3/"),
        or(&md5_terms),
    ]);
    let r = sweep(&request(
        d.path(),
        vec![
            ioc("md5s", &or(&md5_terms)),
            ioc("shas", &or(&sha_terms)),
            ioc("scoped", &scoped),
        ],
    ))
    .unwrap();
    let mut want: Vec<String> = wanted_md5.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(hit_paths(&r, "md5s"), want);
    let mut want: Vec<String> = wanted_sha.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(hit_paths(&r, "shas"), want);
    let want: Vec<String> = wanted_md5
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| p.contains("/bulk/d3/"))
        .collect();
    assert_eq!(hit_paths(&r, "scoped"), want);
    // Every file is hashed once, for all three indicators together.
    assert_eq!(r.stats.files_read, r.stats.files_seen, "{:?}", r.stats);

    // With YARA rules too, the bytes YARA read are the ones hashed: same hits, each
    // file read (and counted) once.
    let rule = IocDocument {
        include_dir: None,
        kind: DocumentKind::Yara,
        origin: "r.yar".into(),
        text: "rule planted { strings: $a = \"planted malware\" condition: $a }".into(),
    };
    let with_yara = sweep(&request(
        d.path(),
        vec![
            ioc("md5s", &or(&md5_terms)),
            ioc("shas", &or(&sha_terms)),
            ioc("scoped", &scoped),
            rule,
        ],
    ))
    .unwrap();
    for id in ["md5s", "shas", "scoped"] {
        assert_eq!(hit_paths(&with_yara, id), hit_paths(&r, id), "{id}");
    }
    assert_eq!(
        hit_paths(&with_yara, "planted"),
        ["file /tmp/evil.bin", "file /var/cache/evil.bin"]
    );
    assert_eq!(
        (with_yara.stats.files_read, with_yara.stats.bytes_read),
        (r.stats.files_read, r.stats.bytes_read)
    );

    // With only the scoped indicator, only the files under /bulk/d3 are read.
    let r = sweep(&request(d.path(), vec![ioc("scoped", &scoped)])).unwrap();
    assert_eq!(hit_paths(&r, "scoped"), want);
    let in_d3 = (0..300).filter(|i| i % 7 == 3).count() as u64;
    assert_eq!(r.stats.files_read, in_d3, "{:?}", r.stats);
}

/// A hash that could not be computed (file over the size limit) makes a term on it
/// unknown: `Md5sum isnot X` must not turn an unhashed file into a hit.
#[test]
fn an_uncomputed_hash_is_unknown_not_a_match() {
    let d = device();
    write(d.path(), "opt/big/svchost.exe", &vec![b'z'; 4096]);
    write(d.path(), "opt/small/svchost.exe", b"small impostor");
    let impostor = || {
        ioc(
            "impostor",
            &and(&[
                term("FileItem/FileName", "is", "string", "svchost.exe"),
                term_x(
                    "FileItem/Md5sum",
                    "is",
                    "md5",
                    &md5_hex(b"the genuine one"),
                    true,
                    false,
                ),
            ]),
        )
    };
    let mut req = request(d.path(), vec![impostor()]);
    req.scope.max_file_size = Some(1000);
    let r = sweep(&req).unwrap();
    // The small one is hashed and is not the genuine file: a hit. The big one could not
    // be hashed: no hit, and the indicator is undetermined rather than a clean miss.
    assert_eq!(hit_paths(&r, "impostor"), ["file /opt/small/svchost.exe"]);
    assert_eq!(
        r.stats.skipped.get("content: larger than max file size"),
        Some(&1),
        "{:?}",
        r.stats
    );
    let mut req = request(
        d.path(),
        vec![ioc(
            "impostor2",
            &and(&[
                term("FileItem/FullPath", "contains", "string", "/opt/big/"),
                term_x(
                    "FileItem/Md5sum",
                    "is",
                    "md5",
                    &md5_hex(b"the genuine one"),
                    true,
                    false,
                ),
            ]),
        )],
    );
    req.scope.max_file_size = Some(1000);
    let r = sweep(&req).unwrap();
    assert!(r.hits.is_empty(), "{:?}", r.hits);
    assert_eq!(verdict(&r, "impostor2"), Verdict::Undetermined);
    // It says which file, and why.
    let summary = r.iocs.iter().find(|i| i.id == "impostor2").unwrap();
    assert_eq!(
        summary.undetermined_because,
        ["file /opt/big/svchost.exe: larger than the maximum file size"],
        "{summary:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["iocs"][0]["undetermined_because"][0],
        "file /opt/big/svchost.exe: larger than the maximum file size"
    );
    // An indicator undetermined by a term this scanner cannot evaluate says so, not a
    // file it happened to look at first, on which nothing was wrong.
    let req = request(
        d.path(),
        vec![ioc(
            "registry-or-name",
            &or(&[
                term("RegistryItem/Path", "is", "string", "HKLM\\Run"),
                term("FileItem/FileName", "is", "string", "no-such-name"),
            ]),
        )],
    );
    let r = sweep(&req).unwrap();
    let summary = r.iocs.iter().find(|i| i.id == "registry-or-name").unwrap();
    assert_eq!(summary.verdict, Verdict::Undetermined);
    assert_eq!(
        summary.undetermined_because,
        ["it has terms this scanner cannot evaluate (listed under its unsupported terms)"],
        "{summary:?}"
    );
    // With YARA rules too (which read every file), each file over the limit is counted
    // once, not once per reader: the big svchost.exe and alice's notes.
    let rules = IocDocument {
        include_dir: None,
        kind: DocumentKind::Yara,
        origin: "z.yar".into(),
        text: "rule zz { strings: $a = \"zzzz\" condition: $a }".into(),
    };
    let mut req = request(d.path(), vec![impostor(), rules]);
    req.scope.max_file_size = Some(1000);
    let r = sweep(&req).unwrap();
    assert_eq!(
        r.stats.skipped.get("content: larger than max file size"),
        Some(&2),
        "{:?}",
        r.stats
    );
}

#[test]
fn file_hits_carry_the_identity_of_what_hit() {
    use std::os::unix::fs::MetadataExt;
    let d = device();
    let meta = std::fs::metadata(d.path().join("tmp/evil.bin")).unwrap();
    // By name (nothing hashed during the sweep) and by SHA-256 (hashed by it).
    let by_name = ioc(
        "name",
        &or(&[term("FileItem/FullPath", "is", "string", "/tmp/evil.bin")]),
    );
    let by_hash = ioc(
        "hash",
        &and(&[
            term("FileItem/FullPath", "is", "string", "/tmp/evil.bin"),
            term("FileItem/Sha256sum", "is", "string", &sha256_hex(EVIL)),
        ]),
    );
    let mut seen = Vec::new();
    for doc in [by_name, by_hash] {
        let origin = doc.origin.clone();
        let r = sweep(&request(d.path(), vec![doc])).unwrap();
        // The sweep by name stats only the files whose names match; it still sees all.
        seen.push(r.stats.files_seen);
        let items: Vec<&HitItem> = r.hits.iter().map(|h| &h.item).collect();
        assert_eq!(
            items,
            [&HitItem::File {
                path: "/tmp/evil.bin".into(),
                dev: meta.dev(),
                ino: meta.ino(),
                sha256: Some(sha256_hex(EVIL)),
            }],
            "{origin}"
        );
    }
    assert!(seen[0] > 1 && seen[0] == seen[1], "{seen:?}");
}

/// Indicators that need one of a few path tests are looked up in an index instead of
/// being evaluated on every file: the hits must be exactly those of evaluating them.
#[test]
fn path_tests_are_indexed_without_changing_what_hits() {
    let d = device();
    write(d.path(), "data/key.txt", b"k");
    // KELVIN SIGN: lower-cased it is an ASCII 'k', so a test for `/key.txt` holds.
    write(d.path(), "data/\u{212A}ey.txt", b"k");
    write(d.path(), "data/noext", b"n");
    write(d.path(), "data/.hidden", b"h");
    let docs = vec![
        ioc(
            "i1",
            &or(&[
                term("FileItem/FullPath", "contains", "string", "/OPT/app/"),
                term("FileItem/FileName", "is", "string", "notes.TXT"),
            ]),
        ),
        ioc(
            "i2",
            &and(&[
                term("FileItem/FilePath", "starts-with", "string", "/home"),
                term("FileItem/FileExtension", "is", "string", "txt"),
            ]),
        ),
        ioc(
            "i3",
            &and(&[
                term("FileItem/FileName", "ends-with", "string", ".BIN"),
                term("FileItem/FullPath", "contains", "string", "cache"),
            ]),
        ),
        // (`FileName is` goes to the name index; a full-path test to the path index.)
        ioc(
            "i4",
            &or(&[term("FileItem/FullPath", "ends-with", "string", "/KEY.txt")]),
        ),
        ioc(
            "i5",
            &or(&[
                term("FileItem/FullPath", "contains", "string", "/tmp/"),
                term("FileItem/FileName", "matches", "string", "^Read"),
            ]),
        ),
        ioc(
            "i6",
            &and(&[
                term("FileItem/FileName", "starts-with", "string", "EVIL"),
                term_x(
                    "FileItem/FullPath",
                    "contains",
                    "string",
                    "/var/",
                    true,
                    false,
                ),
            ]),
        ),
        ioc(
            "i7",
            &or(&[term("FileItem/FullPath", "ends-with", "string", "evil.bin")]),
        ),
        ioc(
            "i8",
            &or(&[term(
                "FileItem/FullPath",
                "starts-with",
                "string",
                "evil.bin",
            )]),
        ),
        ioc(
            "i9",
            &or(&[term("FileItem/FileExtension", "is", "string", "hidden")]),
        ),
    ];
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    let want: &[(&str, &[&str])] = &[
        (
            "i1",
            &["file /home/alice/notes.txt", "file /opt/app/Readme.TXT"],
        ),
        ("i2", &["file /home/alice/notes.txt"]),
        ("i3", &["file /var/cache/evil.bin"]),
        ("i4", &["file /data/key.txt", "file /data/\u{212A}ey.txt"]),
        ("i5", &["file /opt/app/Readme.TXT", "file /tmp/evil.bin"]),
        ("i6", &["file /tmp/evil.bin"]),
        ("i7", &["file /tmp/evil.bin", "file /var/cache/evil.bin"]),
        ("i8", &[]),
        // `.hidden` has no extension: the dot is its first byte.
        ("i9", &[]),
    ];
    for (id, paths) in want {
        assert_eq!(hit_paths(&r, id), *paths, "{id}");
        let v = if paths.is_empty() {
            Verdict::NoMatch
        } else {
            Verdict::Hit
        };
        assert_eq!(verdict(&r, id), v, "{id}");
    }
    // Nothing needed content: no file was read.
    assert_eq!(r.stats.files_read, 0, "{:?}", r.stats);
}

/// A hit on a file whose name is not UTF-8 names it with `\xHH` (the `path_text` form),
/// which an IOC can spell and which leads back to the very file that hit.
#[test]
fn a_hit_on_a_name_that_is_not_utf8_names_it_losslessly() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const ODD: &[u8] = b"a payload under a name that is not UTF-8";
    let d = device();
    let host = d
        .path()
        .join("tmp")
        .join(std::ffi::OsStr::from_bytes(b"odd\xff\xfe.bin"));
    std::fs::write(&host, ODD).unwrap();
    // Where a lossy copy of the name would lead: another file, which must not hit.
    write(d.path(), "tmp/odd\u{fffd}\u{fffd}.bin", b"innocent");
    let meta = std::fs::metadata(&host).unwrap();
    let by_hash = ioc(
        "hash",
        &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(ODD))]),
    );
    let by_path = ioc(
        "path",
        &or(&[term(
            "FileItem/FullPath",
            "is",
            "string",
            "/tmp/odd\\xff\\xfe.bin",
        )]),
    );
    // By name: the name index spells file names as the evaluation does.
    let by_name = ioc(
        "name",
        &or(&[term(
            "FileItem/FileName",
            "is",
            "string",
            "ODD\\xFF\\xfe.bin",
        )]),
    );
    for doc in [by_hash, by_path, by_name] {
        let origin = doc.origin.clone();
        let r = sweep(&request(d.path(), vec![doc])).unwrap();
        let items: Vec<&HitItem> = r.hits.iter().map(|h| &h.item).collect();
        assert_eq!(
            items,
            [&HitItem::File {
                path: "/tmp/odd\\xff\\xfe.bin".into(),
                dev: meta.dev(),
                ino: meta.ino(),
                sha256: Some(sha256_hex(ODD)),
            }],
            "{origin}"
        );
        let HitItem::File { path, .. } = items[0] else {
            unreachable!()
        };
        let device_path = riposte_model::path_text::decode(path);
        assert_eq!(
            d.path().join(device_path.strip_prefix("/").unwrap()),
            host,
            "{origin}"
        );
    }
}

/// A process running a file whose name is not UTF-8 has that path in `path_text` form,
/// as the file's own hits spell it.
#[test]
fn a_process_path_that_is_not_utf8_is_named_losslessly() {
    use std::os::unix::ffi::OsStrExt;
    let d = device();
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join(std::ffi::OsStr::from_bytes(b"sle\xffep"));
    std::fs::copy("/usr/bin/sleep", &exe).unwrap();
    let spelt = format!(
        "{}/sle\\xffep",
        bin.path().to_str().expect("a UTF-8 temporary directory")
    );
    let mut child = std::process::Command::new(&exe)
        .arg("986.54321")
        .spawn()
        .unwrap();
    // Until the child has run exec, its /proc entry still shows this test's executable;
    // and the kernel sets the new program's link a moment before its arguments, so a
    // loaded machine can show one without the other.
    let proc_exe = format!("/proc/{}/exe", child.id());
    let proc_cmdline = format!("/proc/{}/cmdline", child.id());
    for _ in 0..1000 {
        if std::fs::read_link(&proc_exe).is_ok_and(|p| p == exe)
            && std::fs::read(&proc_cmdline).is_ok_and(|c| c.windows(9).any(|w| w == b"986.54321"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let docs = vec![ioc(
        "proc",
        &and(&[
            term("ProcessItem/path", "is", "string", &spelt),
            term("ProcessItem/arguments", "contains", "string", "986.54321"),
        ]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.paths.clear();
    let r = sweep(&req);
    let _ = child.kill();
    let _ = child.wait();
    let hits: Vec<_> = r.unwrap().hits.into_iter().map(|h| h.item).collect();
    assert_eq!(
        hits,
        [HitItem::Process {
            pid: child.id() as i64,
            name: "sle\\xffep".into()
        }]
    );
}

/// Files and directories removed while the sweep runs are counted as gone, not listed
/// as unreadable: the sweep looked, and nothing was there. (The removal races with the
/// walk, so the sweep is run again until something vanished between its listing and
/// its opening.)
#[test]
fn what_vanishes_during_a_sweep_is_gone_not_unreadable() {
    let d = tempfile::tempdir().unwrap();
    let churn = d.path().join("churn");
    let docs = vec![ioc(
        "size",
        &or(&[term("FileItem/SizeInBytes", "is", "int", "987654")]),
    )];
    let mut req = request(d.path(), docs);
    req.scope.system_items = false;
    req.scope.threads = 1;
    for attempt in 0..50 {
        let mut paths = Vec::new();
        for dir in 0..20 {
            std::fs::create_dir_all(churn.join(format!("d{dir}"))).unwrap();
            for file in 0..100 {
                let path = churn.join(format!("d{dir}/f{file}"));
                std::fs::write(&path, b"x").unwrap();
                paths.push(path);
            }
        }
        // Removed in an order unrelated to the walk's, so that some go after their
        // directory was listed and before they are looked at.
        let mut order: Vec<usize> = (0..paths.len()).collect();
        let mut seed = 0x9E37_79B9_u64 + attempt;
        for i in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let remover = std::thread::spawn({
            let churn = churn.clone();
            move || {
                for i in order {
                    let _ = std::fs::remove_file(&paths[i]);
                }
                let _ = std::fs::remove_dir_all(&churn);
            }
        });
        let r = sweep(&req).unwrap();
        remover.join().unwrap();
        assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
        assert!(!r.stats.skipped.contains_key("unreadable"), "{:?}", r.stats);
        assert_eq!(verdict(&r, "size"), Verdict::NoMatch);
        if r.stats.gone > 0 {
            let mut text = Vec::new();
            riposte_scan::cli::print_text(&mut text, &r).unwrap();
            let text = String::from_utf8(text).unwrap();
            assert!(
                text.contains(&format!("; gone during the sweep: {}", r.stats.gone))
                    && !text.contains("unreadable"),
                "{text}"
            );
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["stats"]["gone"], r.stats.gone, "{json}");
            return;
        }
    }
    panic!("nothing vanished between its listing and its opening in 50 sweeps");
}

/// A tree nested past `PATH_MAX` (4,096 bytes) is walked and its files read: a payload
/// hidden that deep is found, by name and by content, and its hits get their SHA-256.
#[test]
fn files_nested_past_path_max_are_swept() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("deep")).unwrap();
    let segment = std::ffi::CString::new("d".repeat(200)).unwrap();
    let mut dir = std::fs::File::open(root.path().join("deep"))
        .map(OwnedFd::from)
        .unwrap();
    for _ in 0..25 {
        // SAFETY: valid NUL-terminated names; each descriptor is checked and owned.
        unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), segment.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_raw_fd(),
                segment.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            dir = OwnedFd::from_raw_fd(fd);
        }
    }
    let name = std::ffi::CString::new("deepfile.txt").unwrap();
    let payload = b"hidden deep below PATH_MAX";
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT,
            0o644,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a descriptor just opened, owned here.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut f, payload).unwrap();
    drop(f);
    let docs = vec![
        ioc(
            "by-name",
            &or(&[term("FileItem/FileName", "is", "string", "deepfile.txt")]),
        ),
        ioc(
            "by-hash",
            &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(payload))]),
        ),
    ];
    let mut req = request(root.path(), docs);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);
    for id in ["by-name", "by-hash"] {
        assert_eq!(verdict(&r, id), Verdict::Hit, "{id}");
        let hits = hit_paths(&r, id);
        assert!(
            hits.len() == 1 && hits[0].ends_with("/deepfile.txt") && hits[0].len() > 5000,
            "{id}: {hits:?}"
        );
    }
    // The hits' SHA-256, read again by path after the walk: past PATH_MAX too, and a
    // pattern's observation, read once the pattern holds, alike.
    write(root.path(), "top.txt", b"top");
    let stix = IocDocument {
        include_dir: None,
        kind: DocumentKind::Stix,
        origin: "p.json".into(),
        text: "[file:name = 'deepfile.txt'] AND [file:name = 'top.txt']".into(),
    };
    let by_extension = ioc(
        "by-extension",
        &or(&[term("FileItem/FileExtension", "is", "string", "txt")]),
    );
    for doc in [by_extension, stix] {
        req.documents = vec![doc];
        let r = sweep(&req).unwrap();
        let deep: Vec<&Option<String>> = r
            .hits
            .iter()
            .filter_map(|h| match &h.item {
                HitItem::File { path, sha256, .. } if path.ends_with("/deepfile.txt") => {
                    Some(sha256)
                }
                _ => None,
            })
            .collect();
        assert_eq!(deep, [&Some(sha256_hex(payload))], "{:?}", r.stats);
        assert_eq!(r.stats.hits_hashed, 2, "{:?}", r.stats);
        assert!(
            !r.stats
                .skipped
                .keys()
                .any(|k| k.starts_with("hit's SHA-256")),
            "{:?}",
            r.stats
        );
    }
}

/// Terms compare a name's characters, not the escaped form reports show: a backslash
/// or a newline in a name is matched as it is, by OpenIOC and STIX alike, and the
/// escape's own backslash matches nothing.
#[test]
fn names_with_a_backslash_or_a_newline_are_matched_as_they_are() {
    let d = device();
    write(d.path(), "tmp/back\\slash.txt", b"b");
    write(d.path(), "tmp/new\nline.txt", b"n");
    let run = |doc: IocDocument| {
        let mut req = request(d.path(), vec![doc]);
        req.scope.system_items = false;
        req.scope.paths = vec![PathBuf::from("/tmp")];
        let r = sweep(&req).unwrap();
        let mut names: Vec<String> = r.hits.iter().map(|h| h.item.to_string()).collect();
        names.sort();
        names
    };
    let by_name = ioc(
        "n",
        &or(&[term("FileItem/FileName", "is", "string", "back\\slash.txt")]),
    );
    assert_eq!(run(by_name), ["file /tmp/back\\\\slash.txt"]);
    let by_regex = ioc(
        "r",
        &or(&[term(
            "FileItem/FileName",
            "matches",
            "string",
            "^new\\nline",
        )]),
    );
    assert_eq!(run(by_regex), ["file /tmp/new\\x0aline.txt"]);
    let backslash = ioc(
        "b",
        &or(&[term("FileItem/FileName", "contains", "string", "\\")]),
    );
    assert_eq!(run(backslash), ["file /tmp/back\\\\slash.txt"]);
    let stix = IocDocument {
        include_dir: None,
        origin: "s.stix".into(),
        kind: DocumentKind::Stix,
        text: r"[file:name = 'back\\slash.txt']".into(),
    };
    assert_eq!(run(stix), ["file /tmp/back\\\\slash.txt"]);
    // LIKE's wildcards match a newline as any other character.
    for pattern in [
        "[file:name LIKE '%line.txt']",
        "[file:name LIKE 'new_line%']",
    ] {
        let like = IocDocument {
            include_dir: None,
            origin: "l.stix".into(),
            kind: DocumentKind::Stix,
            text: pattern.into(),
        };
        assert_eq!(run(like), ["file /tmp/new\\x0aline.txt"], "{pattern}");
    }
}

/// A unit's status is read from systemd's cgroups, so it is known only where systemd
/// runs the device: elsewhere (a host without it, an image) a status term is unknown,
/// not "stopped".
#[test]
fn a_service_status_is_unknown_without_systemd() {
    let d = device();
    let status = |status: &str| {
        ioc(
            status,
            &and(&[
                term("ServiceItem/name", "is", "string", "backdoor"),
                term("ServiceItem/status", "is", "string", status),
            ]),
        )
    };
    let verdicts = || {
        let mut req = request(d.path(), vec![status("running"), status("stopped")]);
        req.scope.paths = vec![PathBuf::from("/etc")];
        let r = sweep(&req).unwrap();
        (verdict(&r, "running"), verdict(&r, "stopped"))
    };
    assert_eq!(verdicts(), (Verdict::Undetermined, Verdict::Undetermined));
    std::fs::create_dir_all(d.path().join("run/systemd/system")).unwrap();
    // Running where a process is in its cgroup or below it (a delegated service's
    // processes are in a child cgroup): the kernel's `populated`.
    let events = "sys/fs/cgroup/system.slice/backdoor.service/cgroup.events";
    write(d.path(), events, b"populated 1\nfrozen 0\n");
    assert_eq!(verdicts(), (Verdict::Hit, Verdict::NoMatch));
    write(d.path(), events, b"populated 0\nfrozen 0\n");
    assert_eq!(verdicts(), (Verdict::NoMatch, Verdict::Hit));
}

/// The name index reads a plain ASCII name as it is and any other through its text form:
/// either way it finds what the terms find, case folded (ASCII and not), with a space,
/// a tab or a non-UTF-8 byte in the name.
#[test]
fn the_name_index_finds_names_as_the_terms_read_them() {
    use std::os::unix::ffi::OsStrExt;
    let d = device();
    write(d.path(), "tmp/MiXeD Case.TXT", b"m");
    write(d.path(), "tmp/tab\tname.txt", b"t");
    write(d.path(), "tmp/ÉTÉ.txt", b"e");
    let odd = d
        .path()
        .join(std::ffi::OsStr::from_bytes(b"tmp/BAD\xffNAME.txt"));
    std::fs::write(&odd, b"x").unwrap();
    let run = |value: &str| {
        let doc = ioc(
            "n",
            &or(&[term("FileItem/FileName", "is", "string", value)]),
        );
        let mut req = request(d.path(), vec![doc]);
        req.scope.system_items = false;
        req.scope.paths = vec![PathBuf::from("/tmp")];
        let r = sweep(&req).unwrap();
        r.hits
            .iter()
            .map(|h| h.item.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run("mixed case.txt"), ["file /tmp/MiXeD Case.TXT"]);
    assert_eq!(run("TAB&#9;NAME.TXT"), ["file /tmp/tab\\x09name.txt"]);
    assert_eq!(run("été.txt"), ["file /tmp/ÉTÉ.txt"]);
    assert_eq!(run("bad\\xffname.txt"), ["file /tmp/BAD\\xffNAME.txt"]);
    assert!(run("mixed  case.txt").is_empty());
}

/// A name with a byte that is not UTF-8 (written `\xff` in reports and indicators) and a
/// name with a real backslash followed by `xff` are two names to a term: each indicator
/// hits its own file only.
#[test]
fn a_real_backslash_x_is_not_taken_for_a_byte() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("t");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"x\xff.bin")), b"1").unwrap();
    std::fs::write(dir.join("x\\xff.bin"), b"2").unwrap();
    let r = sweep(&request(
        d.path(),
        vec![
            ioc(
                "byte",
                &or(&[term("FileItem/FileName", "is", "string", "x\\xff.bin")]),
            ),
            ioc(
                "backslash",
                &or(&[term("FileItem/FileName", "is", "string", "x\\\\xff.bin")]),
            ),
        ],
    ))
    .unwrap();
    assert_eq!(hit_paths(&r, "byte"), ["file /t/x\\xff.bin"]);
    assert_eq!(hit_paths(&r, "backslash"), ["file /t/x\\\\xff.bin"]);
}

/// A process's name and program are compared as they are, as a file's are: a backslash
/// is a backslash, and a right-to-left override (a masquerading trick) is that
/// character, not the escaped form reports show.
#[test]
fn process_names_are_matched_as_they_are() {
    let d = device();
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let names = ["back\\slp", "rtl\u{202e}gpj.exe"];
    let mut children = Vec::new();
    for name in names {
        let program = d.path().join(name);
        std::fs::copy(sleep, &program).unwrap();
        children.push(
            std::process::Command::new(&program)
                .arg("987.123")
                .spawn()
                .unwrap(),
        );
    }
    let pid = |i: usize| children[i].id().to_string();
    let path_of = |name: &str| d.path().join(name).to_str().unwrap().to_string();
    let docs = vec![
        ioc(
            "backslash",
            &and(&[
                term("ProcessItem/name", "is", "string", names[0]),
                term("ProcessItem/path", "is", "string", &path_of(names[0])),
                term("ProcessItem/pid", "is", "int", &pid(0)),
            ]),
        ),
        ioc(
            "escaped",
            &and(&[
                term("ProcessItem/name", "is", "string", "back\\\\slp"),
                term("ProcessItem/pid", "is", "int", &pid(0)),
            ]),
        ),
        ioc(
            "override",
            &and(&[
                term("ProcessItem/name", "is", "string", names[1]),
                term("ProcessItem/pid", "is", "int", &pid(1)),
            ]),
        ),
    ];
    let mut req = request(d.path(), docs);
    req.scope.paths.clear();
    let r = sweep(&req);
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let r = r.unwrap();
    assert_eq!(verdict(&r, "backslash"), Verdict::Hit);
    assert_eq!(verdict(&r, "escaped"), Verdict::NoMatch);
    assert_eq!(verdict(&r, "override"), Verdict::Hit);
}

/// An image's files are read in the image: an absolute link in it (`etc/passwd ->
/// /etc/passwd`) names the image's own file, never this machine's, so no account, hosts
/// entry or OS of the scanning machine is taken for the device's. Where the image does
/// not say (no hostname, no os-release), terms on it are unknown, negated too.
#[test]
fn an_images_links_are_followed_inside_it() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("srv")).unwrap();
    for f in ["passwd", "os-release"] {
        std::os::unix::fs::symlink(Path::new("/etc").join(f), r.join("etc").join(f)).unwrap();
    }
    // Its `proc`, `lib` and systemd configuration linked to this machine's: none of
    // it is the image's (this machine's hostname, its services).
    std::os::unix::fs::symlink("/proc", r.join("proc")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", r.join("lib")).unwrap();
    std::os::unix::fs::symlink("/etc/systemd", r.join("etc/systemd")).unwrap();
    // Absolute, but to a file the image has.
    write(r, "etc/hosts.real", b"203.0.113.5 insider.example\n");
    std::os::unix::fs::symlink("/etc/hosts.real", r.join("etc/hosts")).unwrap();
    assert!(
        Path::new("/etc/passwd").is_file(),
        "the test needs this machine's passwd"
    );
    let negated = |search: &str, value: &str| term_x(search, "is", "string", value, true, false);
    let docs = vec![
        ioc(
            "user",
            &or(&[term("UserItem/Username", "is", "string", "root")]),
        ),
        ioc(
            "insider",
            &or(&[term("DnsEntryItem/Host", "is", "string", "insider.example")]),
        ),
        ioc(
            "localhost",
            &or(&[term("DnsEntryItem/Host", "is", "string", "localhost")]),
        ),
        ioc(
            "os",
            &or(&[term("SystemInfoItem/OS", "contains", "string", "Linux")]),
        ),
        ioc("not-host", &or(&[negated("SystemInfoItem/hostname", "vm")])),
        ioc("not-os", &or(&[negated("SystemInfoItem/OS", "Plan 9")])),
        ioc(
            "service",
            &or(&[term("ServiceItem/name", "contains", "string", "")]),
        ),
    ];
    let mut req = request(r, docs);
    req.scope.paths = vec![PathBuf::from("/srv")];
    // An image: no live system's process table (as `--host-root` on one sets).
    req.scope.proc_root = None;
    let r = sweep(&req).unwrap();
    assert_eq!(verdict(&r, "user"), Verdict::Undetermined);
    assert_eq!(verdict(&r, "insider"), Verdict::Hit);
    assert_eq!(verdict(&r, "localhost"), Verdict::NoMatch);
    for id in ["os", "not-host", "not-os"] {
        assert_eq!(verdict(&r, id), Verdict::Undetermined, "{id}");
    }
    assert_eq!(verdict(&r, "service"), Verdict::NoMatch);
    assert_eq!(
        r.stats.items.get("services").copied().unwrap_or(0),
        0,
        "{:?}",
        r.stats.items
    );
}

/// On a merged `/usr` (`/lib -> usr/lib`) the walk sees a file only under its real
/// directory, which follows no link: an indicator naming it through the device's link
/// (`FullPath is /lib/libgcc4.4.so`, as XOR.DDoS indicators do) still finds it.
#[test]
fn paths_through_the_devices_directory_links_find_their_files() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "usr/lib/libgcc4.4.so", EVIL);
    write(r, "run/evil.pid", b"1");
    write(r, "usr/libexec/other.so", b"x");
    std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
    std::fs::create_dir_all(r.join("var")).unwrap();
    std::os::unix::fs::symlink("../run", r.join("var/run")).unwrap();
    let docs = vec![
        ioc(
            "lib",
            &or(&[term(
                "FileItem/FullPath",
                "is",
                "string",
                "/lib/libgcc4.4.so",
            )]),
        ),
        ioc(
            "lib-upper",
            &or(&[term(
                "FileItem/FullPath",
                "starts-with",
                "string",
                "/LIB/libgcc",
            )]),
        ),
        ioc(
            "var-run",
            &or(&[term("FileItem/FilePath", "is", "string", "/var/run")]),
        ),
        // A prefix that is no whole directory name is left as written.
        ioc(
            "libexec",
            &or(&[term(
                "FileItem/FullPath",
                "starts-with",
                "string",
                "/libexec/",
            )]),
        ),
        ioc(
            "real",
            &or(&[term(
                "FileItem/FullPath",
                "is",
                "string",
                "/usr/lib/libgcc4.4.so",
            )]),
        ),
        // Without its `/`, a prefix may name other directories (`/libroot`): left as
        // written, never read as `/usr/lib`, which would take in `/usr/libexec`.
        ioc(
            "lib-prefix",
            &or(&[term("FileItem/FullPath", "starts-with", "string", "/lib")]),
        ),
    ];
    let r = sweep(&request(r, docs)).unwrap();
    assert_eq!(hit_paths(&r, "lib"), ["file /usr/lib/libgcc4.4.so"]);
    assert_eq!(hit_paths(&r, "lib-upper"), ["file /usr/lib/libgcc4.4.so"]);
    assert_eq!(hit_paths(&r, "var-run"), ["file /run/evil.pid"]);
    assert_eq!(verdict(&r, "libexec"), Verdict::NoMatch);
    assert_eq!(verdict(&r, "real"), Verdict::Hit);
    assert_eq!(verdict(&r, "lib-prefix"), Verdict::NoMatch);
    // An exclusion written through the link holds where the walk sees the files: in
    // any sweep (an IOC scan task's too), and in `riposte scan`'s own request.
    let mut req = request(
        d.path(),
        vec![ioc(
            "lib",
            &or(&[term("FileItem/FileName", "is", "string", "libgcc4.4.so")]),
        )],
    );
    assert_eq!(verdict(&sweep(&req).unwrap(), "lib"), Verdict::Hit);
    req.scope.exclude = vec!["/lib/libgcc*".into()];
    assert_eq!(verdict(&sweep(&req).unwrap(), "lib"), Verdict::NoMatch);
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scan: riposte_scan::cli::ScanArgs,
    }
    let root = d.path().to_str().unwrap();
    let cli = Cli::parse_from(
        ["scan", "--host-root", root, "--exclude", "/lib/x*", "--ioc"]
            .into_iter()
            .chain([d.path().join("x.ioc").to_str().unwrap(), "--", "/usr"]),
    );
    std::fs::write(
        d.path().join("x.ioc"),
        ioc("x", &or(&[term("FileItem/FileName", "is", "string", "a")])).text,
    )
    .unwrap();
    let scope = riposte_scan::cli::request(&cli.scan).unwrap().scope;
    assert!(
        scope.exclude.contains(&"/usr/lib/x*".to_string()),
        "{:?}",
        scope.exclude
    );
}

/// A service is what systemd would run: a drop-in that empties `ExecStart=` and sets
/// another program (the classic hijack) replaces the unit's, and units in
/// `/usr/local/lib/systemd/system`, every user's (`/etc/systemd/user`) and a user's own
/// (`~/.config/systemd/user`) are services too.
#[test]
fn services_are_what_systemd_would_run() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(
        r,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    );
    write(
        r,
        "lib/systemd/system/sshd.service",
        b"[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n",
    );
    write(
        r,
        "etc/systemd/system/sshd.service.d/override.conf",
        b"[Service]\nExecStart=\nExecStart=/tmp/.x/evilbin --beacon\n",
    );
    // A later drop-in that sets nothing for ExecStart leaves the override in place.
    write(
        r,
        "usr/lib/systemd/system/sshd.service.d/zz-limits.conf",
        b"[Service]\nLimitNOFILE=4096\n",
    );
    write(
        r,
        "usr/local/lib/systemd/system/evil2.service",
        b"[Service]\nExecStart=/tmp/.x/evilbin2\n",
    );
    write(
        r,
        "etc/systemd/system/quoted.service",
        b"[Service]\nExecStart='/opt/a b/x' --flag\n",
    );
    // A unit that is a FIFO no one writes to, or a link to an endless device: read
    // without waiting and within a size (a user could make them). Neither is a unit
    // file systemd would load (not a regular file; nothing there in the image).
    let fifo = r.join("home/alice/.config/systemd/user/fifo.service");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(
        "/dev/zero",
        r.join("home/alice/.config/systemd/user/zero.service"),
    )
    .unwrap();
    // Spaces around `=`, a continued line, and an ExecStart where systemd ignores it.
    write(
        r,
        "etc/systemd/system/spaced.service",
        b"[Unit]\nExecStart=/decoy\n[Service]\nExecStart = /opt/spaced \\\n  --quiet\n",
    );
    write(
        r,
        "etc/systemd/user/evil4.service",
        b"[Service]\nExecStart=/tmp/.x/evilbin4\n",
    );
    write(
        r,
        "home/alice/.config/systemd/user/evil3.service",
        b"[Service]\nExecStart=/tmp/.x/evilbin3 --user\n[Install]\nWantedBy=default.target\n",
    );
    std::fs::create_dir_all(r.join("home/alice/.config/systemd/user/default.target.wants"))
        .unwrap();
    std::os::unix::fs::symlink(
        "../evil3.service",
        r.join("home/alice/.config/systemd/user/default.target.wants/evil3.service"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("srv")).unwrap();
    let program = |id: &str, value: &str| {
        ioc(
            id,
            &or(&[term("ServiceItem/serviceDLL", "is", "string", value)]),
        )
    };
    let docs = vec![
        ioc(
            "hijacked",
            &and(&[
                term("ServiceItem/name", "is", "string", "sshd"),
                term("ServiceItem/serviceDLL", "is", "string", "/tmp/.x/evilbin"),
                term("ServiceItem/arguments", "contains", "string", "beacon"),
            ]),
        ),
        program("original", "/usr/sbin/sshd"),
        ioc(
            "spaced",
            &and(&[
                term("ServiceItem/serviceDLL", "is", "string", "/opt/spaced"),
                term("ServiceItem/arguments", "is", "string", "--quiet"),
            ]),
        ),
        program("decoy", "/decoy"),
        program("quoted", "/opt/a b/x"),
        program("local", "/tmp/.x/evilbin2"),
        program("every-user", "/tmp/.x/evilbin4"),
        ioc(
            "own",
            &and(&[
                term("ServiceItem/serviceDLL", "is", "string", "/tmp/.x/evilbin3"),
                term("ServiceItem/mode", "is", "string", "enabled"),
                term(
                    "ServiceItem/path",
                    "is",
                    "string",
                    "/home/alice/.config/systemd/user/evil3.service",
                ),
            ]),
        ),
    ];
    let mut req = request(r, docs);
    req.scope.paths = vec![PathBuf::from("/srv")];
    let r = sweep(&req).unwrap();
    for id in ["hijacked", "local", "every-user", "own", "spaced", "quoted"] {
        assert_eq!(verdict(&r, id), Verdict::Hit, "{id}");
    }
    // A FIFO is no unit file systemd loads: it runs nothing, and hides nothing.
    assert_eq!(verdict(&r, "original"), Verdict::NoMatch);
    assert_eq!(verdict(&r, "decoy"), Verdict::NoMatch);
    // Each unit every user has counts once for all users, and once more for each user
    // with units of their own, whose drop-ins and links may change it.
    assert_eq!(
        r.stats.items.get("services"),
        Some(&9),
        "{:?}",
        r.stats.items
    );
}

/// A file past the maximum size is still hashed where an indicator names its exact size
/// (as the IOC generated from a detection does): the object is found again however
/// large. A digest alone does not lift the limit.
#[test]
fn a_named_size_lifts_the_maximum_file_size() {
    let d = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let other: Vec<u8> = (0..6000u32).map(|i| (i % 241) as u8).collect();
    write(d.path(), "srv/big.bin", &big);
    write(d.path(), "srv/other.bin", &other);
    let docs = vec![
        ioc(
            "sized",
            &and(&[
                term("FileItem/SizeInBytes", "is", "int", "5000"),
                term("FileItem/Sha256sum", "is", "sha256", &sha256_hex(&big)),
            ]),
        ),
        ioc(
            "digest-only",
            &or(&[term("FileItem/Md5sum", "is", "md5", &md5_hex(&other))]),
        ),
    ];
    let mut req = request(d.path(), docs);
    req.scope.paths = vec![PathBuf::from("/srv")];
    req.scope.max_file_size = Some(1000);
    req.scope.system_items = false;
    let r = sweep(&req).unwrap();
    assert_eq!(hit_paths(&r, "sized"), ["file /srv/big.bin"]);
    assert_eq!(verdict(&r, "digest-only"), Verdict::Undetermined);
}

/// On the live system, a root that is a link to a directory (a preset's `/bin` on a
/// merged `/usr`, a task's path) is walked where it leads, and a second path to the same
/// directory adds nothing. Before, the link was taken as the root, found to be no
/// regular file and skipped, and the real directory was dropped as its repeat: the
/// *critical areas* preset never swept `/usr/bin`.
#[test]
fn a_root_that_is_a_link_is_walked_where_it_leads() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "usr/bin/evil-tool", EVIL);
    std::os::unix::fs::symlink("usr/bin", d.path().join("bin")).unwrap();
    let real = std::fs::canonicalize(d.path()).unwrap();
    let docs = vec![ioc(
        "evil",
        &or(&[term("FileItem/FileName", "is", "string", "evil-tool")]),
    )];
    let mut req = request(Path::new("/"), docs);
    req.scope.system_items = false;
    req.scope.paths = vec![real.join("bin"), real.join("usr/bin")];
    let r = sweep(&req).unwrap();
    let expected = format!("file {}", real.join("usr/bin/evil-tool").display());
    assert_eq!(hit_paths(&r, "evil"), [expected]);
    assert_eq!(r.stats.files_seen, 1, "{:?}", r.stats);
    // Excluded as it is named, the link stays so, and is left out; another path to its
    // directory is still swept, whichever comes first.
    req.scope.paths = vec![real.join("bin")];
    req.scope.exclude = vec![real.join("bin").to_string_lossy().into_owned()];
    let r = sweep(&req).unwrap();
    assert_eq!(r.stats.files_seen, 0, "{:?}", r.stats);
    req.scope.paths = vec![real.join("bin"), real.join("usr/bin")];
    let r = sweep(&req).unwrap();
    assert_eq!(r.stats.files_seen, 1, "{:?}", r.stats);
}
