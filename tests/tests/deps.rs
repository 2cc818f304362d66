//! Dependency hygiene over `cargo metadata`: `rust-version` is at least what every locked
//! dependency needs; every normal dependency of a workspace crate is used by its code; NOTICE
//! lists every third-party crate linked into the `natfw` binary with its licence (regenerate
//! with `NATFW_BLESS=1 cargo test -p natfw-tests --test deps`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn metadata(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(extra)
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let meta = metadata(&["--filter-platform", "x86_64-unknown-linux-gnu"]);
    let resolved: BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let pkgs = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let ours: BTreeSet<Vec<u32>> = pkgs
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| version(p["rust_version"].as_str().expect("rust-version set")))
        .collect();
    assert_eq!(ours.len(), 1, "one rust-version for the workspace");
    let ours = ours.into_iter().next().unwrap();
    let (need, who) = pkgs
        .iter()
        .filter(|p| resolved.contains(p["id"].as_str().unwrap()))
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .unwrap();
    assert!(
        ours >= need,
        "rust-version {ours:?} is below what {who} needs ({need:?})"
    );
}

fn sources(dir: &Path, out: &mut String) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
}

#[test]
fn every_normal_dependency_is_used() {
    let meta = metadata(&["--no-deps"]);
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut unused = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        if !members.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        let dir = Path::new(p["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        let mut text = String::new();
        // Normal dependencies serve the library/binary: src/ and build.rs, not tests/.
        sources(&dir.join("src"), &mut text);
        sources(&dir.join("build"), &mut text);
        text.push_str(&std::fs::read_to_string(dir.join("build.rs")).unwrap_or_default());
        for t in p["targets"].as_array().unwrap() {
            let src = Path::new(t["src_path"].as_str().unwrap());
            if !src.starts_with(dir.join("src")) && !src.starts_with(dir.join("tests")) {
                text.push_str(&std::fs::read_to_string(src).unwrap_or_default());
            }
        }
        for d in p["dependencies"].as_array().unwrap() {
            if !d["kind"].is_null() {
                continue;
            }
            let name = d["rename"].as_str().unwrap_or(d["name"].as_str().unwrap());
            let ident = name.replace('-', "_");
            let used = text.match_indices(&ident).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                let after = text[i + ident.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            });
            if !used {
                unused.push(format!(
                    "{} depends on {name} but its code never names it",
                    p["name"]
                ));
            }
        }
    }
    assert!(unused.is_empty(), "{}", unused.join("\n"));
}

/// Third-party crates the `natfw` binary links (normal dependencies of natfw-gateway, for
/// Linux), as NOTICE lists them.
fn third_party_section() -> String {
    let meta = metadata(&["--filter-platform", "x86_64-unknown-linux-gnu"]);
    let pkgs: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = pkgs
        .iter()
        .find(|(_, p)| p["name"] == "natfw-gateway")
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for d in nodes[id]["deps"].as_array().unwrap() {
            let normal = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                stack.push(d["pkg"].as_str().unwrap());
            }
        }
    }
    let mut by_licence: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in seen {
        let p = pkgs[id];
        if p["source"].is_null() {
            continue; // the workspace's own crates
        }
        let lic = p["license"]
            .as_str()
            .unwrap_or("see the crate's sources")
            .replace('/', " OR ");
        by_licence.entry(lic).or_default().push(format!(
            "{} {}",
            p["name"].as_str().unwrap(),
            p["version"].as_str().unwrap()
        ));
    }
    let mut s = String::from(
        "Third-party crates linked into the natfw binary, by licence (SPDX expressions as the\n\
         crates declare them; generated from Cargo.lock by tests/tests/deps.rs). Each crate's\n\
         licence text and NOTICE file, if any, are in its source package.\n",
    );
    for (lic, crates) in by_licence {
        s.push_str(&format!("\n{lic}:\n"));
        let mut line = String::from(" ");
        for c in crates {
            if line.len() + c.len() + 2 > 96 {
                s.push_str(line.trim_end_matches(','));
                s.push('\n');
                line = String::from(" ");
            }
            line.push_str(&format!(" {c},"));
        }
        s.push_str(line.trim_end_matches(','));
        s.push('\n');
    }
    s
}

const BEGIN: &str = "-- begin third-party crates --\n";
const END: &str = "-- end third-party crates --\n";

#[test]
fn notice_lists_every_third_party_crate_in_the_binary() {
    let path = root().join("NOTICE");
    let notice = std::fs::read_to_string(&path).unwrap();
    let want = third_party_section();
    let current = notice
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(s, _)| s);
    if std::env::var_os("NATFW_BLESS").is_some() {
        let head = notice.split(BEGIN).next().unwrap();
        let tail = notice.split_once(END).map_or("", |(_, t)| t);
        std::fs::write(&path, format!("{head}{BEGIN}{want}{END}{tail}")).unwrap();
        return;
    }
    assert_eq!(
        current,
        Some(want.as_str()),
        "NOTICE is out of date: NATFW_BLESS=1 cargo test -p natfw-tests --test deps"
    );
    assert!(want.contains("EUPL-1.2:\n  xdpilone"), "{want}");
    assert!(notice.contains("xdpilone") && notice.contains("EUPL-1.2"));
}
