use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;

use super::*;

fn record(i: u64) -> FlowRecord {
    FlowRecord {
        log_type: "flow".into(),
        gateway: "natfw".into(),
        start_time: "2026-11-28T17:11:22.123Z".into(),
        end_time: "2026-11-28T17:11:23.456Z".into(),
        src_ip: "10.0.1.10".into(),
        src_port: Some(40_000 + i as u16),
        dst_ip: "198.51.100.10".into(),
        dst_port: Some(443),
        ip_protocol: "tcp".into(),
        snat_ip: None,
        snat_port: None,
        app_name: Some("HTTPS".into()),
        domain: None,
        domain_source: None,
        ech: false,
        dst_country: None,
        acl_rule_id: None,
        monitor_rules: vec![],
        action: "accept".into(),
        app_dpi_state: "success".into(),
        reason: "default action accept".into(),
        out_packet_count: i,
        out_packet_bytes: 100 * i,
        in_packet_count: 0,
        in_packet_bytes: 0,
        end_reason: "fin".into(),
        dns_verified: None,
        interim: None,
    }
}

/// A finished, accepted TCP flow (what the engine hands the sink).
fn event(i: u64) -> FlowEnd {
    use natfw_engine::conntrack::FlowKey;
    use natfw_engine::engine::{DomainSrc, EndReason, FactState, FlowVerdict};
    use natfw_engine::stats::Counter;
    use natfw_engine::time::Timestamp;
    let fw = natfw_policy::config::embedded_default().firewall;
    FlowEnd {
        key: FlowKey {
            src: "10.0.1.10".parse().unwrap(),
            dst: "198.51.100.10".parse().unwrap(),
            sport: 40_000 + i as u16,
            dport: 443,
            proto: 6,
        },
        snat: Some(("192.0.2.1".parse().unwrap(), 40_000 + i as u16)),
        start: Timestamp::from_millis(1_764_350_000_000),
        end: Timestamp::from_millis(1_764_350_001_000 + i),
        end_reason: EndReason::Fin,
        verdict: FlowVerdict::Accept,
        decided_by: Some(natfw_policy::DecidedBy::Default),
        rule: None,
        monitors: None,
        policy: std::sync::Arc::new(natfw_policy::compile::CompiledPolicy::new(&fw)),
        domain: Some("updates.vendor.test".into()),
        domain_src: DomainSrc::Sni,
        domain_fact: FactState::Known,
        app: Some(natfw_policy::App::Https),
        app_fact: FactState::Known,
        why: None,
        dns_verified: None,
        dns_failed: false,
        country: None,
        ech: false,
        evasion: false,
        unidentifiable_drop: false,
        client_payload: true,
        established: true,
        fw_off: false,
        out: Counter {
            packets: i,
            bytes: 100 * i,
        },
        inb: Counter::default(),
    }
}

/// The record the writer renders for [`event`].
fn rendered(i: u64) -> FlowRecord {
    render(&event(i), "natfw")
}

#[test]
fn render_fills_the_contract() {
    let r = rendered(3);
    assert_eq!(r.gateway, "natfw");
    assert_eq!(r.src_ip, "10.0.1.10");
    assert_eq!(r.src_port, Some(40_003));
    assert_eq!(r.snat_ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(r.app_name.as_deref(), Some("HTTPS"));
    assert_eq!(r.domain_source.as_deref(), Some("sni"));
    assert_eq!(r.action, "accept");
    assert_eq!(r.app_dpi_state, "success");
    assert_eq!(r.end_reason, "fin");
    assert_eq!(r.out_packet_bytes, 300);
    assert!(
        r.reason
            .starts_with("no rule matched; default action accept"),
        "{}",
        r.reason
    );
    assert!(r.start_time.ends_with('Z') && r.end_time > r.start_time);
}

fn lines(path: &std::path::Path) -> Vec<FlowRecord> {
    read_records(path).unwrap().map(Result::unwrap).collect()
}

#[test]
fn every_key_present_with_nulls() {
    let line = serde_json::to_string(&record(1)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 27);
    assert!(obj["snat_ip"].is_null() && obj["domain"].is_null() && obj["acl_rule_id"].is_null());
    assert!(obj["dns_verified"].is_null());
    assert_eq!(obj["monitor_rules"], serde_json::json!([]));
}

#[test]
fn writes_and_reads_back_through_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let (mut sink, handle) =
        spawn_writer("natfw", Target::File(path.clone()), Rotation::default()).unwrap();
    for i in 0..500 {
        sink.flow_end(event(i));
    }
    let stats = handle.finish();
    assert_eq!((stats.written, stats.dropped, stats.error), (500, 0, None));
    let back = lines(&path);
    assert_eq!(back.len(), 500);
    assert_eq!(back[0], rendered(0));
    assert_eq!(back[499], rendered(499));
    // After finish the sink still never blocks; it counts.
    sink.flow_end(event(1));
    assert_eq!(sink.dropped(), 1);
}

