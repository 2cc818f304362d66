//! The network-namespace lab end to end (root; SKIP otherwise). One test binary per area; one module per topic.

mod compose;
mod console;
mod dns;
mod e2e;
mod evasion;
mod failclosed;
mod fastpath;
mod ha;
mod ops;
mod records;
mod restart;
mod support;
mod topology;
mod workers;

/// Lab tests run two at a time and a lab's namespaces are named after its tag: two tests with
/// the same tag tear down each other's namespaces (and processes) mid-test. Every literal tag
/// given to `up("…")` or `plan(Scenario::…, "…")` in this directory must be unique.
#[test]
fn lab_tags_are_unique() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab");
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/lab")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("source");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "main.rs" {
            continue; // this test's own text
        }
        for (i, _) in text.match_indices('"') {
            let before = &text[..i];
            let is_tag = before.ends_with("up(")
                || (before.ends_with(", ")
                    && before
                        .rfind("plan(Scenario::")
                        .is_some_and(|p| !before[p..].contains(')')));
            if !is_tag {
                continue;
            }
            let Some(len) = text[i + 1..].find('"') else {
                continue;
            };
            let tag = &text[i + 1..i + 1 + len];
            if let Some(other) = seen.insert(tag.to_owned(), file.clone()) {
                panic!("lab tag {tag:?} is used in {other} and {file}");
            }
        }
    }
    assert!(seen.len() >= 10, "found only {seen:?}");
}
