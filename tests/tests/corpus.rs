//! Every capture of `tests/data/corpus/` (the shared corpus) and `tests/data/captures/` (our own)
//! replayed through the engine (the library, as `natfw replay` does) under the embedded default
//! config, each flow record compared with the ground truth in the directory's `expected.json`:
//! domain, domain source, application and verdict.
//!
//! Flows are matched by `(dst_ip, dst_port, proto)`; every record must match an expected flow and
//! every expected flow must have a record (as many as its `connections` note says, when given).

use std::path::{Path, PathBuf};

use natfw_flowlog::FlowRecord;
use natfw_gateway::replay::replay_records;
use serde_json::Value;

fn data_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(dir)
}

fn expected(dir: &str) -> Value {
    let path = data_dir(dir).join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `TLS` in expected.json is the flow log's `SSL`; `unknown` is `Unknown`.
fn flow_log_label(s: &str) -> String {
    match s {
        "TLS" => "SSL".into(),
        "unknown" => "Unknown".into(),
        other => other.into(),
    }
}

fn key_of(r: &FlowRecord) -> (String, Option<u16>, String) {
    (r.dst_ip.clone(), r.dst_port, r.ip_protocol.clone())
}

fn check(dir: &str, case: &str) {
    let all = expected(dir);
    let Some(spec) = all["cases"].get(case) else {
        panic!("{case}: not in expected.json");
    };
    let file = spec["file"].as_str().expect("file");
    let cfg = natfw_policy::config::embedded_default();
    let (records, summary) = replay_records(&cfg, &[data_dir(dir).join(file)])
        .unwrap_or_else(|e| panic!("{case}: replay failed: {e}"));
    assert!(summary.packets > 0, "{case}: no packets read");
    assert_eq!(summary.parse_errors, 0, "{case}: {:?}", summary.warnings);

    let flows = spec["flows"].as_array().expect("flows");
    let mut problems = Vec::new();
    let mut matched = vec![0usize; flows.len()];
    for r in &records {
        let key = key_of(r);
        let Some(i) = flows.iter().position(|f| {
            f["dst_ip"].as_str() == Some(key.0.as_str())
                && f["dst_port"].as_u64().map(|p| p as u16) == key.1
                && f["proto"].as_str() == Some(key.2.as_str())
        }) else {
            problems.push(format!(
                "unexpected flow {key:?} ({} -> {})",
                r.src_ip, r.dst_ip
            ));
            continue;
        };
        matched[i] += 1;
        let f = &flows[i];
        let want_domain = f["domain"].as_str();
        if r.domain.as_deref() != want_domain {
            problems.push(format!(
                "{key:?}: domain {:?}, want {want_domain:?}",
                r.domain
            ));
        }
        let want_source = match f["carried_by"].as_str() {
            Some("none") | None => None,
            Some(s) => Some(s),
        };
        if r.domain_source.as_deref() != want_source {
            problems.push(format!(
                "{key:?}: domain_source {:?}, want {want_source:?}",
                r.domain_source
            ));
        }
        let acceptable: Vec<String> = match f.get("app_acceptable").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(flow_log_label)
                .collect(),
            None => vec![flow_log_label(f["app"].as_str().expect("app"))],
        };
        if !r.app_name.as_ref().is_some_and(|a| acceptable.contains(a)) {
            problems.push(format!(
                "{key:?}: app_name {:?}, want one of {acceptable:?}",
                r.app_name
            ));
        }
        if r.action != "accept" {
            problems.push(format!(
                "{key:?}: action {} ({}), want accept under the default config",
                r.action, r.reason
            ));
        }
    }
    for (f, n) in flows.iter().zip(&matched) {
        let key = (&f["dst_ip"], &f["dst_port"], &f["proto"]);
        match f["notes"].get("connections").and_then(Value::as_u64) {
            Some(want) if *n as u64 != want => problems.push(format!(
                "{key:?}: {n} flow records, want {want} connections"
            )),
            _ if *n == 0 => problems.push(format!("{key:?}: no flow record")),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{case}: {} problem(s) in {} records:\n  {}",
        problems.len(),
        records.len(),
        problems.join("\n  ")
    );
}

macro_rules! corpus {
    ($module:ident, $dir:literal: $($case:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $case() {
                    check($dir, stringify!($case));
                }
            )*

            /// A capture added to expected.json must get a test here too.
            #[test]
            fn every_case_has_a_test() {
                let listed = [$(stringify!($case)),*];
                let all = expected($dir);
                let cases = all["cases"].as_object().expect("cases");
                let missing: Vec<_> =
                    cases.keys().filter(|k| !listed.contains(&k.as_str())).collect();
                assert!(missing.is_empty(), "cases without a test: {missing:?}");
            }
        }
    };
}

corpus!(
    shared, "corpus":
    http_curl,
    https_curl,
    https_openssl,
    https_chromium,
    quic_aioquic,
    ssh_2222,
    dns_query,
    icmp_ping,
    http_8080,
    https_ip_literal,
    tls_out_of_order,
    tls_malformed_lengths,
    syn_flood,
);

corpus!(
    own, "captures":
    smtp_starttls,
    imap_starttls,
    pop3_stls,
    ftp_auth_tls,
    h2c_prior_knowledge,
    h2c_upgrade,
    dns_tcp_cname,
    dns_cname_asked,
    ntp,
    memcache,
    mqtt,
    postgres,
    mongodb,
    mysql,
    redis,
    rdp,
    vnc,
    sip,
    smb,
);