#[test]
fn rotation_keeps_n_files_each_below_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let line_len = serde_json::to_string(&record(10)).unwrap().len() as u64 + 1;
    let max = line_len * 3 + line_len / 2; // three lines per file
    let rot = Rotation {
        max_bytes: Some(max),
        keep: 2,
        ..Rotation::default()
    };
    let mut w = Writer::open(Target::File(path.clone()), rot).unwrap();
    // 10..=19 all serialise to the same length (two-digit counters).
    for i in 10..20 {
        w.write(&record(i)).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    // 10 lines, 3 per file: [10,11,12] [13,14,15] [16,17,18] [19]; keep 2 => 12.. lost.
    let ids =
        |p: &std::path::Path| -> Vec<u64> { lines(p).iter().map(|r| r.out_packet_count).collect() };
    assert_eq!(ids(&path), vec![19]);
    assert_eq!(ids(&dir.path().join("flows.jsonl.1")), vec![16, 17, 18]);
    assert_eq!(ids(&dir.path().join("flows.jsonl.2")), vec![13, 14, 15]);
    assert!(!dir.path().join("flows.jsonl.3").exists());
    for f in ["flows.jsonl.1", "flows.jsonl.2"] {
        assert!(std::fs::metadata(dir.path().join(f)).unwrap().len() <= max);
    }

    // Reopening appends to the current file and continues rotating from its size.
    let mut w = Writer::open(Target::File(path.clone()), rot).unwrap();
    for i in 20..23 {
        w.write(&record(i)).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(ids(&path), vec![22]);
    assert_eq!(ids(&dir.path().join("flows.jsonl.1")), vec![19, 20, 21]);
}

#[test]
fn rotation_with_keep_zero_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.jsonl");
    let rot = Rotation {
        max_bytes: Some(10), // smaller than one line: one line per file
        keep: 0,
        ..Rotation::default()
    };
    let mut w = Writer::open(Target::File(path.clone()), rot).unwrap();
    for i in 0..3 {
        w.write(&record(i)).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(lines(&path), vec![record(2)]);
    assert!(!dir.path().join("f.jsonl.1").exists());
}

/// A writer that blocks in its first `write` until the test lets it go: a deterministic stand-in
/// for a disk that cannot keep up.
struct Gate {
    entered: Option<mpsc::Sender<()>>,
    release: mpsc::Receiver<()>,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(tx) = self.entered.take() {
            tx.send(()).unwrap();
            self.release.recv().unwrap();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn slow_writer_with_tiny_channel_counts_drops_exactly() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let gate = Gate {
        entered: Some(entered_tx),
        release: release_rx,
        out: out.clone(),
    };
    let (mut sink, handle) = spawn_writer_with_capacity(
        "natfw",
        Target::Writer(Box::new(gate)),
        Rotation::default(),
        4,
    )
    .unwrap();
    // The first record is taken off the channel and the writer blocks flushing it.
    sink.flow_end(event(0));
    entered_rx.recv().unwrap();
    // Now the channel holds 4 and every further record is dropped, without blocking.
    let produced = 1000u64;
    for i in 1..produced {
        sink.flow_end(event(i));
    }
    assert_eq!(sink.dropped(), produced - 1 - 4);
    release_tx.send(()).unwrap();
    let stats = handle.finish();
    assert_eq!(stats.written, 5);
    assert_eq!(stats.written + stats.dropped, produced);
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let got: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<FlowRecord>(l)
                .unwrap()
                .out_packet_count
        })
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn reader_reports_bad_lines_with_position_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    let good = serde_json::to_string(&record(7)).unwrap();
    std::fs::write(&path, format!("{good}\n\nnot json\n{good}")).unwrap();
    let got: Vec<_> = read_records(&path).unwrap().collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().unwrap(), &record(7));
    let err = got[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("mixed.jsonl:3:"), "{err}");
    assert_eq!(got[2].as_ref().unwrap(), &record(7));
    assert!(read_records(&dir.path().join("missing")).is_err());
}

