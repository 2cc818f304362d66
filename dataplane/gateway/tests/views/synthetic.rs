//! The offline views over a synthetic flow log whose totals are known by construction.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use natfw_engine::time::Timestamp;
use natfw_flowlog::views::logs::{logs, parse_net, DomainQuery, LogFilter, LogFormat};
use natfw_flowlog::views::overview::overview;
use natfw_flowlog::views::svg::overview_chart;
use natfw_flowlog::views::top::{top, TopBy};
use natfw_flowlog::{format_rfc3339_millis, FlowRecord, Rotation, Target, Writer};

/// 2026-11-28T17:00:00Z
const T0: u64 = 1_795_885_200;

#[allow(clippy::too_many_arguments)]
fn rec(
    src: &str,
    dst: &str,
    port: u16,
    domain: Option<&str>,
    action: &str,
    start_s: u64,
    dur_ms: u64,
    out: u64,
    inb: u64,
) -> FlowRecord {
    let start = Timestamp::from_secs(T0 + start_s);
    FlowRecord {
        log_type: "flow".into(),
        gateway: "natfw".into(),
        start_time: format_rfc3339_millis(start),
        end_time: format_rfc3339_millis(start.add(Duration::from_millis(dur_ms))),
        src_ip: src.into(),
        src_port: Some(40_000),
        dst_ip: dst.into(),
        dst_port: Some(port),
        ip_protocol: "tcp".into(),
        snat_ip: Some("192.0.2.1".into()),
        snat_port: Some(1024),
        app_name: Some("HTTPS".into()),
        domain: domain.map(Into::into),
        domain_source: domain.map(|_| "sni".into()),
        ech: false,
        dst_country: None,
        acl_rule_id: (action == "drop").then(|| "block-ads".into()),
        monitor_rules: vec![],
        action: action.into(),
        app_dpi_state: "success".into(),
        reason: "test".into(),
        out_packet_count: 1,
        out_packet_bytes: out,
        in_packet_count: 1,
        in_packet_bytes: inb,
        end_reason: "fin".into(),
        dns_verified: None,
        interim: None,
    }
}

/// Minute 0: .10 sends 6 MB out in one second-long flow (0.8 Mbit/s average over the minute);
/// minute 1: nothing; minute 2: .20 pulls 30 MB in (4 Mbit/s), .10 one dropped flow;
/// minute 3: a 2-minute flow from .30 spread over minutes 3 and 4.
fn records() -> Vec<FlowRecord> {
    vec![
        rec(
            "10.0.1.10",
            "203.0.113.10",
            443,
            Some("api.vendor.test"),
            "accept",
            5,
            1000,
            6_000_000,
            100_000,
        ),
        rec(
            "10.0.1.10",
            "198.51.100.10",
            443,
            Some("ads.tracker.test"),
            "drop",
            130,
            0,
            0,
            0,
        ),
        rec(
            "10.0.1.20",
            "198.51.100.30",
            443,
            Some("cdn.vendor.test"),
            "accept",
            121,
            2000,
            200_000,
            30_000_000,
        ),
        rec(
            "10.0.1.30",
            "198.51.100.40",
            22,
            None,
            "accept",
            180,
            120_000,
            1_200_000,
            2_400_000,
        ),
    ]
}

fn write_log(dir: &Path) -> PathBuf {
    let path = dir.join("flows.jsonl");
    let mut w = Writer::open(Target::File(path.clone()), Rotation::default()).unwrap();
    for r in records() {
        w.write(&r).unwrap();
    }
    w.flush().unwrap();
    path
}

fn run_logs(files: &[PathBuf], f: &LogFilter) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    let (stats, shown) = logs(files, f, LogFormat::Json, &mut out).unwrap();
    assert_eq!(stats.records, 4);
    let got: Vec<FlowRecord> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len() as u64, shown);
    got
}

