//! The crates' dependency rules (ARCHITECTURE.md "Crates"), checked over `cargo metadata`:
//! a crate that gains a dependency its role forbids fails here, in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Normal (non-dev, non-build) dependencies each natfw crate may have. Crates not listed here
/// are rejected, so a new dependency is a conscious change to this table.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        (
            "natfw-policy",
            &[
                "ipnet",
                "serde",
                "yaml-rust2",
                "idna",
                "maxminddb",
                "rustc-hash",
                "ipnetwork",
            ][..],
        ),
        // The sans-I/O engine: policy and small pure crates only.
        (
            "natfw-engine",
            &[
                "natfw-policy",
                "ipnet",
                "httparse",
                // QUIC Initial protection (RFC 9001 §5), pure Rust.
                "hkdf",
                "sha2",
                "aes-gcm",
                "aes",
                "arc-swap",
                "hashbrown",
                "loona-hpack",
            ][..],
        ),
        (
            "natfw-flowlog",
            &[
                "natfw-engine",
                "natfw-policy",
                "ipnet",
                "crossbeam-channel",
                "serde",
                "serde_json",
            ][..],
        ),
        ("natfw-pcap", &["natfw-engine"][..]),
        // The lab drives the `natfw` binary: no natfw crate.
        ("natfw-lab", &["clap", "ipnet", "serde", "serde_json"][..]),
        // Benchmarks and the lab harness: the engine, the policy, captures and the lab (the
        // harness drives the `natfw` binary through natfw-lab; its HTTPS client uses rustls).
        // The replay benchmark reaches natfw-gateway as a dev-dependency only.
        (
            "natfw-bench",
            &[
                "natfw-policy",
                "natfw-engine",
                "natfw-pcap",
                "natfw-lab",
                "ipnet",
                "serde_json",
                "rustls",
                "libc",
            ][..],
        ),
    ])
}

/// Dependencies no crate of the sans-I/O side may reach, even transitively.
const IO_CRATES: &[&str] = &[
    "libc",
    "aya",
    "xdpilone",
    "rustls",
    "clap",
    "signal-hook",
    "metrics",
    "crossbeam-channel",
    "tokio",
    "hickory-resolver",
];

/// The platform natfw is built for (AF_XDP gateways on x86-64 Linux). The resolve is filtered
/// to it: a dependency that only another platform pulls in (cpufeatures reads the auxiliary
/// vector through libc on aarch64 Linux, for instance) is not linked here.
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn metadata() -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", TARGET])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

/// Normal dependencies of a package, by name.
fn normal_deps(pkg: &serde_json::Value) -> BTreeSet<String> {
    pkg["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn crates_depend_only_on_what_their_role_allows() {
    let meta = metadata();
    let pkgs = meta["packages"].as_array().unwrap();
    let by_name: BTreeMap<&str, &serde_json::Value> = pkgs
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    let mut problems = Vec::new();
    for (krate, allow) in allowed() {
        let pkg = by_name
            .get(krate)
            .unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        for dep in normal_deps(pkg) {
            if !allow.contains(&dep.as_str()) {
                problems.push(format!("{krate} depends on {dep}, which its role forbids"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_engine_reaches_no_io_crate_even_transitively() {
    let meta = metadata();
    let resolve = &meta["resolve"]["nodes"];
    let pkgs = meta["packages"].as_array().unwrap();
    let name_of: BTreeMap<&str, &str> = pkgs
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = resolve
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    for root in ["natfw-engine", "natfw-policy"] {
        let id = name_of
            .iter()
            .find(|(_, n)| **n == root)
            .map(|(id, _)| *id)
            .unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
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
        for id in seen {
            let n = name_of[id];
            assert!(
                !IO_CRATES.contains(&n),
                "{root} reaches {n} through its dependencies"
            );
        }
    }
}

#[test]
fn fuzz_targets_link_only_the_engine_and_the_policy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml");
    let text = std::fs::read_to_string(root).unwrap();
    let natfw: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("natfw-") && *w != "natfw-fuzz")
        .collect();
    assert_eq!(natfw, ["natfw-engine", "natfw-policy"], "{text}");
}

#[test]
fn the_engine_forbids_unsafe_code() {
    let lib =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/engine/src/lib.rs");
    let text = std::fs::read_to_string(lib).unwrap();
    assert!(text.contains("#![forbid(unsafe_code)]"));
}

/// No threads, files, sockets, processes, environment or clocks in the engine's source: it is
/// given time and frames by its caller. One exception: `time::Timestamp::now`, a clock read the
/// engine never calls, offered to callers at the I/O edge. (`l7/testpcap.rs` is a `cfg(test)`
/// helper reading the corpus.)
#[test]
fn the_engine_source_has_no_threads_files_sockets_or_clocks() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/engine/src");
    let needles = [
        "std::thread",
        "thread::spawn",
        "std::fs",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "UnixStream",
        "UnixDatagram",
        "std::process",
        "std::env",
        "Instant::now",
        "SystemTime::now",
        "Timestamp::now",
    ];
    let mut found = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.ends_with(".rs") || rel == "l7/testpcap.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (no, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for n in needles {
                    // time.rs defines `Timestamp::now` (reading SystemTime) for callers.
                    let allowed = rel == "time.rs" && n == "SystemTime::now";
                    if code.contains(n) && !allowed {
                        found.push(format!("dataplane/engine/src/{rel}:{}: {n}", no + 1));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The repository carries its own contract (docs/CONTRACT.md, docs/PLATFORM.md): no file refers
/// to a document or folder outside it. (The needles are split so this file does not match.)
#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let needles = [
        ["SPEC", ".md"].concat(),
        ["PLATFORM-", "NOTES"].concat(),
        ["../", "shared/"].concat(),
        ["/work/", "shared"].concat(),
    ];
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git") {
                    stack.push(path);
                }
                continue;
            }
            let text_file = [
                ".rs", ".md", ".c", ".h", ".sh", ".toml", ".yaml", ".yml", ".py",
            ]
            .iter()
            .any(|e| name.ends_with(e))
                || name == "run";
            if !text_file {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for n in &needles {
                if text.contains(n.as_str()) {
                    found.push(format!(
                        "{}: {n}",
                        path.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
