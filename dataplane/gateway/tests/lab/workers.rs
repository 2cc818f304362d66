//! Two packet workers (`gateway.workers: 2`) in the lab: connections from even and odd client
//! ports are decided by different workers (each worker's engine and the steering program's
//! per-worker counters move) and every one has exactly one record; fragmented datagrams both
//! ways and an ICMP error, which the steering program gives to every worker, are forwarded once
//! by their owner and ignored (counted) by the other.
//!
//! Root only (prints `SKIP` otherwise); own namespace tag (`natfw-wk1-*`), a guard tears the
//! lab down on panic.

use std::time::Duration;

use serde_json::Value;

use natfw_lab::demo::flow_records;
use natfw_lab::plan;

const METRICS: &str = "127.0.0.1:9112";
const HOST: &str = "test";
const T: Duration = Duration::from_secs(30);

use crate::support::metric_sum as metric;

/// `ip route get <to>` in `ns`: the next hop (none when on link) and device.
fn route_to(lab: &natfw_lab::Lab, ns: &str, to: &str) -> (Option<String>, String) {
    let o = lab
        .exec(ns, &["ip", "-o", "route", "get", to], T)
        .expect("ip route get");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |k: &str| {
        words
            .iter()
            .position(|w| *w == k)
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    };
    (
        after("via"),
        after("dev").unwrap_or_else(|| panic!("no device to {to} in {ns}: {text}")),
    )
}

/// Packets to `to` leave `ns` in fragments of at most 576 bytes (route MTU, locked: no DF).
fn fragment_towards(lab: &natfw_lab::Lab, ns: &str, to: &str) {
    let (via, dev) = route_to(lab, ns, to);
    let dst = format!("{to}/32");
    let mut args = vec!["ip", "route", "replace", &dst];
    if let Some(v) = &via {
        args.extend(["via", v]);
    }
    args.extend(["dev", &dev, "mtu", "lock", "576"]);
    let o = lab.exec(ns, &args, T).expect("ip route replace");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn two_workers_split_flows_by_port_and_keep_fragments_and_icmp_errors_with_their_owner() {
    let Some(crate::support::FastPathLab {
        mut lab,
        gi,
        g,
        cfg_text,
    }) = crate::support::fast_path_lab("workers", "wk1", HOST, METRICS)
    else {
        return;
    };
    let cfg_text = cfg_text.replacen("gateway:\n", "gateway:\n  workers: 2\n", 1);
    lab.start_natfw_with(gi, &cfg_text)
        .unwrap_or_else(|e| panic!("natfw run did not start: {e}"));
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let log =
        std::fs::read_to_string(lab.dir.join(format!("natfw-{}.log", g.name))).unwrap_or_default();
    assert!(log.contains("2 packet workers"), "{log}");
    assert!(log.contains("nfw-in1-k -> nfw-in1-x"), "{log}");
    let scrape = |lab: &natfw_lab::Lab| {
        let o = lab
            .exec(
                &g.ns,
                &["curl", "-sS", &format!("http://{METRICS}/metrics")],
                T,
            )
            .expect("curl metrics");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    // Connections from even and odd source ports: one worker each.
    let web = plan::WEB_NAMES[0];
    let resolve = format!("{}:80:{}", web.name, web.addr);
    let ports: Vec<u16> = (41_000..41_008).collect();
    for p in &ports {
        let o = lab
            .host_exec(
                HOST,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    "--local-port",
                    &p.to_string(),
                    "--resolve",
                    &resolve,
                    &format!("http://{}/", web.name),
                ],
                T,
            )
            .expect("curl");
        assert!(
            o.status.success(),
            "curl from port {p}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Counters are published every second: wait (bounded) for both workers' to show.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&lab);
        let both = ["0", "1"].iter().all(|w| {
            metric(
                &m,
                "natfw_worker_frames_total",
                &[&format!("worker=\"{w}\"")],
            ) > 0
        });
        if both || std::time::Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for w in ["0", "1"] {
        let label = format!("worker=\"{w}\"");
        assert!(
            metric(&m, "natfw_worker_frames_total", &[&label]) > 0,
            "worker {w} processed nothing:\n{m}"
        );
        assert!(
            metric(&m, "natfw_xdp_steered_worker_packets_total", &[&label]) > 0,
            "nothing steered to worker {w}:\n{m}"
        );
    }

    // Fragments both ways: the host's datagrams to the echo server and the server's answers
    // to the EIP leave in 576-byte fragments.
    let h = lab.plan.host(HOST).expect("host").clone();
    let echo = plan::ECHO_ADDR.to_string();
    let eip = g.eip_for(h.addr).expect("the host's EIP").to_string();
    fragment_towards(&lab, &h.ns, &echo);
    fragment_towards(&lab, lab.plan.inet_ns(), &eip);
    let bin = lab.opts.natfw_bin.display().to_string();
    let o = lab
        .host_exec(
            HOST,
            &[
                &bin,
                "lab",
                "udp-rtt",
                "--to",
                &format!("{echo}:{}", plan::ECHO_PORT),
                "--count",
                "5",
                "--size",
                "1200",
                "--timeout-ms",
                "2000",
            ],
            T,
        )
        .expect("udp-rtt");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(
        v.get("received").and_then(Value::as_u64),
        Some(5),
        "fragmented UDP echo: {v} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = lab
        .host_exec(
            HOST,
            &[
                "ping", "-c", "3", "-s", "1000", "-M", "dont", "-W", "2", &echo,
            ],
            T,
        )
        .expect("ping");
    assert!(
        o.status.success(),
        "fragmented ping: {}",
        String::from_utf8_lossy(&o.stdout)
    );

    // An ICMP error: a datagram to a closed port; the server's port unreachable comes back
    // (given to both workers), the client sees the refusal.
    let probe = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\n\
         s.bind(('0.0.0.0',41001))\ns.connect(('{echo}',9))\ns.send(b'x')\n\
         try:\n    s.recv(100)\n    print('answer')\nexcept ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')\n"
    );
    let o = lab
        .host_exec(HOST, &["python3", "-c", &probe], T)
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "refused",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(&lab);
    assert!(
        metric(&m, "natfw_xdp_steered_broadcast_packets_total", &[]) > 0,
        "nothing was given to every worker:\n{m}"
    );
    assert!(
        metric(&m, "natfw_worker_other_packets_total", &[]) > 0,
        "no worker ignored another's copy:\n{m}"
    );
    assert_eq!(
        metric(&m, "natfw_dropped_packets_total", &["reason=\"no_flow\""]),
        0,
        "a copy was taken for a lost flow:\n{m}"
    );

    for (gname, st) in lab.stop_natfw() {
        assert!(
            st.is_some_and(|s| s.success()),
            "natfw on {gname} did not exit cleanly: {st:?}"
        );
    }
    let recs = flow_records(&lab);
    let ends = |sport: u16, proto: &str| {
        recs.iter()
            .filter(|r| {
                r.get("log_type").and_then(Value::as_str) == Some("flow")
                    && r.get("src_port").and_then(Value::as_u64) == Some(u64::from(sport))
                    && r.get("ip_protocol").and_then(Value::as_str) == Some(proto)
            })
            .count()
    };
    for p in &ports {
        assert_eq!(
            ends(*p, "tcp"),
            1,
            "records of the connection from port {p}"
        );
    }
    assert_eq!(ends(41_001, "udp"), 1, "the refused datagram's flow");
}
