//! Lab throughput harness: the same namespace topology (lab scenario 1, test VPC host → test
//! gateway → internet servers), measured in the same run with the gateway as
//! (a) kernel forwarding + nftables SNAT and an equivalent L3/L4 ruleset, (b) a bare tc-BPF
//! SNAT forwarder with no policy (`bench/tc/tc_snat.bpf.c`: this machine's forwarding limit),
//! and (c) `natfw run`.
//!
//! Metrics: iperf3 TCP throughput with 1 and 8 streams, connection rate of short HTTP requests
//! (one TCP connection each, several client threads), HTTPS connections/s (new TLS connection
//! with SNI per request, `https_rate`, 8 threads; natfw inspects every SNI) and the machine's
//! CPU time per HTTPS connection (all cores, from /proc/stat, same load), UDP echo round-trip
//! latency p50/p99 (an established flow), a 60-byte UDP queued-burst drain in Mpps
//! (`udp_drain_60b`, see [`udp_drain`]) and one large HTTPS download in Gbit/s
//! (`https_download`, [`DOWNLOAD_BYTES`] from nginx with `curl`, see [`https_download`]).
//! natfw is measured with one packet worker and with two (`gateway.workers: 2`, column
//! `natfw-2w`); `udp_drain_engine` is a drain whose packets natfw's engine handles one by one
//! (two flows, one per worker), where a second worker can show.
//! Repeats interleave the two gateways (ABBA order) and the table shows medians, the spread
//! (min–max) and natfw/nftables ratios. Everything is bounded in count and time; all traffic
//! stays inside the lab's namespaces. Root only.
//!
//! ```text
//! cargo build --release -p natfw-gateway -p natfw-bench
//! target/release/lab_harness [--repeats 3] [--seconds 3] [--json out.json] [--natfw PATH]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use natfw_lab::{plan, GatewayMode, Lab, LabGuard, Options, Scenario};

/// The gateway under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nftables,
    TcBpf,
    Natfw,
    /// natfw with two packet workers (`gateway.workers: 2`).
    Natfw2,
}

const MODES: [Mode; 4] = [Mode::Nftables, Mode::TcBpf, Mode::Natfw, Mode::Natfw2];

/// The bare tc-BPF SNAT forwarder, compiled by the harness for the lab's addresses.
const TC_SNAT_SRC: &str = include_str!("../../tc/tc_snat.bpf.c");
use serde_json::{json, Value};

const TAG: &str = "bench";
/// The test VPC: its policy (`examples/lab/scenario-1-test.yaml`: default accept, the blocked
/// and payment domains denied) lets every benchmark flow through after inspection, like the
/// baseline's ruleset (everything but the blocked server's address).
const HOST: &str = "test";

