//! The flow log of a live gateway beyond end records: interim records of a held-open
//! connection (`logging.interim_interval`), checked against the frames the server's segment
//! carried; and the remote syslog sink (`logging.syslog`) against a real rsyslog started by the
//! test with its own config (imtcp on the gateway namespace's loopback, omfile to a file in the
//! lab's state directory, its own pid file and work directory; the system rsyslog is not
//! touched): every record arrives, and while rsyslog is stopped the drop counter is exact.
//! Root only (prints `SKIP` otherwise); namespace tags `natfw-r1-*`, `natfw-r2-*`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use natfw_lab::{gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};

use super::support::metric;
use serde_json::Value;

/// The test's own TCP server in the internet namespace (a lab address nothing else listens
/// on this port of).
const SERVER: &str = "203.0.113.5";
const SLOW_PORT: u16 = 8099;
const QUICK_PORT: u16 = 8098;
const METRICS: &str = "127.0.0.1:9119";
const SYSLOG_PORT: u16 = 10514;

/// Sends on `SLOW_PORT` 5 chunks of 40,000 bytes 0.8 s apart (a held-open download), on
/// `QUICK_PORT` 1,000 bytes; then closes. Logs `port peer_port bytes_sent` per connection.
const SERVER_PY: &str = r#"
import socket, sys, threading, time
log = open(sys.argv[1], "a", buffering=1)
def serve(port, chunks, size, pause):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], port)); s.listen(64)
    def one(c, peer):
        sent = 0
        for i in range(chunks):
            c.sendall(b"x" * size); sent += size
            if i + 1 < chunks: time.sleep(pause)
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096): pass
        c.close()
        log.write("%d %d %d\n" % (port, peer[1], sent))
    while True:
        c, peer = s.accept()
        threading.Thread(target=one, args=(c, peer), daemon=True).start()
threading.Thread(target=serve, args=(8099, 5, 40000, 0.8), daemon=True).start()
serve(8098, 1, 1000, 0)
"#;

/// Connects, reads to the end, prints the bytes received.
const CLIENT_PY: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.close()
print(n)
"#;

/// Processes this test started; killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lab_up(tag: &str) -> Option<LabGuard> {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab records test: {why}");
        return None;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    Some(LabGuard(
        Lab::up(plan(Scenario::ProdTest, tag), o).expect("lab up"),
    ))
}

/// The prod gateway's config with a rule for the test server and `extra` logging keys.
fn config(lab: &Lab, logging_extra: &str) -> (usize, String) {
    let gi = lab
        .plan
        .gateways
        .iter()
        .position(|g| g.name == "prod")
        .expect("prod gateway");
    let base = gateway_config_text(&lab.plan.gateways[gi]).expect("embedded config");
    let rule = format!(
        "    - name: allow-test-server\n      destination: {{ cidr: [{SERVER}/32] }}\n      protocol: tcp\n      ports: [{SLOW_PORT}, {QUICK_PORT}]\n      action: accept\n    - name: allow-icmp\n"
    );
    assert!(base.contains("    - name: allow-icmp\n"));
    assert!(base.trim_end().ends_with("flow_log: flow-prod.jsonl"));
    let text = base.replace("    - name: allow-icmp\n", &rule);
    let text = format!(
        "{}\n{logging_extra}metrics:\n  listen: \"{METRICS}\"\n",
        text.trim_end()
    );
    (gi, text)
}

fn start_server(lab: &Lab, procs: &mut Procs) -> PathBuf {
    let script = lab.dir.join("records-server.py");
    std::fs::write(&script, SERVER_PY).unwrap();
    let log = lab.dir.join("records-server.log");
    let child = Command::new("ip")
        .args(["netns", "exec", lab.plan.inet_ns(), "python3"])
        .arg(&script)
        .arg(&log)
        .arg(SERVER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    procs.0.push(child);
    std::fs::write(lab.dir.join("records-client.py"), CLIENT_PY).unwrap();
    // Ready when it accepts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = lab
            .exec(
                lab.plan.inet_ns(),
                &["ss", "-Hltn", &format!("sport = :{QUICK_PORT}")],
                Duration::from_secs(5),
            )
            .expect("ss");
        if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            return log;
        }
        assert!(Instant::now() < deadline, "test server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn client_cmd(lab: &Lab, port: u16) -> Command {
    let h = lab.plan.host("prod").expect("prod host");
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &h.ns, "python3"])
        .arg(lab.dir.join("records-client.py"))
        .arg(SERVER)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    c
}

