//! Lab throughput harness: the same namespace topology (lab scenario 1, test VPC host → test
//! gateway → internet servers), measured in the same run with the gateway as
//! (a) kernel forwarding + nftables SNAT and an equivalent L3/L4 ruleset, and (b) `natfw run`.
//!
//! Metrics: iperf3 TCP throughput with 1 and 8 streams, connection rate of short HTTP requests
//! (one TCP connection each, several client threads), UDP echo round-trip latency p50/p99.
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
const METRICS: [(&str, &str, bool); 5] = [
    ("tcp_1_stream", "Gbit/s", true),
    ("tcp_8_streams", "Gbit/s", true),
    ("http_conn_rate", "req/s", true),
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
fn measure(lab: &mut Lab, mode: GatewayMode, a: &Args, s: &mut Samples, errors: &mut Vec<String>) {
    let name = mode_name(mode);
    if let Err(e) = lab.set_gateway_mode(mode) {
        errors.push(format!("{name}: {e}"));
        return;
    }
    if mode == GatewayMode::Natfw {
        let gi = lab.plan.host(HOST).map_or(0, |h| h.gateway);
        if let Err(e) = lab.start_natfw(gi) {
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
    if want("udp_rtt_p50") || want("udp_rtt_p99") {
        match udp_rtt(lab) {
            Ok((p50, p99)) => {
                note("udp_rtt_p50", Ok(p50), s);
                note("udp_rtt_p99", Ok(p99), s);
            }
            Err(e) => errors.push(format!("{name} udp_rtt: {e}")),
        }
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

fn mode_name(m: GatewayMode) -> &'static str {
    match m {
        GatewayMode::Kernel => "nftables",
        GatewayMode::Natfw => "natfw",
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

    let modes = [GatewayMode::Kernel, GatewayMode::Natfw];
    let mut samples: BTreeMap<&str, Samples> = BTreeMap::new();
    let mut errors = Vec::new();
    for r in 0..a.repeats {
        // ABBA: alternate which gateway goes first so drifts (steal time, caches) even out.
        let order: Vec<GatewayMode> = if r % 2 == 0 {
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
         iperf3 {} s; HTTP 4 threads; UDP 3000 x 64 B round trips; tx csum offload {}",
        a.repeats,
        a.seconds,
        if a.tx_csum_off { "off" } else { "on" }
    );
    println!(
        "{:<16} {:>7} {:>12} {:>21} {:>12} {:>21} {:>8}",
        "metric", "unit", "nftables", "(min-max)", "natfw", "(min-max)", "ratio"
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
        let (k, n) = (get("nftables"), get("natfw"));
        let (km, nm) = (median(&k), median(&n));
        let ratio = match (km, nm) {
            (Some(k), Some(n)) if k > 0.0 => Some(n / k),
            _ => None,
        };
        let spread = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("({min:.2}-{max:.2})")
            }
        };
        println!(
            "{metric:<16} {unit:>7} {:>12} {:>21} {:>12} {:>21} {:>8}",
            fmt(km),
            spread(&k),
            fmt(nm),
            spread(&n),
            fmt(ratio)
        );
        rows.push(json!({
            "metric": metric, "unit": unit, "higher_is_better": higher_better,
            "nftables": {"median": km, "samples": k},
            "natfw": {"median": nm, "samples": n},
            "ratio_natfw_over_nftables": ratio,
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