#[derive(Debug)]
struct Args {
    natfw: PathBuf,
    repeats: u32,
    seconds: u32,
    json: Option<PathBuf>,
    tx_csum_off: bool,
    /// Measure natfw in classic mode (`gateway.fast_path: false`) instead of split mode.
    classic: bool,
    /// Metrics to measure (all by default): one at a time is quicker when tuning one path.
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        natfw: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("natfw")))
            .unwrap_or_else(|| PathBuf::from("natfw")),
        repeats: 3,
        seconds: 3,
        json: None,
        tx_csum_off: false,
        classic: false,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--natfw" => a.natfw = PathBuf::from(val()?),
            "--repeats" => a.repeats = val()?.parse().map_err(|e| format!("--repeats: {e}"))?,
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--json" => a.json = Some(PathBuf::from(val()?)),
            "--tx-csum-off" => a.tx_csum_off = true,
            "--classic" => a.classic = true,
            "--only" => {
                for m in val()?.split(',') {
                    // udp_rtt measures both percentiles.
                    let m = if m == "udp_rtt" { "udp_rtt_p50" } else { m };
                    if !METRICS.iter().any(|x| x.0 == m) {
                        return Err(format!("--only: unknown metric {m}"));
                    }
                    a.only.push(m.to_string());
                }
            }
            "-h" | "--help" => {
                println!(
                    "lab_harness [--repeats N (1-9)] [--seconds S (1-30)] [--json PATH] \
                     [--natfw PATH] [--tx-csum-off] [--classic] [--only METRIC,...]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    a.repeats = a.repeats.clamp(1, 9);
    a.seconds = a.seconds.clamp(1, 30);
    Ok(a)
}

/// One metric: name, unit, and whether bigger is better.
const METRICS: [(&str, &str, bool); 10] = [
    ("tcp_1_stream", "Gbit/s", true),
    ("tcp_8_streams", "Gbit/s", true),
    ("http_conn_rate", "req/s", true),
    ("https_conn_rate", "conn/s", true),
    ("https_cpu_per_conn", "us", false),
    ("https_download", "Gbit/s", true),
    ("udp_rtt_p50", "us", false),
    ("udp_rtt_p99", "us", false),
    ("udp_drain_60b", "Mpps", true),
    ("udp_drain_engine", "Mpps", true),
];

/// Size of the `https_download` file: 2 GiB (a sparse file in the lab's state directory, so
/// it costs no memory; nginx reads zeros and encrypts them).
const DOWNLOAD_BYTES: u64 = 2 << 30;
/// Name of the download under nginx's `/download/`.
const DOWNLOAD_FILE: &str = "large.bin";
/// The download may take this long before it counts as failed.
const DOWNLOAD_MAX_SECS: u64 = 90;

/// Datagrams queued for one `udp_drain_60b` measurement (about 1 KiB of kernel memory each
/// while held).
const DRAIN_PACKETS: u64 = 400_000;
/// The drain flow: one UDP flow from the test host to the iperf server's address, this port.
const DRAIN_PORT: u16 = 9000;
/// Its source port (fixed: every datagram of the warm-up, the burst and the kick is one flow).
const DRAIN_SPORT: u16 = 40000;
/// `udp_drain_engine`: datagrams to the DNS port, which natfw's engine keeps watching (never
/// offloaded), from two source ports (an even and an odd one: with two packet workers, one
/// flow each), so every packet crosses the engine.
const ENGINE_DRAIN_PORT: u16 = 53;
const ENGINE_DRAIN_SPORTS: [u16; 2] = [40000, 40001];
/// Warm-up datagrams sent through the open link before the burst: they create the flow in
/// every gateway (conntrack entry, natfw's decision and fast-path entry).
const DRAIN_WARMUP: u64 = 32;
/// `net.core.netdev_max_backlog` during the drain (global, restored right after): the
/// non-NAPI veth path queues every hop on the per-CPU backlog, and the default (1000)
/// overflows when a whole queue is released at once.
const DRAIN_BACKLOG: &str = "2000000";
const BACKLOG_SYSCTL: &str = "/proc/sys/net/core/netdev_max_backlog";

type Samples = BTreeMap<&'static str, Vec<f64>>;

fn host_exec(lab: &Lab, args: &[&str], timeout: Duration) -> Result<String, String> {
    let o = lab
        .host_exec(HOST, args, timeout)
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "{} exited {}: {}",
            args.first().copied().unwrap_or("?"),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn iperf(lab: &Lab, streams: u32, seconds: u32) -> Result<f64, String> {
    let to = plan::IPERF_ADDR.to_string();
    let port = plan::IPERF_PORT.to_string();
    let (p, t) = (streams.to_string(), seconds.to_string());
    let out = host_exec(
        lab,
        &[
            "iperf3",
            "-c",
            &to,
            "-p",
            &port,
            "-P",
            &p,
            "-t",
            &t,
            "-J",
            "--connect-timeout",
            "3000",
        ],
        Duration::from_secs(u64::from(seconds) + 15),
    )?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 JSON: {e}"))?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| {
            format!(
                "iperf3: no result ({})",
                v.get("error").unwrap_or(&Value::Null)
            )
        })
}

fn http_rate(lab: &Lab, seconds: u32) -> Result<f64, String> {
    let bin = lab.opts.natfw_bin.display().to_string();
    let web = plan::WEB_NAMES[0];
    let to = format!("{}:80", web.addr);
    let secs = seconds.to_string();
    let out = host_exec(
        lab,
        &[
            &bin,
            "lab",
            "http-rate",
            "--to",
            &to,
            "--host",
            web.name,
            "--threads",
            "4",
            "--per-thread",
            "2500",
            "--max-secs",
            &secs,
        ],
        Duration::from_secs(u64::from(seconds) + 15),
    )?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("http-rate JSON: {e}"))?;
    let ok = v.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let failed = v.get("failed").and_then(Value::as_u64).unwrap_or(0);
    if ok == 0 || failed * 100 > ok {
        return Err(format!("http-rate: {ok} ok, {failed} failed"));
    }
    v.get("per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| "http-rate: no rate".into())
}