/// A small tmpfs mounted on a temporary directory (root only), unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn full_disk_deletes_the_oldest_rotated_file_then_counts_what_cannot_be_written() {
    let Some(fs) = SmallFs::mount("256k") else {
        eprintln!("SKIP full-disk writer test: needs root to mount a tmpfs");
        return;
    };
    let path = fs.dir.path().join("flows.jsonl");
    let line_len = serde_json::to_string(&record(1000)).unwrap().len() as u64 + 1;
    // Files of ~40 KiB, 10 kept: 11 files would need ~440 KiB, the disk holds 256 KiB.
    let rot = Rotation {
        max_bytes: Some(40 * 1024),
        keep: 10,
        ..Rotation::default()
    };
    let mut w = Writer::open(Target::File(path.clone()), rot).unwrap();
    let n = 3 * 440 * 1024 / line_len;
    for i in 0..n {
        w.write(&record(1000 + i))
            .unwrap_or_else(|e| panic!("line {i}: {e}"));
    }
    w.flush().unwrap();
    let c = Arc::clone(w.counters());
    assert!(
        c.space_freed.load(Ordering::Relaxed) > 0,
        "the disk never filled up"
    );
    assert_eq!(c.write_failed.load(Ordering::Relaxed), 0);
    assert_eq!(c.written.load(Ordering::Relaxed), n);
    // Every file holds whole lines only, and the newest records are all there, in order.
    let mut files: Vec<_> = (1..=10)
        .rev()
        .map(|k| fs.dir.path().join(format!("flows.jsonl.{k}")))
        .filter(|p| p.exists())
        .collect();
    files.push(path.clone());
    let got: Vec<u64> = files
        .iter()
        .flat_map(|p| lines(p))
        .map(|r| r.out_packet_count)
        .collect();
    // Deleting only what was needed keeps at least half the disk's worth of records.
    let kept = got.len() as u64 * line_len;
    assert!(kept > 128 * 1024, "only {kept} bytes kept");
    let want: Vec<u64> = (1000 + n - got.len() as u64..1000 + n).collect();
    assert_eq!(got, want);

    // Nothing left to delete (a foreign file takes the space): lines are lost, counted at once,
    // and the error is kept.
    drop(w);
    for p in &files[..files.len() - 1] {
        std::fs::remove_file(p).unwrap();
    }
    let filler = fs.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=100"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let mut w = Writer::open(Target::File(path.clone()), rot).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let mut failed = 0;
    for i in 0..2000 {
        if w.write(&record(5000 + i)).is_err() {
            failed += 1;
        }
    }
    let _ = w.flush();
    let c = Arc::clone(w.counters());
    assert!(c.write_failed.load(Ordering::Relaxed) > 0, "nothing failed");
    assert!(failed > 0);
    let err = c.last_error.lock().unwrap().clone().unwrap_or_default();
    assert!(err.contains("space"), "{err}");
    // Whatever was written is whole lines (a partial write was cut back).
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    assert!(text.len() as u64 >= before);
    for l in text.lines() {
        serde_json::from_str::<FlowRecord>(l).unwrap();
    }
}