#[test]
fn logs_filters() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let all = records();
    assert_eq!(run_logs(&files, &LogFilter::default()), all);

    let by_src = LogFilter {
        src: Some(parse_net("10.0.1.10").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        run_logs(&files, &by_src),
        vec![all[0].clone(), all[1].clone()]
    );

    let by_net = LogFilter {
        src: Some("10.0.1.16/28".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(
        run_logs(&files, &by_net),
        vec![all[2].clone(), all[3].clone()]
    );

    let suffix = LogFilter {
        domain: Some(DomainQuery::parse("*.vendor.test").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        run_logs(&files, &suffix),
        vec![all[0].clone(), all[2].clone()]
    );

    let drops = LogFilter {
        action: Some("drop".into()),
        ..Default::default()
    };
    assert_eq!(run_logs(&files, &drops), vec![all[1].clone()]);

    // Active at or after 17:02:01.500 and started by 17:02:05: only .20's flow (17:02:01 to
    // 17:02:03); .10's first flow ended at 17:00:06, the others start after 17:02:05.
    let window = LogFilter {
        since: Some(Timestamp::from_millis((T0 + 121) * 1000 + 500)),
        until: Some(Timestamp::from_secs(T0 + 125)),
        ..Default::default()
    };
    assert_eq!(run_logs(&files, &window), vec![all[2].clone()]);

    let dst = LogFilter {
        dst: Some(parse_net("198.51.100.40").unwrap()),
        ..Default::default()
    };
    assert_eq!(run_logs(&files, &dst), vec![all[3].clone()]);
}

#[test]
fn logs_table_has_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let mut out = Vec::new();
    let f = LogFilter {
        action: Some("drop".into()),
        ..Default::default()
    };
    logs(&files, &f, LogFormat::Table, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for h in [
        "TIME",
        "SOURCE",
        "DESTINATION",
        "PROTO",
        "APP",
        "DOMAIN",
        "ACTION",
        "RULE",
        "BYTES",
    ] {
        assert!(lines[0].contains(h), "{h}");
    }
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "2026-11-28T17:02:10.000Z",
            "10.0.1.10:40000",
            "198.51.100.10:443",
            "tcp",
            "HTTPS",
            "ads.tracker.test",
            "drop",
            "block-ads",
            "0",
            "B"
        ]
    );
}

#[test]
fn top_ranks_sources() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let (talkers, stats) = top(&files, TopBy::Bytes).unwrap();
    assert_eq!(stats.records, 4);
    let order: Vec<&str> = talkers.iter().map(|t| t.src_ip.as_str()).collect();
    assert_eq!(order, ["10.0.1.20", "10.0.1.10", "10.0.1.30"]);
    let t10 = &talkers[1];
    assert_eq!(
        (t10.flows, t10.dropped, t10.bytes_out, t10.bytes_in),
        (2, 1, 6_000_000, 100_000)
    );
    assert_eq!(
        t10.top_domains,
        vec![
            ("api.vendor.test".to_string(), 6_100_000),
            ("ads.tracker.test".to_string(), 0)
        ]
    );
    assert!(talkers[2].top_domains.is_empty());

    let (talkers, _) = top(&files, TopBy::Flows).unwrap();
    assert_eq!(talkers[0].src_ip, "10.0.1.10");
}

#[test]
fn overview_buckets_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let (o, _) = overview(&files, Duration::from_secs(60), Some(2.0)).unwrap();
    let rows: Vec<(u64, u64, u64, u64, bool)> = o
        .buckets
        .iter()
        .map(|b| {
            (
                (b.start.as_nanos() / 1_000_000_000 - T0) / 60,
                b.bytes_out,
                b.bytes_in,
                b.flows,
                b.exceeded,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, 6_000_000, 100_000, 1, false), // 0.8 Mbit/s
            (1, 0, 0, 0, false),               // gap filled
            (2, 200_000, 30_000_000, 2, true), // 4 Mbit/s in
            (3, 600_000, 1_200_000, 1, false), // half of the long flow
            (4, 600_000, 1_200_000, 0, false),
        ]
    );
    assert!((o.buckets[0].mbps_out - 0.8).abs() < 1e-9);
    assert!((o.buckets[2].mbps_in - 4.0).abs() < 1e-9);
    assert_eq!(o.exceeded(), 1);

    // Finer intervals keep the totals.
    let (fine, _) = overview(&files, Duration::from_secs(1), None).unwrap();
    let total: u64 = fine.buckets.iter().map(|b| b.bytes_out + b.bytes_in).sum();
    let want: u64 = records()
        .iter()
        .map(|r| r.out_packet_bytes + r.in_packet_bytes)
        .sum();
    assert_eq!(total, want);
    assert!(fine.buckets.iter().all(|b| !b.exceeded));
}

/// A minimal well-formedness check: every tag closed in order, attributes quoted, one root.
fn check_xml(s: &str) -> Result<usize, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    let mut elements = 0;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        if text.contains('>') || (text.contains('&') && !text.contains(';')) {
            return Err(format!("stray markup in text {text:?}"));
        }
        let j = rest[i..].find('>').ok_or("unclosed tag")? + i;
        let tag = &rest[i + 1..j];
        rest = &rest[j + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("close {name} without open"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body
            .split_whitespace()
            .next()
            .ok_or("empty tag")?
            .to_string();
        if !body.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{body}>"));
        }
        if stack.is_empty() {
            roots += 1;
        }
        elements += 1;
        if !self_closing {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(elements)
}

#[test]
fn svg_chart_is_well_formed_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let (o, _) = overview(&files, Duration::from_secs(60), Some(2.0)).unwrap();
    let svg = overview_chart(&o, "natfw <test> & trend");
    check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(svg.starts_with("<?xml") && svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("natfw &lt;test&gt; &amp; trend"));
    // Two series with one point per interval, the bandwidth line, one shaded interval.
    let polylines: Vec<&str> = svg
        .split("<polyline points=\"")
        .skip(1)
        .map(|p| &p[..p.find('"').unwrap()])
        .collect();
    let series: Vec<usize> = polylines
        .iter()
        .map(|p| p.split(' ').count())
        .filter(|n| *n == 5)
        .collect();
    assert_eq!(series.len(), 2, "{polylines:?}");
    assert!(svg.contains(">outbound<") && svg.contains(">inbound<"));
    assert!(svg.contains("protected bandwidth 2 Mbit/s"));
    assert!(svg.contains("stroke-dasharray"));
    assert_eq!(svg.matches("fill-opacity=\"0.12\"").count(), 1);
    assert!(svg.contains(">17:00<") && svg.contains(">17:04<"));

    // Self-test of the checker, so the check above can fail.
    assert!(check_xml("<a><b></a></b>").is_err());
    assert!(check_xml("<a x=\"1></a>").is_err());
    assert!(check_xml("<a/><b/>").is_err());
}