/// Busy CPU time of the whole machine so far, in µs (USER_HZ = 100): user, nice, system, irq,
/// softirq, steal of the aggregate `cpu` line.
fn machine_busy_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum::<f64>();
    Some(busy * 10_000.0)
}

/// A helper binary of this crate, next to `lab_harness`.
fn sibling_bin(name: &str) -> Result<String, String> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .ok_or_else(|| {
            format!("{name} binary not next to lab_harness (cargo build --release -p natfw-bench)")
        })
}

/// HTTPS connections/s and machine CPU µs per connection.
fn https_rate(lab: &Lab, seconds: u32) -> Result<(f64, f64), String> {
    let bin = sibling_bin("https_rate")?;
    let web = plan::WEB_NAMES[0];
    let to = format!("{}:443", web.addr);
    let ca = lab.ca_cert().display().to_string();
    let secs = seconds.to_string();
    let cpu0 = machine_busy_us();
    let out = host_exec(
        lab,
        &[
            &bin,
            "--to",
            &to,
            "--name",
            web.name,
            "--ca",
            &ca,
            "--threads",
            "8",
            "--secs",
            &secs,
        ],
        Duration::from_secs(u64::from(seconds) + 15),
    )?;
    let cpu1 = machine_busy_us();
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("https_rate JSON: {e}"))?;
    let ok = v.get("ok").and_then(Value::as_u64).unwrap_or(0);
    let failed = v.get("failed").and_then(Value::as_u64).unwrap_or(0);
    if ok == 0 || failed * 100 > ok {
        return Err(format!("https_rate: {ok} ok, {failed} failed"));
    }
    let rate = v
        .get("per_second")
        .and_then(Value::as_f64)
        .ok_or("https_rate: no rate")?;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b - a) / ok as f64,
        _ => return Err("/proc/stat unreadable".into()),
    };
    Ok((rate, cpu))
}

/// Compile and attach the bare tc-BPF SNAT forwarder on the test gateway (kernel mode set up
/// first: forwarding on, routes and neighbours as for nftables).
fn attach_tc_bpf(lab: &Lab) -> Result<(), String> {
    let h = lab.plan.host(HOST).ok_or("no test host")?;
    let g = &lab.plan.gateways[h.gateway];
    let eip = lab.plan.expected_eip(h).ok_or("test host has no EIP")?;
    let src = lab.dir.join("tc_snat.bpf.c");
    let obj = lab.dir.join("tc_snat.bpf.o");
    std::fs::write(&src, TC_SNAT_SRC).map_err(|e| format!("{src:?}: {e}"))?;
    let clang = std::env::var("NATFW_CLANG").unwrap_or_else(|_| "clang".into());
    let st = std::process::Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-Wall",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
        ])
        .arg("-DSNAT")
        .arg(format!("-DPRIV_IP=0x{:08x}", u32::from(h.addr)))
        .arg(format!("-DPUB_IP=0x{:08x}", u32::from(eip)))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .map_err(|e| format!("{clang}: {e}"))?;
    if !st.success() {
        return Err(format!("{clang} failed on tc_snat.bpf.c ({st})"));
    }
    let obj = obj.display().to_string();
    for dev in ["inside0", "outside0"] {
        for args in [
            vec!["tc", "qdisc", "replace", "dev", dev, "clsact"],
            vec![
                "tc",
                "filter",
                "replace",
                "dev",
                dev,
                "ingress",
                "bpf",
                "direct-action",
                "obj",
                &obj,
                "sec",
                "classifier",
            ],
        ] {
            let o = lab
                .exec(&g.ns, &args, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
    }
    Ok(())
}

fn detach_tc_bpf(lab: &Lab) {
    if let Some(h) = lab.plan.host(HOST) {
        let g = &lab.plan.gateways[h.gateway];
        for dev in ["inside0", "outside0"] {
            let _ = lab.exec(
                &g.ns,
                &["tc", "qdisc", "del", "dev", dev, "clsact"],
                Duration::from_secs(10),
            );
        }
    }
}

fn udp_rtt(lab: &Lab) -> Result<(f64, f64), String> {
    let bin = lab.opts.natfw_bin.display().to_string();
    let to = format!("{}:{}", plan::ECHO_ADDR, plan::ECHO_PORT);
    let out = host_exec(
        lab,
        &[
            &bin,
            "lab",
            "udp-rtt",
            "--to",
            &to,
            "--count",
            "3000",
            "--timeout-ms",
            "200",
        ],
        Duration::from_secs(60),
    )?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("udp-rtt JSON: {e}"))?;
    let received = v.get("received").and_then(Value::as_u64).unwrap_or(0);
    if received < 2900 {
        return Err(format!("udp-rtt: only {received}/3000 echoed"));
    }
    match (
        v.get("p50_us").and_then(Value::as_f64),
        v.get("p99_us").and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err("udp-rtt: no percentiles".into()),
    }
}

