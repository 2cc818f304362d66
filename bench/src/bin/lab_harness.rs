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
//! latency p50/p99 (an established flow).
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
}

const MODES: [Mode; 3] = [Mode::Nftables, Mode::TcBpf, Mode::Natfw];

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
                     [--natfw PATH] [--tx-csum-off] [--only METRIC,...]"
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
const METRICS: [(&str, &str, bool); 7] = [
    ("tcp_1_stream", "Gbit/s", true),
    ("tcp_8_streams", "Gbit/s", true),
    ("http_conn_rate", "req/s", true),
    ("https_conn_rate", "conn/s", true),
    ("https_cpu_per_conn", "us", false),
    ("udp_rtt_p50", "us", false),
    ("udp_rtt_p99", "us", false),
];

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

/// HTTPS connections/s and machine CPU µs per connection.
fn https_rate(lab: &Lab, seconds: u32) -> Result<(f64, f64), String> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("https_rate")))
        .filter(|p| p.is_file())
        .ok_or(
            "https_rate binary not next to lab_harness (cargo build --release -p natfw-bench)",
        )?;
    let bin = bin.display().to_string();
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

/// One round of every metric with the gateway in `mode`; failures are reported and skipped.
fn measure(lab: &mut Lab, mode: Mode, a: &Args, s: &mut Samples, errors: &mut Vec<String>) {
    let name = mode_name(mode);
    let gw_mode = match mode {
        Mode::Nftables | Mode::TcBpf => GatewayMode::Kernel,
        Mode::Natfw => GatewayMode::Natfw,
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
    if mode == Mode::Natfw {
        let gi = lab.plan.host(HOST).map_or(0, |h| h.gateway);
        // natfw as measured: with its kernel fast path (opt-in in the product's config).
        let text = lab
            .plan
            .gateways
            .get(gi)
            .and_then(natfw_lab::gateway_config_text)
            .map(|t| t.replacen("gateway:\n", "gateway:\n  fast_path: true\n", 1));
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
    if want("udp_rtt_p50") || want("udp_rtt_p99") {
        match udp_rtt(lab) {
            Ok((p50, p99)) => {
                note("udp_rtt_p50", Ok(p50), s);
                note("udp_rtt_p99", Ok(p99), s);
            }
            Err(e) => errors.push(format!("{name} udp_rtt: {e}")),
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

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Nftables => "nftables",
        Mode::TcBpf => "tc-bpf",
        Mode::Natfw => "natfw",
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
            measure(&mut lab, m, &a, s, &mut errors);
        }
    }
    lab.0.down();

    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.2}"));
    println!(
        "\nlab_harness: scenario 1 test host -> gateway -> internet; {} repeats (ABBA), medians; \
         iperf3 {} s; HTTP 4 threads; HTTPS 8 threads (SNI); UDP 3000 x 64 B round trips; tx csum offload {}",
        a.repeats,
        a.seconds,
        if a.tx_csum_off { "off" } else { "on" }
    );
    println!(
        "{:<19} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "metric", "unit", "nftables", "tc-bpf", "natfw", "natfw/nft", "tcbpf/nft", "natfw/tcbpf"
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
        let (k, t, n) = (get("nftables"), get("tc-bpf"), get("natfw"));
        let (km, tm, nm) = (median(&k), median(&t), median(&n));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (r_nk, r_tk, r_nt) = (ratio(nm, km), ratio(tm, km), ratio(nm, tm));
        println!(
            "{metric:<19} {unit:>7} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
            fmt(km),
            fmt(tm),
            fmt(nm),
            fmt(r_nk),
            fmt(r_tk),
            fmt(r_nt)
        );
        rows.push(json!({
            "metric": metric, "unit": unit, "higher_is_better": higher_better,
            "nftables": {"median": km, "samples": k},
            "tc_bpf": {"median": tm, "samples": t},
            "natfw": {"median": nm, "samples": n},
            "ratio_natfw_over_nftables": r_nk,
            "ratio_tc_bpf_over_nftables": r_tk,
            "ratio_natfw_over_tc_bpf": r_nt,
        }));
    }
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