fn fetch(lab: &Lab, port: u16) -> u64 {
    let o = client_cmd(lab, port).output().expect("client");
    assert!(
        o.status.success(),
        "client to {SERVER}:{port}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("bytes")
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn records(p: &Path) -> Vec<Value> {
    lines(p)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(lab: &Lab, ns: &str) -> String {
    let o = lab
        .exec(
            ns,
            &[
                "curl",
                "-s",
                "--max-time",
                "5",
                &format!("http://{METRICS}/metrics"),
            ],
            Duration::from_secs(10),
        )
        .expect("curl metrics");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Frames and bytes of the capture per direction: (to the server, from the server).
fn frames_by_direction(pcap: &Path) -> ((u64, u64), (u64, u64)) {
    let server: std::net::IpAddr = SERVER.parse().unwrap();
    let (mut to, mut from) = ((0u64, 0u64), (0u64, 0u64));
    for f in natfw_pcap::open(pcap).expect("open capture") {
        let f = f.expect("frame");
        let Ok(info) = natfw_engine::wire::parse(&f.data) else {
            continue;
        };
        let c = if info.dst == server {
            &mut to
        } else if info.src == server {
            &mut from
        } else {
            continue;
        };
        c.0 += 1;
        c.1 += u64::from(f.orig_len);
    }
    (to, from)
}

#[test]
fn held_open_connection_gets_interim_records_and_its_end_record_matches_the_wire() {
    let Some(mut lab) = lab_up("r1") else {
        return;
    };
    let mut procs = Procs(Vec::new());
    let server_log = start_server(&lab, &mut procs);
    let (gi, text) = config(&lab, "  interim_interval: 1s\n");
    lab.start_natfw_with(gi, &text).expect("natfw run");
    let flow_log = lab.flow_log(&lab.plan.gateways[gi]);

    // What the server's segment carries, frame by frame (full frames: lengths on the wire).
    let pcap = lab.dir.join("records-r1.pcap");
    let dump_err = lab.dir.join("records-r1.tcpdump.err");
    let dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.plan.inet_ns(),
            "tcpdump",
            "-U",
            "-nn",
            "-i",
            "to-prod",
            "-w",
        ])
        .arg(&pcap)
        .arg(format!("tcp port {SLOW_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&dump_err).unwrap())
        .spawn()
        .expect("tcpdump");
    // Killed on a panic, stopped with SIGINT below.
    let mut dump = Procs(vec![dump]);
    wait_until("tcpdump listening", 20, || {
        std::fs::read_to_string(&dump_err)
            .unwrap_or_default()
            .contains("listening on")
    });

    let mut client = client_cmd(&lab, SLOW_PORT).spawn().expect("client");
    // While the download runs (about 3.2 s): interim records of it appear.
    let mut live = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.try_wait().expect("client").is_none() {
        live = records(&flow_log)
            .into_iter()
            .filter(|r| r["log_type"] == "flow_interim" && r["dst_port"] == SLOW_PORT)
            .collect();
        assert!(Instant::now() < deadline, "client did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client.wait_with_output().expect("client");
    let received: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("n");
    assert_eq!(received, 200_000, "the client got the whole download");
    assert!(
        !live.is_empty(),
        "no flow_interim record while the connection was open"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let _ = Command::new("kill")
        .args(["-INT", &dump.0[0].id().to_string()])
        .status();
    let _ = dump.0[0].wait();
    for (g, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {g}: {st:?}");
    }

    let all = records(&flow_log);
    let mine: Vec<&Value> = all
        .iter()
        .filter(|r| r["dst_port"] == SLOW_PORT && r["dst_ip"] == SERVER)
        .collect();
    let interim: Vec<&&Value> = mine
        .iter()
        .filter(|r| r["log_type"] == "flow_interim")
        .collect();
    let ends: Vec<&&Value> = mine.iter().filter(|r| r["log_type"] == "flow").collect();
    assert_eq!(ends.len(), 1, "one end record: {mine:#?}");
    let end = ends[0];
    // About 3.2 s of life at a 1 s interval: 2 or 3 interim records, numbered upwards, each
    // interval's counters adding up to the next record's totals.
    assert!(
        (2..=4).contains(&interim.len()),
        "interim records: {interim:#?}"
    );
    let u = |r: &Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    let mut prev = (0u64, 0u64, 0u64);
    for r in &interim {
        assert_eq!(r["src_port"], end["src_port"]);
        assert_eq!(r["start_time"], end["start_time"]);
        assert_eq!(r["end_reason"], "active");
        assert!(u(r, "interim_seq") > prev.0, "{interim:#?}");
        assert_eq!(
            u(r, "in_packet_bytes"),
            prev.1 + u(r, "interval_in_packet_bytes"),
            "interval + previous total = total: {interim:#?}"
        );
        assert_eq!(
            u(r, "out_packet_bytes"),
            prev.2 + u(r, "interval_out_packet_bytes")
        );
        prev = (
            u(r, "interim_seq"),
            u(r, "in_packet_bytes"),
            u(r, "out_packet_bytes"),
        );
    }
    assert!(
        u(end, "in_packet_bytes") > prev.1,
        "the last chunk came after the last interim record"
    );
    assert!(
        end.get("interim_seq").is_none(),
        "the end record is as before: {end}"
    );

    // The end record counts exactly the frames the server's segment carried.
    let ((to_n, to_b), (from_n, from_b)) = frames_by_direction(&pcap);
    assert!(from_b > 200_000, "capture: {from_n} frames, {from_b} bytes");
    assert_eq!(
        (u(end, "in_packet_count"), u(end, "in_packet_bytes")),
        (from_n, from_b),
        "server → client: record vs wire"
    );
    assert_eq!(
        (u(end, "out_packet_count"), u(end, "out_packet_bytes")),
        (to_n, to_b),
        "client → server: record vs wire"
    );
    eprintln!(
        "interim: {} flow_interim record(s) while open ({} seen live); end record in {from_n} \
         frames / {from_b} bytes, out {to_n} / {to_b}: equal to the server segment's capture",
        interim.len(),
        live.len()
    );
    let sent = std::fs::read_to_string(&server_log).unwrap_or_default();
    assert!(
        sent.lines()
            .any(|l| l == format!("{SLOW_PORT} {} 200000", u(end, "snat_port"))),
        "server log: {sent}"
    );

    // The views count the flow's bytes once: its end record, not its interim records.
    let (talkers, _) = natfw_flowlog::views::top::top(
        std::slice::from_ref(&flow_log),
        natfw_flowlog::views::top::TopBy::Bytes,
    )
    .expect("top");
    let src = end["src_ip"].as_str().unwrap();
    let ends_of_src: u64 = all
        .iter()
        .filter(|r| r["log_type"] == "flow" && r["src_ip"] == src)
        .map(|r| u(r, "in_packet_bytes") + u(r, "out_packet_bytes"))
        .sum();
    let t = talkers.iter().find(|t| t.src_ip == src).expect("talker");
    assert_eq!(t.bytes_in + t.bytes_out, ends_of_src);
    let (o, _) = natfw_flowlog::views::overview::overview(
        std::slice::from_ref(&flow_log),
        Duration::from_secs(1),
        None,
    )
    .expect("overview");
    let total: u64 = o.buckets.iter().map(|b| b.bytes_in + b.bytes_out).sum();
    let ends_all: u64 = all
        .iter()
        .filter(|r| r["log_type"] == "flow")
        .map(|r| u(r, "in_packet_bytes") + u(r, "out_packet_bytes"))
        .sum();
    assert_eq!(total, ends_all, "overview counts bytes once");
}

/// rsyslog with its own config in namespace `ns`, listening on 127.0.0.1:`SYSLOG_PORT`,
/// writing each message's MSG as a line to `out`.
struct Rsyslog {
    ns: String,
    conf: PathBuf,
    pid: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    fn new(dir: &Path, ns: &str, out: &Path) -> Rsyslog {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog-test.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\" maxMessageSize=\"64k\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{SYSLOG_PORT}\")\n\
                 template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
                 action(type=\"omfile\" file=\"{}\" template=\"msgonly\")\n",
                work.display(),
                out.display()
            ),
        )
        .unwrap();
        Rsyslog {
            ns: ns.to_string(),
            conf,
            pid: dir.join("rsyslog-test.pid"),
            child: None,
        }
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.pid);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "rsyslogd", "-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd");
        self.child = Some(child);
        let ns = self.ns.clone();
        wait_until("rsyslog listening", 15, || {
            let o = Command::new("ip")
                .args(["netns", "exec", &ns, "ss", "-Hltn"])
                .arg(format!("sport = :{SYSLOG_PORT}"))
                .output()
                .expect("ss");
            !String::from_utf8_lossy(&o.stdout).trim().is_empty()
        });
    }

    /// SIGTERM and wait for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn rsyslog_receives_every_record_and_drops_while_it_is_down_are_counted_exactly() {
    let Some(mut lab) = lab_up("r2") else {
        return;
    };
    if Command::new("rsyslogd").arg("-v").output().is_err() {
        panic!("rsyslogd missing: scripts/lab-deps.sh installs it");
    }
    let mut procs = Procs(Vec::new());
    start_server(&lab, &mut procs);
    const QUEUE: u64 = 10;
    let (gi, text) = config(
        &lab,
        &format!("  syslog:\n    address: \"127.0.0.1:{SYSLOG_PORT}\"\n    queue: {QUEUE}\n"),
    );
    let g = lab.plan.gateways[gi].clone();
    lab.exec(
        &g.ns,
        &["ip", "link", "set", "lo", "up"],
        Duration::from_secs(5),
    )
    .expect("lo up");
    let received = lab.dir.join("rsyslog-received.log");
    let mut rsyslog = Rsyslog::new(&lab.dir, &g.ns, &received);
    rsyslog.start();
    lab.start_natfw_with(gi, &text).expect("natfw run");
    let flow_log = lab.flow_log(&g);
    let m = || metrics(&lab, &g.ns);
    wait_until("syslog connected", 30, || {
        metric(&m(), "natfw_syslog_connected") == 1
    });

    // Phase 1, rsyslog up: every record arrives.
    for _ in 0..8 {
        assert_eq!(fetch(&lab, QUICK_PORT), 1000);
    }
    wait_until("8 local records", 20, || lines(&flow_log).len() >= 8);
    wait_until("rsyslog has every record", 20, || {
        lines(&received).len() == lines(&flow_log).len()
    });
    let before = lines(&flow_log).len() as u64;
    // Metrics are published about once a second.
    wait_until("sent metric", 15, || {
        metric(&m(), "natfw_syslog_sent_total") == before
    });
    assert_eq!(metric(&m(), "natfw_syslog_dropped_total"), 0);

    // Phase 2, rsyslog stopped (after it wrote everything): natfw notices the closed
    // connection before sending anything more; records produced meanwhile are queued (up to
    // the queue's 10) or dropped, and counted.
    rsyslog.stop();
    wait_until("syslog disconnected", 20, || {
        metric(&m(), "natfw_syslog_connected") == 0
    });
    const DOWN: u64 = 30;
    for _ in 0..DOWN {
        assert_eq!(fetch(&lab, QUICK_PORT), 1000);
    }
    wait_until("local records while down", 20, || {
        lines(&flow_log).len() as u64 == before + DOWN
    });
    let produced = lines(&flow_log).len() as u64 - before;
    wait_until("records metric", 15, || {
        metric(&m(), "natfw_syslog_records_total") == before + produced
    });
    let m2 = m();
    let dropped = metric(&m2, "natfw_syslog_dropped_total");
    let queued = metric(&m2, "natfw_syslog_queued");
    // The queue holds QUEUE; the sender may hold one more it took before it saw the close.
    assert!(
        dropped >= produced - QUEUE - 1 && dropped <= produced - QUEUE,
        "produced {produced} while down, dropped {dropped}, queued {queued}"
    );

    // Phase 3, rsyslog back: the backlog arrives, nothing more is lost.
    let had = lines(&received).len() as u64;
    assert_eq!(had, before, "nothing arrived while rsyslog was down");
    rsyslog.start();
    wait_until("reconnected", 40, || {
        metric(&m(), "natfw_syslog_connected") == 1
    });
    wait_until("backlog delivered", 20, || {
        lines(&received).len() as u64 >= had + produced - dropped
    });
    std::thread::sleep(Duration::from_millis(500));
    let delivered_after = lines(&received).len() as u64 - had;
    // Exact: every record produced while rsyslog was down is dropped (and counted) or
    // delivered after the reconnection, never both, never neither.
    assert_eq!(
        dropped + delivered_after,
        produced,
        "produced {produced} while down = dropped {dropped} + delivered after reconnect {delivered_after}"
    );
    assert_eq!(metric(&m(), "natfw_syslog_dropped_total"), dropped);
    eprintln!(
        "rsyslog: {before} records while up, all received; {produced} while down: {dropped} \
         dropped (queue {QUEUE}), {delivered_after} delivered after the reconnection"
    );

    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    let log_text =
        std::fs::read_to_string(lab.dir.join(format!("natfw-{}.log", g.name))).unwrap_or_default();
    assert!(
        log_text.contains("syslog: ") && log_text.contains(&format!("{dropped} dropped")),
        "natfw reports the drops in its log: {log_text}"
    );
    wait_until("final records at rsyslog", 10, || {
        lines(&received).len() as u64 + dropped == lines(&flow_log).len() as u64
    });
    rsyslog.stop();
    // Every record rsyslog got is a local record, byte for byte, each once.
    let local = lines(&flow_log);
    let got = lines(&received);
    let mut seen = std::collections::HashSet::new();
    for l in &got {
        assert!(local.contains(l), "not in the local flow log: {l}");
        assert!(seen.insert(l.clone()), "received twice: {l}");
    }
    assert_eq!(got.len() as u64 + dropped, local.len() as u64);
}