/// Run `args` in namespace `ns`; stdout on success, the error otherwise.
fn ns_run(lab: &Lab, ns: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let o = lab.exec(ns, args, timeout).map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "{} exited {}: {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// One large HTTPS download through the gateway: `curl` in the test host fetches
/// [`DOWNLOAD_BYTES`] from nginx (lab CA checked, SNI the web name: natfw decides on it, then
/// offloads the flow) into /dev/null; Gbit/s from curl's byte count and total time (TLS
/// handshake included).
fn https_download(lab: &Lab) -> Result<f64, String> {
    let dir = lab.dir.join(natfw_lab::servers::DOWNLOAD_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let file = dir.join(DOWNLOAD_FILE);
    // Sparse: a hole of DOWNLOAD_BYTES reads as zeros without using memory.
    let f = std::fs::File::create(&file).map_err(|e| format!("{file:?}: {e}"))?;
    f.set_len(DOWNLOAD_BYTES)
        .map_err(|e| format!("{file:?}: {e}"))?;
    drop(f);
    let web = plan::WEB_NAMES[0];
    let url = format!("https://{}/download/{DOWNLOAD_FILE}", web.name);
    let resolve = format!("{}:443:{}", web.name, web.addr);
    let ca = lab.ca_cert().display().to_string();
    let max = DOWNLOAD_MAX_SECS.to_string();
    let out = host_exec(
        lab,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--max-time",
            &max,
            "-w",
            "%{http_code} %{size_download} %{time_total}",
            &url,
        ],
        Duration::from_secs(DOWNLOAD_MAX_SECS + 10),
    );
    let _ = std::fs::remove_file(&file);
    let out = out?;
    let f: Vec<&str> = out.split_whitespace().collect();
    let (code, size, secs) = match f.as_slice() {
        [c, s, t] => (
            *c,
            s.parse::<u64>().unwrap_or(0),
            t.parse::<f64>().unwrap_or(0.0),
        ),
        _ => return Err(format!("curl: unexpected output {out:?}")),
    };
    if code != "200" || size != DOWNLOAD_BYTES || secs <= 0.0 {
        return Err(format!(
            "curl: status {code}, {size} of {DOWNLOAD_BYTES} bytes in {secs} s"
        ));
    }
    Ok(size as f64 * 8.0 / secs / 1e9)
}

/// Restores `net.core.netdev_max_backlog` (a global sysctl: there is no per-namespace one)
/// when dropped.
struct BacklogGuard(Option<String>);

impl BacklogGuard {
    fn raise() -> Result<BacklogGuard, String> {
        let old = std::fs::read_to_string(BACKLOG_SYSCTL)
            .map_err(|e| format!("{BACKLOG_SYSCTL}: {e}"))?;
        std::fs::write(BACKLOG_SYSCTL, DRAIN_BACKLOG)
            .map_err(|e| format!("{BACKLOG_SYSCTL}: {e}"))?;
        Ok(BacklogGuard(Some(old.trim().to_string())))
    }
}

impl Drop for BacklogGuard {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            if let Err(e) = std::fs::write(BACKLOG_SYSCTL, &old) {
                eprintln!("lab_harness: restoring {BACKLOG_SYSCTL}={old}: {e}");
            }
        }
    }
}