#[test]
fn ecs_format_maps_every_fact_to_elastic_common_schema() {
    let mut r = record(3);
    r.snat_ip = Some("192.0.2.1".into());
    r.snat_port = Some(40_003);
    r.domain = Some("example.com".into());
    r.domain_source = Some("sni".into());
    r.dst_country = Some("US".into());
    r.acl_rule_id = Some("web".into());
    r.in_packet_count = 2;
    r.in_packet_bytes = 900;
    let e = to_ecs(&r);
    assert_eq!(e["@timestamp"], "2026-11-28T17:11:23.456Z");
    assert_eq!(e["ecs"]["version"], ECS_VERSION);
    assert_eq!(e["event"]["action"], "accept");
    assert_eq!(e["event"]["category"], serde_json::json!(["network"]));
    assert_eq!(e["event"]["start"], "2026-11-28T17:11:22.123Z");
    assert_eq!(e["event"]["reason"], "default action accept");
    assert_eq!(e["observer"]["name"], "natfw");
    assert_eq!(e["source"]["ip"], "10.0.1.10");
    assert_eq!(e["source"]["port"], 40_003);
    assert_eq!(e["source"]["nat"]["ip"], "192.0.2.1");
    assert_eq!(e["source"]["bytes"], 300);
    assert_eq!(e["destination"]["ip"], "198.51.100.10");
    assert_eq!(e["destination"]["port"], 443);
    assert_eq!(e["destination"]["bytes"], 900);
    assert_eq!(e["destination"]["geo"]["country_iso_code"], "US");
    assert_eq!(e["network"]["transport"], "tcp");
    assert_eq!(e["network"]["protocol"], "https");
    assert_eq!(e["network"]["bytes"], 1200);
    assert_eq!(e["network"]["packets"], 5);
    assert_eq!(e["rule"]["name"], "web");
    assert_eq!(e["url"]["domain"], "example.com");
    assert_eq!(e["tls"]["client"]["server_name"], "example.com");
    assert_eq!(e["natfw"]["end_reason"], "fin");
    assert_eq!(e["natfw"]["domain_source"], "sni");

    // Unknown facts are absent, not null; a drop by the default action.
    let mut d = record(1);
    d.action = "drop".into();
    d.src_port = None;
    let e = to_ecs(&d);
    assert!(e["source"].get("port").is_none(), "{e}");
    assert!(e["source"].get("nat").is_none(), "{e}");
    assert!(e.get("url").is_none() && e.get("tls").is_none(), "{e}");
    assert_eq!(e["rule"]["name"], "(default)");
    assert!(e["event"]["type"]
        .as_array()
        .unwrap()
        .contains(&"denied".into()));
    fn no_nulls(v: &serde_json::Value) {
        match v {
            serde_json::Value::Null => panic!("null in an ECS document"),
            serde_json::Value::Object(m) => m.values().for_each(no_nulls),
            serde_json::Value::Array(a) => a.iter().for_each(no_nulls),
            _ => {}
        }
    }
    no_nulls(&e);
}

#[test]
fn writer_writes_ecs_on_request_and_the_contract_record_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (json, ecs) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let mut w = Writer::open(Target::File(json.clone()), Rotation::default()).unwrap();
    w.write(&record(1)).unwrap();
    w.flush().unwrap();
    let rot = Rotation {
        format: RecordFormat::Ecs,
        ..Rotation::default()
    };
    let mut w = Writer::open(Target::File(ecs.clone()), rot).unwrap();
    w.write(&record(1)).unwrap();
    w.flush().unwrap();
    assert_eq!(lines(&json), vec![record(1)]);
    let text = std::fs::read_to_string(&ecs).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v, to_ecs(&record(1)));
}

/// An interim record of [`event`]`(i)`'s flow: the `seq`-th, `total` frames of 100 bytes out so
/// far, `interval` of them in the interval.
fn interim_event(i: u64, seq: u32, total: u64, interval: u64) -> FlowInterim {
    use natfw_engine::stats::Counter;
    use natfw_engine::time::Timestamp;
    let mut flow = event(i);
    flow.end = Timestamp::from_millis(1_764_350_000_000 + u64::from(seq) * 60_000);
    flow.out = Counter {
        packets: total,
        bytes: 100 * total,
    };
    FlowInterim {
        flow,
        seq,
        interval_start: Timestamp::from_millis(1_764_350_000_000 + u64::from(seq - 1) * 60_000),
        interval_out: Counter {
            packets: interval,
            bytes: 100 * interval,
        },
        interval_inb: Counter::default(),
    }
}

#[test]
fn interim_records_render_their_own_fields_and_end_records_stay_as_before() {
    let r = render_interim(&interim_event(3, 2, 5, 2), "natfw");
    assert_eq!(r.log_type, "flow_interim");
    assert!(r.is_interim());
    assert_eq!(r.end_reason, "active");
    assert_eq!(r.start_time, "2025-11-28T17:13:20.000Z");
    assert_eq!(r.end_time, "2025-11-28T17:15:20.000Z");
    assert_eq!((r.out_packet_count, r.out_packet_bytes), (5, 500));
    let i = r.interim.clone().expect("interim fields");
    assert_eq!(i.interim_seq, 2);
    assert_eq!(i.interval_start_time, "2025-11-28T17:14:20.000Z");
    assert_eq!(
        (i.interval_out_packet_count, i.interval_out_packet_bytes),
        (2, 200)
    );
    assert_eq!(
        (i.interval_in_packet_count, i.interval_in_packet_bytes),
        (0, 0)
    );
    // The rest is the end record's rendering of the same flow.
    assert_eq!(r.reason, rendered(3).reason);
    assert_eq!(r.domain, rendered(3).domain);

    let line = serde_json::to_string(&r).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 27 + 6, "{line}");
    assert_eq!(v["interval_out_packet_bytes"], 200);
    let back: FlowRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back, r);
    // An end record has none of the interim keys, and reads back without them.
    let end = serde_json::to_string(&rendered(3)).unwrap();
    assert!(
        !end.contains("interim") && !end.contains("interval_"),
        "{end}"
    );
    let back: FlowRecord = serde_json::from_str(&end).unwrap();
    assert_eq!(back.interim, None);
    assert!(!back.is_interim());
    // ECS: the interim facts under natfw.interim, event.type info.
    let e = to_ecs(&r);
    assert_eq!(e["event"]["dataset"], "natfw.flow_interim");
    assert_eq!(e["event"]["type"][1], "info");
    assert_eq!(e["natfw"]["interim"]["interim_seq"], 2);
}