#[test]
fn cli_views_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path());
    // A torn last line (log being written) is skipped with a warning, not fatal.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"log_type\":\"fl");
    std::fs::write(&log, text).unwrap();
    let chart = dir.path().join("trend.svg");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_natfw"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let log_s = log.to_str().unwrap();

    let (code, stdout, stderr) = run(&["logs", log_s, "--src", "10.0.1.10", "--action", "drop"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("ads.tracker.test"));
    assert!(
        stderr.contains("skipped 1 line") && stderr.contains("flows.jsonl:5:"),
        "{stderr}"
    );

    let (code, stdout, _) = run(&["top", log_s, "--by", "flows", "--limit", "1"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.lines().nth(1).unwrap().contains("10.0.1.10"),
        "{stdout}"
    );
    assert!(stdout.contains("(2 more sources)"), "{stdout}");

    let (code, stdout, stderr) = run(&[
        "overview",
        log_s,
        "--interval",
        "1m",
        "--bandwidth-mbps",
        "2",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1 of 5 intervals above it"), "{stdout}");
    assert_eq!(stdout.matches("EXCEEDED").count(), 1, "{stdout}");
    check_xml(&std::fs::read_to_string(&chart).unwrap()).unwrap();

    // Bad input: exit 1 with a message.
    for args in [
        &["logs", log_s, "--src", "not-an-ip"][..],
        &["logs", log_s, "--since", "yesterday"],
        &["logs", log_s, "--action", "maybe"],
        &["overview", log_s, "--interval", "1w"],
        &["top", "/nonexistent/flows.jsonl"],
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("natfw: "), "{stderr}");
    }
}

/// Without `--interval` the view picks the interval from the span: minutes for an hour of
/// logs, days for a year (which at one minute would be 525,600 intervals), bytes kept exactly.
#[test]
fn overview_picks_the_interval_from_the_span() {
    use natfw_flowlog::views::overview::{overview_auto, AUTO_MAX_POINTS};
    let dir = tempfile::tempdir().unwrap();
    let files = vec![write_log(dir.path())];
    let (short, _) = overview_auto(&files, None).unwrap();
    assert_eq!(short.interval, Duration::from_secs(60));
    let (fixed, _) = overview(&files, Duration::from_secs(60), None).unwrap();
    let key = |o: &natfw_flowlog::views::overview::Overview| -> Vec<(u64, u64, u64, u64)> {
        o.buckets
            .iter()
            .map(|b| (b.start.as_nanos(), b.bytes_out, b.bytes_in, b.flows))
            .collect()
    };
    assert_eq!(key(&short), key(&fixed));

    // A year: one flow a day, the last one a 3-day flow, and one flow in the first minute.
    let day = 86_400;
    let mut year: Vec<FlowRecord> = (0..365)
        .map(|d| {
            rec(
                "10.0.1.10",
                "203.0.113.10",
                443,
                None,
                "accept",
                d * day,
                1_000,
                1_000,
                10,
            )
        })
        .collect();
    year.push(rec(
        "10.0.1.20",
        "203.0.113.11",
        443,
        None,
        "accept",
        360 * day,
        3 * day * 1000,
        3_000_000,
        0,
    ));
    let path = dir.path().join("year.jsonl");
    let mut w = Writer::open(Target::File(path.clone()), Rotation::default()).unwrap();
    for r in &year {
        w.write(r).unwrap();
    }
    w.flush().unwrap();
    let files = vec![path];
    assert!(
        overview(&files, Duration::from_secs(60), None).is_err(),
        "a year at 1m is refused"
    );
    let (o, _) = overview_auto(&files, None).unwrap();
    assert_eq!(o.interval, Duration::from_secs(day));
    assert!(o.buckets.len() as u64 <= AUTO_MAX_POINTS);
    let total: u64 = o.buckets.iter().map(|b| b.bytes_out + b.bytes_in).sum();
    let want: u64 = year
        .iter()
        .map(|r| r.out_packet_bytes + r.in_packet_bytes)
        .sum();
    assert_eq!(total, want);
    let flows: u64 = o.buckets.iter().map(|b| b.flows).sum();
    assert_eq!(flows, year.len() as u64);
    // The same at a fixed one-day interval: merging while reading gave the same buckets.
    let (fixed, _) = overview(&files, Duration::from_secs(day), None).unwrap();
    assert_eq!(key(&o), key(&fixed));
}