/// The drain's sink in the internet namespace; killed (it is our child) when dropped.
struct Sink {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sink {
    fn start(lab: &Lab, bin: &str, counter: &str) -> Result<Sink, String> {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let bind = format!("{}:{DRAIN_PORT}", plan::IPERF_ADDR);
        let mut child = Command::new("ip")
            .args(["netns", "exec", lab.plan.inet_ns(), bin, "sink"])
            .args(["--bind", &bind, "--counter", counter])
            .args(["--idle-ms", "300", "--wait-s", "20", "--interval-us", "500"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("udp_burst sink: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        let sink = Sink { child, lines: rx };
        match sink.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l.trim() == "ready" => Ok(sink),
            Ok(l) => Err(format!("udp_burst sink: {l}")),
            Err(_) => Err("udp_burst sink not ready in 10 s".into()),
        }
    }

    fn go(&mut self) -> Result<(), String> {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().ok_or("sink stdin")?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("sink stdin: {e}"))
    }

    fn result(&mut self, timeout: Duration) -> Result<Value, String> {
        let l = self
            .lines
            .recv_timeout(timeout)
            .map_err(|_| "udp_burst sink: no result (nothing arrived?)".to_string())?;
        serde_json::from_str(&l).map_err(|e| format!("udp_burst sink {l:?}: {e}"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `udp_burst send` in the test host from `sport` to `dport`; its JSON.
fn udp_send(lab: &Lab, bin: &str, (sport, dport): (u16, u16), count: u64) -> Result<Value, String> {
    let to = format!("{}:{dport}", plan::IPERF_ADDR);
    let (sport, n) = (sport.to_string(), count.to_string());
    let out = host_exec(
        lab,
        &[
            bin,
            "send",
            "--to",
            &to,
            "--sport",
            &sport,
            "--count",
            &n,
            "--timeout-ms",
            "2000",
        ],
        Duration::from_secs(30),
    )?;
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| format!("udp_burst send: {e}"))?;
    let sent = v.get("sent").and_then(Value::as_u64).unwrap_or(0);
    if sent != count {
        return Err(format!("udp_burst send: {sent} of {count} sent ({v})"));
    }
    Ok(v)
}

/// 60-byte UDP queued-burst drain, in Mpps. One generator cannot saturate a gateway, so the
/// burst is queued first and released at once:
/// 1. [`DRAIN_WARMUP`] datagrams of the flow go through the open link (the flow is created in
///    every gateway; natfw's first packets go through its engine, which decides the flow and
///    offloads it to the kernel fast path, so the burst measures a decided, offloaded flow);
/// 2. a tbf qdisc with a rate of 8 bit/s on the test host's `eth0` (one tx queue) holds the
///    [`DRAIN_PACKETS`] datagrams of the same flow (same 5-tuple);
/// 3. the tbf's rate is raised to 100 Gbit/s and one more datagram kicks the queue: the kernel
///    dequeues the whole backlog at once, on one CPU;
/// 4. the sink in the internet namespace (a bound, never-read socket: no ICMP errors) times the
///    gateway's internet-side veth peer's `rx_packets` from its first change until it has not
///    moved for 300 ms. Mpps = packets counted / that time (drops lower the count, not the
///    time).
///
/// `net.core.netdev_max_backlog` is raised for the measurement and restored after it.
///
/// `udp_drain_engine` is the same with the flows of [`ENGINE_DRAIN_SPORTS`] to
/// [`ENGINE_DRAIN_PORT`], whose packets natfw's engine handles one by one.
fn udp_drain(lab: &Lab, dport: u16, sports: &[u16]) -> Result<(f64, Value), String> {
    let bin = sibling_bin("udp_burst")?;
    let h = lab.plan.host(HOST).ok_or("no test host")?;
    let g = &lab.plan.gateways[h.gateway];
    let server_if = lab
        .plan
        .links
        .iter()
        .find(|l| l.a_ns == g.ns && l.a_if == "outside0")
        .map(|l| l.b_if.clone())
        .ok_or("no outside link of the test gateway")?;
    let counter = format!("/sys/class/net/{server_if}/statistics/rx_packets");
    let ns = h.ns.clone();
    let t = Duration::from_secs(10);
    let _ = ns_run(lab, &ns, &["tc", "qdisc", "del", "dev", "eth0", "root"], t);
    for sp in sports {
        udp_send(lab, &bin, (*sp, dport), DRAIN_WARMUP)?;
    }
    // Time for the engine to decide the flow and install its fast-path entry.
    std::thread::sleep(Duration::from_millis(300));
    let mut sink = Sink::start(lab, &bin, &counter)?;
    let _backlog = BacklogGuard::raise()?;
    let r = (|| {
        ns_run(
            lab,
            &ns,
            &[
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "handle",
                "1:",
                "tbf",
                "rate",
                "8bit",
                "burst",
                "100",
                "limit",
                "100000000",
            ],
            t,
        )?;
        let mut sent = Vec::new();
        let each = DRAIN_PACKETS / sports.len().max(1) as u64;
        for sp in sports {
            sent.push(udp_send(lab, &bin, (*sp, dport), each)?);
        }
        std::thread::sleep(Duration::from_millis(200));
        let q = ns_run(lab, &ns, &["tc", "-s", "qdisc", "show", "dev", "eth0"], t)?;
        // "backlog 24000000b 400000p requeues 0"
        let queued = q
            .split_whitespace()
            .skip_while(|w| *w != "backlog")
            .nth(2)
            .and_then(|p| p.strip_suffix('p'))
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        // The sink watches from now: the change below or the kick starts the drain.
        sink.go()?;
        std::thread::sleep(Duration::from_millis(100));
        ns_run(
            lab,
            &ns,
            &[
                "tc",
                "qdisc",
                "change",
                "dev",
                "eth0",
                "root",
                "handle",
                "1:",
                "tbf",
                "rate",
                "100gbit",
                "burst",
                "10mb",
                "limit",
                "100000000",
            ],
            t,
        )?;
        udp_send(lab, &bin, (sports[0], dport), 1)?;
        let v = sink.result(Duration::from_secs(45))?;
        Ok::<_, String>((sent, queued, v))
    })();
    let _ = ns_run(lab, &ns, &["tc", "qdisc", "del", "dev", "eth0", "root"], t);
    let (sent, queued, v) = r?;
    let delta = v.get("delta").and_then(Value::as_u64).unwrap_or(0);
    let pps = v.get("pps").and_then(Value::as_f64).unwrap_or(0.0);
    if queued < DRAIN_PACKETS / 2 {
        return Err(format!(
            "only {queued} of {DRAIN_PACKETS} datagrams were held in the qdisc"
        ));
    }
    if delta < queued / 10 || pps <= 0.0 {
        return Err(format!(
            "{delta} of {queued} queued datagrams arrived ({v})"
        ));
    }
    let detail = json!({
        "queued": queued,
        "delivered": delta,
        "dur_s": v.get("dur_s"),
        "send_seconds": sent.iter().map(|v| v.get("seconds")).collect::<Vec<_>>(),
    });
    Ok((pps / 1e6, detail))
}

/// One round of every metric with the gateway in `mode`; failures are reported and skipped.
fn measure(
    lab: &mut Lab,
    mode: Mode,
    a: &Args,
    s: &mut Samples,
    errors: &mut Vec<String>,
    details: &mut Vec<Value>,
) {
    let name = mode_name(mode);
    let gw_mode = match mode {
        Mode::Nftables | Mode::TcBpf => GatewayMode::Kernel,
        Mode::Natfw | Mode::Natfw2 => GatewayMode::Natfw,
    };
    if let Err(e) = lab.set_gateway_mode(gw_mode) {
        errors.push(format!("{name}: {e}"));
        return;
    }
    if mode == Mode::TcBpf {
        if let Err(e) = attach_tc_bpf(lab) {
            errors.push(format!("{name}: {e}"));
            detach_tc_bpf(lab);
            return;
        }
    }
    if matches!(mode, Mode::Natfw | Mode::Natfw2) {
        let gi = lab.plan.host(HOST).map_or(0, |h| h.gateway);
        let workers = if mode == Mode::Natfw2 { 2 } else { 1 };
        // natfw as measured: split mode with the kernel fast path (the default), said
        // explicitly; `--classic` measures classic mode (XDP on the interfaces).
        let fast_path = if a.classic { "false" } else { "true" };
        let text = lab
            .plan
            .gateways
            .get(gi)
            .and_then(natfw_lab::gateway_config_text)
            .map(|t| {
                t.replacen(
                    "gateway:\n",
                    &format!("gateway:\n  fast_path: {fast_path}\n  workers: {workers}\n"),
                    1,
                )
            });
        let started = match text {
            Some(t) => lab.start_natfw_with(gi, &t),
            None => lab.start_natfw(gi),
        };
        if let Err(e) = started {
            errors.push(format!("{name}: {e}"));
            return;
        }
    }
    // Warm up neighbour caches and the gateway (first packets may be spent resolving).
    let _ = lab.host_exec(
        HOST,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "203.0.113.5"],
        Duration::from_secs(5),
    );
    let mut note = |metric: &str, r: Result<f64, String>, s: &mut Samples| match r {
        Ok(v) => {
            if let Some((k, _, _)) = METRICS.iter().find(|m| m.0 == metric) {
                s.entry(k).or_default().push(v);
            }
        }
        Err(e) => errors.push(format!("{name} {metric}: {e}")),
    };
    let want = |m: &str| a.only.is_empty() || a.only.iter().any(|o| o == m);
    if want("tcp_1_stream") {
        note("tcp_1_stream", iperf(lab, 1, a.seconds), s);
    }
    if want("tcp_8_streams") {
        note("tcp_8_streams", iperf(lab, 8, a.seconds), s);
    }
    if want("http_conn_rate") {
        note("http_conn_rate", http_rate(lab, a.seconds), s);
    }
    if want("https_conn_rate") || want("https_cpu_per_conn") {
        match https_rate(lab, a.seconds) {
            Ok((rate, cpu)) => {
                note("https_conn_rate", Ok(rate), s);
                note("https_cpu_per_conn", Ok(cpu), s);
            }
            Err(e) => note("https_conn_rate", Err(e), s),
        }
    }
    if want("https_download") {
        note("https_download", https_download(lab), s);
    }
    if want("udp_rtt_p50") || want("udp_rtt_p99") {
        match udp_rtt(lab) {
            Ok((p50, p99)) => {
                note("udp_rtt_p50", Ok(p50), s);
                note("udp_rtt_p99", Ok(p99), s);
            }
            Err(e) => note("udp_rtt", Err(e), s),
        }
    }
    for (metric, dport, sports) in [
        ("udp_drain_60b", DRAIN_PORT, &[DRAIN_SPORT][..]),
        (
            "udp_drain_engine",
            ENGINE_DRAIN_PORT,
            &ENGINE_DRAIN_SPORTS[..],
        ),
    ] {
        if !want(metric) {
            continue;
        }
        match udp_drain(lab, dport, sports) {
            Ok((mpps, d)) => {
                note(metric, Ok(mpps), s);
                details.push(json!({"mode": name, "metric": metric, "detail": d}));
            }
            Err(e) => note(metric, Err(e), s),
        }
    }
    if mode == Mode::TcBpf {
        detach_tc_bpf(lab);
    }
    for (g, st) in lab.stop_natfw() {
        if !st.is_some_and(|s| s.success()) {
            errors.push(format!("{name}: natfw on {g} did not exit cleanly: {st:?}"));
        }
        // The gateway's last I/O counters (drops, ring-full events) explain a low number.
        let log = std::fs::read_to_string(lab.dir.join(format!("natfw-{g}.log")));
        let log = log.unwrap_or_default();
        if let Some(io) = log.lines().rfind(|l| l.contains(" io: ")) {
            eprintln!("lab_harness: {g}: {}", io.trim());
        }
    }
}

/// `/proc/loadavg`'s three averages (the machine is shared: the load explains a spread).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Nftables => "nftables",
        Mode::TcBpf => "tc-bpf",
        Mode::Natfw => "natfw",
        Mode::Natfw2 => "natfw-2w",
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lab_harness: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("lab_harness: {why}");
        return ExitCode::from(2);
    }
    if !a.natfw.is_file() {
        eprintln!(
            "lab_harness: natfw binary {:?} not found (--natfw PATH)",
            a.natfw
        );
        return ExitCode::from(2);
    }
    let mut o = Options::new(a.natfw.clone());
    o.tx_csum_off = a.tx_csum_off;
    let mut lab = match Lab::up(plan(Scenario::ProdTest, TAG), o) {
        Ok(l) => LabGuard(l),
        Err(e) => {
            eprintln!("lab_harness: lab up: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A rate run opens thousands of short connections: let the client reuse TIME_WAIT ports.
    let host_ns = lab
        .plan
        .host(HOST)
        .map(|h| h.ns.clone())
        .unwrap_or_default();
    let _ = lab.exec(
        &host_ns,
        &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"],
        Duration::from_secs(5),
    );

    let modes = MODES;
    let mut samples: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut details = Vec::new();
    let load_start = loadavg();
    for r in 0..a.repeats {
        // ABBA: alternate which gateway goes first so drifts (steal time, caches) even out.
        let order: Vec<Mode> = if r % 2 == 0 {
            modes.to_vec()
        } else {
            modes.iter().rev().copied().collect()
        };
        for m in order {
            eprintln!(
                "lab_harness: repeat {}/{} {}",
                r + 1,
                a.repeats,
                mode_name(m)
            );
            let s = samples.entry(mode_name(m)).or_default();
            measure(&mut lab, m, &a, s, &mut errors, &mut details);
        }
    }
    lab.0.down();
    let load_end = loadavg();

    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.2}"));
    println!(
        "\nlab_harness: scenario 1 test host -> gateway -> internet; {} repeats (ABBA), medians; \
         iperf3 {} s; HTTP 4 threads; HTTPS 8 threads (SNI); HTTPS download {} MiB; UDP 3000 x 64 B \
         round trips; UDP drain {} x 60 B; tx csum offload {}",
        a.repeats,
        a.seconds,
        DOWNLOAD_BYTES >> 20,
        DRAIN_PACKETS,
        if a.tx_csum_off { "off" } else { "on" }
    );
    println!(
        "{:<19} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>9}",
        "metric",
        "unit",
        "nftables",
        "tc-bpf",
        "natfw",
        "natfw-2w",
        "natfw/nft",
        "tcbpf/nft",
        "natfw/tcbpf",
        "2w/1w"
    );
    let mut rows = Vec::new();
    for (metric, unit, higher_better) in METRICS {
        let get = |m: &str| {
            samples
                .get(m)
                .and_then(|s| s.get(metric))
                .cloned()
                .unwrap_or_default()
        };
        let (k, t, n, n2) = (
            get("nftables"),
            get("tc-bpf"),
            get("natfw"),
            get("natfw-2w"),
        );
        let (km, tm, nm, n2m) = (median(&k), median(&t), median(&n), median(&n2));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (r_nk, r_tk, r_nt) = (ratio(nm, km), ratio(tm, km), ratio(nm, tm));
        let r_21 = ratio(n2m, nm);
        println!(
            "{metric:<19} {unit:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>9}",
            fmt(km),
            fmt(tm),
            fmt(nm),
            fmt(n2m),
            fmt(r_nk),
            fmt(r_tk),
            fmt(r_nt),
            fmt(r_21)
        );
        rows.push(json!({
            "metric": metric, "unit": unit, "higher_is_better": higher_better,
            "nftables": {"median": km, "samples": k},
            "tc_bpf": {"median": tm, "samples": t},
            "natfw": {"median": nm, "samples": n},
            "natfw_2_workers": {"median": n2m, "samples": n2},
            "ratio_natfw_2_workers_over_1": r_21,
            "ratio_natfw_over_nftables": r_nk,
            "ratio_tc_bpf_over_nftables": r_tk,
            "ratio_natfw_over_tc_bpf": r_nt,
        }));
    }
    println!("load average (1/5/15 min): {load_start} at start, {load_end} at end");
    for e in &errors {
        println!("error: {e}");
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "harness": "lab_harness",
            "topology": "lab scenario 1 (test host -> test gateway -> internet namespace)",
            "repeats": a.repeats,
            "iperf_seconds": a.seconds,
            "tx_csum_off": a.tx_csum_off,
            "metrics": rows,
            "details": details,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "errors": errors,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("lab_harness: writing {path:?}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
