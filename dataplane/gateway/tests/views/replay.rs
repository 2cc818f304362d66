//! The offline views over a flow log produced by a real replay of the whole corpus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use natfw_flowlog::views::logs::{logs, parse_net, DomainQuery, LogFilter, LogFormat};
use natfw_flowlog::views::overview::overview;
use natfw_flowlog::views::svg::overview_chart;
use natfw_flowlog::views::top::{top, TopBy};
use natfw_flowlog::{read_records, FlowRecord};
use natfw_gateway::replay::{run, ReplayOptions};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/corpus")
}

/// Replays the live captures (one client, 40 seconds of real traffic; the crafted ones are
/// dated months earlier) into a flow-log file; returns it with its records.
fn replayed(dir: &Path) -> (PathBuf, Vec<FlowRecord>) {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus().join("expected.json")).unwrap())
            .unwrap();
    let mut captures: Vec<PathBuf> = expected["cases"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["source"] == "live")
        .map(|c| corpus().join(c["file"].as_str().unwrap()))
        .collect();
    captures.sort();
    assert!(captures.len() >= 10);
    let log = dir.join("corpus.jsonl");
    let summary = run(ReplayOptions {
        config: None,
        flow_log: Some(log.clone()),
        captures,
    })
    .unwrap();
    let records: Vec<FlowRecord> = read_records(&log).unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len() as u64, summary.flows);
    assert!(records.len() >= 11, "{summary}");
    (log, records)
}

fn json_logs(files: &[PathBuf], f: &LogFilter) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    logs(files, f, LogFormat::Json, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn views_over_a_replayed_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let (log, records) = replayed(dir.path());
    let files = vec![log];

    // Every corpus flow comes from the one client.
    let by_src = LogFilter {
        src: Some(parse_net("10.0.1.10").unwrap()),
        ..Default::default()
    };
    assert_eq!(json_logs(&files, &by_src), records);

    // The vendor names: api (curl) and updates (openssl).
    let vendor = LogFilter {
        domain: Some(DomainQuery::parse("*.vendor.test").unwrap()),
        ..Default::default()
    };
    let mut names: Vec<String> = json_logs(&files, &vendor)
        .into_iter()
        .filter_map(|r| r.domain)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["api.vendor.test", "updates.vendor.test"]);

    // Default config: nothing dropped.
    let drops = LogFilter {
        action: Some("drop".into()),
        ..Default::default()
    };
    assert!(json_logs(&files, &drops).is_empty());

    // One talker with every flow and every byte.
    let (talkers, _) = top(&files, TopBy::Bytes).unwrap();
    assert_eq!(talkers.len(), 1);
    let t = &talkers[0];
    assert_eq!(t.src_ip, "10.0.1.10");
    assert_eq!(t.flows, records.len() as u64);
    assert_eq!(
        t.bytes_out,
        records.iter().map(|r| r.out_packet_bytes).sum::<u64>()
    );
    assert_eq!(
        t.bytes_in,
        records.iter().map(|r| r.in_packet_bytes).sum::<u64>()
    );
    assert_eq!(t.top_domains.len(), 3);

    // The trend keeps every byte and flow, whatever the interval.
    for secs in [1, 60, 3600] {
        let (o, _) = overview(&files, Duration::from_secs(secs), Some(1.0)).unwrap();
        let out: u64 = o.buckets.iter().map(|b| b.bytes_out).sum();
        let flows: u64 = o.buckets.iter().map(|b| b.flows).sum();
        assert_eq!(out, t.bytes_out, "{secs}s");
        assert_eq!(flows, records.len() as u64, "{secs}s");
        let svg = overview_chart(&o, "corpus");
        assert!(svg.contains(">outbound<") && svg.ends_with("</svg>\n"));
    }
}

/// docs/OPERATIONS.md shows views over `tests/data/flowlogs/corpus-demo.jsonl`: it must still be
/// what a replay under `demo.yaml` decides (same flows, verdicts, rules and domains).
#[test]
fn committed_demo_log_matches_a_fresh_replay() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/flowlogs");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.jsonl");
    let mut captures: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".pcap") && !name.starts_with("tls_") && name != "syn_flood.pcap"
        })
        .collect();
    captures.sort();
    run(ReplayOptions {
        config: Some(data.join("demo.yaml")),
        flow_log: Some(log.clone()),
        captures,
    })
    .unwrap();
    let key = |r: FlowRecord| {
        (
            r.dst_ip,
            r.dst_port,
            r.ip_protocol,
            r.action,
            r.acl_rule_id,
            r.domain,
            r.app_name,
            r.dns_verified,
        )
    };
    let read = |p: &Path| {
        let mut v: Vec<_> = read_records(p).unwrap().map(|r| key(r.unwrap())).collect();
        v.sort();
        v
    };
    let committed = read(&data.join("corpus-demo.jsonl"));
    assert_eq!(committed.len(), 11);
    assert_eq!(read(&log), committed);
}