/// Collects the lines the writer hands a tee.
struct TeeLines(Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl LineTee for TeeLines {
    fn line(&mut self, rec: &FlowRecord, line: &[u8]) {
        self.0.lock().unwrap().push((
            rec.log_type.clone(),
            String::from_utf8(line.to_vec()).unwrap(),
        ));
    }
}

#[test]
fn the_writer_thread_writes_interim_records_and_hands_every_line_to_the_tee() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (mut sink, handle) = spawn_writer_tee(
        "natfw",
        Target::File(path.clone()),
        Rotation::default(),
        16,
        Some(Box::new(TeeLines(Arc::clone(&got)))),
    )
    .unwrap();
    sink.flow_interim(interim_event(1, 1, 2, 2));
    sink.flow_interim(interim_event(1, 2, 3, 1));
    sink.flow_end(event(1));
    let stats = handle.finish();
    assert_eq!((stats.written, stats.dropped), (3, 0));
    let back = lines(&path);
    let types: Vec<&str> = back.iter().map(|r| r.log_type.as_str()).collect();
    assert_eq!(types, ["flow_interim", "flow_interim", "flow"]);
    assert_eq!(back[2], rendered(1));
    let text = std::fs::read_to_string(&path).unwrap();
    let tee = got.lock().unwrap();
    assert_eq!(tee.len(), 3);
    for ((ty, l), file_line) in tee.iter().zip(text.lines()) {
        assert_eq!(
            l, file_line,
            "the tee gets the line as written, without the newline"
        );
        assert!(file_line.contains(&format!("\"log_type\":\"{ty}\"")));
    }
}

#[test]
fn views_count_a_flow_with_interim_records_once_and_search_shows_them() {
    use crate::views::{logs, overview, top};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    {
        let (mut sink, handle) =
            spawn_writer("natfw", Target::File(path.clone()), Rotation::default()).unwrap();
        // Flow 1 lives 3 minutes: two interim records (2 then 3 frames so far), then its end
        // with 4 frames of 100 bytes. Flow 2 is short: its end only.
        let mut end = event(1);
        end.end = natfw_engine::time::Timestamp::from_millis(1_764_350_000_000 + 150_000);
        end.out.packets = 4;
        end.out.bytes = 400;
        sink.flow_interim(interim_event(1, 1, 2, 2));
        sink.flow_interim(interim_event(1, 2, 3, 1));
        sink.flow_end(end);
        sink.flow_end(event(2));
        handle.finish();
    }
    let files = [path];
    let (t, stats) = top::top(&files, top::TopBy::Bytes).unwrap();
    assert_eq!(stats.records, 4);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].flows, 2, "interim records are not flows");
    assert_eq!(
        t[0].bytes_out,
        400 + 200,
        "the flow's 400 bytes once, plus flow 2's"
    );
    let (o, _) = overview::overview(&files, std::time::Duration::from_secs(60), None).unwrap();
    let bytes: u64 = o.buckets.iter().map(|b| b.bytes_out).sum();
    let flows: u64 = o.buckets.iter().map(|b| b.flows).sum();
    assert_eq!((bytes, flows), (600, 2));
    // Search shows the live flow's records, interim ones included.
    let mut out = Vec::new();
    let filter = logs::LogFilter {
        src: Some(logs::parse_net("10.0.1.10").unwrap()),
        ..Default::default()
    };
    let (_, shown) = logs::logs(&files, &filter, logs::LogFormat::Json, &mut out).unwrap();
    assert_eq!(shown, 4);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\"log_type\":\"flow_interim\"").count(), 2);
}
