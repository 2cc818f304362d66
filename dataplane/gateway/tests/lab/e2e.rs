//! End to end through `natfw run` on the lab gateways (XDP + AF_XDP + the engine): real
//! clients in VPC namespaces, real servers in the internet namespace, checked from the server
//! side (nginx access log, tcpdump on the server's segment) and in the flow log.
//!
//! Root only (prints `SKIP` otherwise). If `natfw run` cannot start or forward, these tests
//! fail (they never pass vacuously); the kernel-baseline topology tests live in
//! `lab_topology.rs`. Each test
//! has its own namespace tag (`natfw-n<N>-*`) and a guard that tears the lab down on panic;
//! parallel runs work, `--test-threads=1` is gentler on a 2-core machine.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use natfw_lab::demo::{self, flow_records, records_for, Kind, CHECKS};
use natfw_lab::{plan, GatewayMode, Lab, LabGuard, Options, Scenario};

fn up(scenario: Scenario, tag: &str) -> Option<LabGuard> {
    up_with(scenario, tag, None)
}

fn up_with(scenario: Scenario, tag: &str, workers: Option<u16>) -> Option<LabGuard> {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab e2e test {tag}: {why}");
        return None;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    o.workers = workers;
    let mut lab = LabGuard(Lab::up(plan(scenario, tag), o).expect("lab up"));
    for gi in 0..lab.plan.gateways.len() {
        if let Err(e) = lab.start_natfw(gi) {
            panic!(
                "`natfw run` did not start on gateway {}: {e}",
                lab.plan.gateways[gi].name
            );
        }
    }
    Some(lab)
}

fn run(lab: &Lab, host: &str, kind: Kind) -> demo::Observed {
    let h = lab.plan.host(host).expect("host");
    demo::run_check(
        lab,
        h,
        &demo::Check {
            label: "ad hoc",
            kind,
        },
    )
    .expect("check ran")
}

/// Stop natfw (SIGTERM: it must exit cleanly and flush) and return the flow-log records.
fn stop_and_read_log(lab: &mut Lab) -> Vec<Value> {
    for (g, st) in lab.stop_natfw() {
        assert!(
            st.is_some_and(|s| s.success()),
            "natfw on {g} did not exit cleanly on SIGTERM: {st:?}"
        );
    }
    flow_records(lab)
}

fn field<'a>(r: &'a Value, k: &str) -> &'a Value {
    r.get(k).unwrap_or(&Value::Null)
}

fn one_record<'a>(recs: &'a [Value], src: &str, dst: &str, port: Option<u16>) -> &'a Value {
    let rs = records_for(
        recs,
        src.parse().expect("ip"),
        dst.parse().expect("ip"),
        port,
    );
    assert!(
        !rs.is_empty(),
        "no flow-log record {src} -> {dst}:{port:?} in {recs:#?}"
    );
    rs[0]
}

#[test]
fn allowed_domain_over_https_and_http_reaches_the_server_from_the_eip() {
    let Some(mut lab) = up(Scenario::ProdTest, "n1") else {
        return;
    };
    let o = run(&lab, "prod", Kind::Https("updates.vendor.test"));
    assert!(o.allowed, "{o:?}");
    assert_eq!(o.server_saw, vec!["198.51.100.11".to_string()]);
    let o = run(&lab, "prod", Kind::Http("api.vendor.test"));
    assert!(o.allowed, "{o:?}");
    assert_eq!(o.server_saw, vec!["198.51.100.11".to_string()]);
    let recs = stop_and_read_log(&mut lab);
    let r = one_record(&recs, "10.10.1.10", "203.0.113.10", Some(443));
    assert_eq!(field(r, "action"), "accept");
    assert_eq!(field(r, "domain"), "updates.vendor.test");
    assert_eq!(field(r, "domain_source"), "sni");
    assert_eq!(field(r, "snat_ip"), "198.51.100.11");
    assert_eq!(field(r, "acl_rule_id"), "allow-vendor");
    let r = one_record(&recs, "10.10.1.10", "203.0.113.11", Some(80));
    assert_eq!(field(r, "action"), "accept");
    assert_eq!(field(r, "domain"), "api.vendor.test");
    assert_eq!(field(r, "domain_source"), "host");
}

#[test]
fn denied_domain_gets_a_reset_and_no_payload_byte_reaches_the_server() {
    let Some(mut lab) = up(Scenario::ProdTest, "n2") else {
        return;
    };
    let cap = lab
        .capture(lab.plan.inet_ns(), "to-prod", "tcp")
        .expect("capture");
    let https = run(&lab, "prod", Kind::Https(plan::BLOCKED_NAME));
    let http = run(&lab, "prod", Kind::Http(plan::BLOCKED_NAME));
    let ctl = run(&lab, "prod", Kind::Https("updates.vendor.test"));
    let pkts = cap.finish().expect("capture read");
    for o in [&https, &http] {
        assert!(!o.allowed, "{o:?}");
        assert!(
            o.detail.to_lowercase().contains("reset"),
            "expected a RST: {o:?}"
        );
    }
    assert!(ctl.allowed, "{ctl:?}");
    // Control: the allowed flow's payload is visible in the same capture.
    assert!(
        pkts.iter()
            .any(|l| l.contains("> 203.0.113.10.443") && !l.ends_with("length 0")),
        "{pkts:?}"
    );
    let payload_to_blocked: Vec<&String> = pkts
        .iter()
        .filter(|l| l.contains("> 203.0.113.13.") && !l.ends_with("length 0"))
        .collect();
    assert!(
        payload_to_blocked.is_empty(),
        "payload reached the blocked server: {payload_to_blocked:?}"
    );
    assert!(
        !lab.access_log().contains(plan::BLOCKED_NAME),
        "{}",
        lab.access_log()
    );
    let recs = stop_and_read_log(&mut lab);
    for port in [443, 80] {
        let r = one_record(&recs, "10.10.1.10", "203.0.113.13", Some(port));
        assert_eq!(field(r, "action"), "drop");
        assert_eq!(field(r, "acl_rule_id"), "deny-blocked");
        assert_eq!(field(r, "domain"), plan::BLOCKED_NAME);
    }
}

#[test]
fn dns_and_ping_work_through_snat() {
    let Some(mut lab) = up(Scenario::ProdTest, "n3") else {
        return;
    };
    let cap = lab
        .capture(lab.plan.inet_ns(), "to-prod", "udp or icmp")
        .expect("capture");
    let dns = run(&lab, "prod", Kind::Dns("pay.partner.test"));
    let ping = run(&lab, "prod", Kind::Ping("api.vendor.test"));
    let pkts = cap.finish().expect("capture read");
    assert!(dns.allowed, "{dns:?}");
    assert!(ping.allowed, "{ping:?}");
    let out: Vec<&String> = pkts
        .iter()
        .filter(|l| l.contains(" > 203.0.113."))
        .collect();
    assert!(out.len() >= 3, "{pkts:?}");
    for l in out {
        assert!(l.contains("IP 198.51.100.11"), "not from the EIP: {l}");
    }
    let recs = stop_and_read_log(&mut lab);
    let r = one_record(&recs, "10.10.1.10", "203.0.113.53", Some(53));
    assert_eq!(field(r, "ip_protocol"), "udp");
    assert_eq!(field(r, "app_name"), "DNS");
    assert_eq!(field(r, "action"), "accept");
    let r = one_record(&recs, "10.10.1.10", "203.0.113.11", None);
    assert_eq!(field(r, "ip_protocol"), "icmp");
    assert_eq!(field(r, "snat_ip"), "198.51.100.11");
}

#[test]
fn unsolicited_traffic_to_an_eip_is_dropped() {
    let Some(lab) = up(Scenario::ProdTest, "n4") else {
        return;
    };
    let host = lab.plan.host("prod").expect("host").ns.clone();
    let cap = lab.capture(&host, "eth0", "not arp").expect("capture");
    let inet = lab.plan.inet_ns().to_owned();
    let t = Duration::from_secs(10);
    for port in ["80", "443", "2222"] {
        let url = format!("http://198.51.100.11:{port}/");
        let o = lab
            .exec(&inet, &["curl", "-sS", "--connect-timeout", "2", &url], t)
            .expect("curl");
        assert!(
            !o.status.success(),
            "connection to the EIP port {port} succeeded"
        );
    }
    let o = lab
        .exec(
            &inet,
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.11"],
            t,
        )
        .expect("ping");
    assert!(
        !o.status.success(),
        "unsolicited ping to the EIP reached a host"
    );
    assert!(run(&lab, "prod", Kind::Ping("updates.vendor.test")).allowed);
    let pkts = cap.finish().expect("capture read");
    assert!(
        pkts.iter().any(|l| l.contains("ICMP echo reply")),
        "control missing: {pkts:?}"
    );
    let leaked: Vec<&String> = pkts
        .iter()
        .filter(|l| l.contains("198.51.100.254"))
        .collect();
    assert!(
        leaked.is_empty(),
        "unsolicited traffic reached the VPC host: {leaked:?}"
    );
}

#[test]
fn bypassed_host_goes_out_uninspected_and_vswitches_use_their_own_eip() {
    let Some(mut lab) = up(Scenario::VSwitches, "n5") else {
        return;
    };
    let mgmt = run(&lab, "mgmt", Kind::Https(plan::BLOCKED_NAME));
    assert!(mgmt.allowed, "bypassed host was filtered: {mgmt:?}");
    assert_eq!(mgmt.server_saw, vec!["198.51.100.130".to_string()]);
    assert!(!run(&lab, "vsw1", Kind::Https(plan::BLOCKED_NAME)).allowed);
    for (host, eip) in [
        ("vsw1", "198.51.100.31"),
        ("vsw2", "198.51.100.32"),
        ("vsw3", "198.51.100.33"),
    ] {
        let o = run(&lab, host, Kind::Https("updates.vendor.test"));
        assert!(o.allowed, "{host}: {o:?}");
        assert_eq!(o.server_saw, vec![eip.to_string()], "{host}");
    }
    // vsw2 is restricted: the API is refused there.
    assert!(!run(&lab, "vsw2", Kind::Http("api.vendor.test")).allowed);
    let recs = stop_and_read_log(&mut lab);
    assert!(
        recs.iter().all(|r| field(r, "src_ip") != "10.30.9.10"),
        "bypassed host was logged (inspected)"
    );
    for (src, eip) in [
        ("10.30.1.10", "198.51.100.31"),
        ("10.30.2.10", "198.51.100.32"),
        ("10.30.3.10", "198.51.100.33"),
    ] {
        let r = one_record(&recs, src, "203.0.113.10", Some(443));
        assert_eq!(field(r, "snat_ip"), eip, "{src}");
    }
    let r = one_record(&recs, "10.30.2.10", "203.0.113.11", Some(80));
    assert_eq!(field(r, "action"), "drop");
    assert_eq!(field(r, "acl_rule_id"), "vsw2-deny-rest");
}

/// Every check from every host against the scenario's policy, and a flow-log record for each
/// inspected one whose action agrees.
fn policy_matrix(s: Scenario, tag: &str) {
    policy_matrix_with(s, tag, None)
}

fn policy_matrix_with(s: Scenario, tag: &str, workers: Option<u16>) {
    let Some(mut lab) = up_with(s, tag, workers) else {
        return;
    };
    if let Some(n) = workers {
        for g in &lab.plan.gateways {
            let log = std::fs::read_to_string(lab.dir.join(format!("natfw-{}.log", g.name)))
                .unwrap_or_default();
            assert!(log.contains(&format!("{n} packet workers")), "{log}");
        }
    }
    let mut results = Vec::new();
    for h in lab.plan.hosts.clone() {
        for c in CHECKS {
            let o = demo::run_check(&lab, &h, &c).expect("check ran");
            results.push((h.clone(), c, o));
        }
    }
    let recs = stop_and_read_log(&mut lab);
    let mut failures = Vec::new();
    for (h, c, o) in &results {
        let want = demo::expected_allowed(s, GatewayMode::Natfw, h, c);
        if !demo::matches_expectation(want, c, o) {
            failures.push(format!(
                "{} {}: expected allowed={want}, got {o:?}",
                h.name, c.label
            ));
        }
        if h.bypassed {
            continue;
        }
        let rs = demo::records_for_check(&recs, h.addr, c);
        let action = if want { "accept" } else { "drop" };
        if !rs.iter().any(|r| field(r, "action") == action) {
            failures.push(format!(
                "{} {}: no flow-log record with action {action}",
                h.name, c.label
            ));
        }
    }
    // The operator's search finds each host's flows by source IP, and only those.
    let logs: Vec<PathBuf> = lab.plan.gateways.iter().map(|g| lab.flow_log(g)).collect();
    for h in lab.plan.hosts.iter().filter(|h| !h.bypassed) {
        let found = natfw_logs(&logs, &["--src", &h.addr.to_string()]);
        let want = recs
            .iter()
            .filter(|r| field(r, "src_ip") == h.addr.to_string().as_str());
        if found.len() != want.count() || found.is_empty() {
            failures.push(format!(
                "natfw logs --src {}: {} records",
                h.addr,
                found.len()
            ));
        }
        if found
            .iter()
            .any(|r| field(r, "src_ip") != h.addr.to_string().as_str())
        {
            failures.push(format!("natfw logs --src {}: other sources listed", h.addr));
        }
    }
    assert!(failures.is_empty(), "{s}:\n{}", failures.join("\n"));
}

/// `natfw logs FILES... ARGS --json`, parsed.
fn natfw_logs(files: &[PathBuf], args: &[&str]) -> Vec<Value> {
    let present: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_natfw"))
        .arg("logs")
        .args(present)
        .args(args)
        .arg("--json")
        .output()
        .expect("natfw logs");
    assert!(
        o.status.success(),
        "natfw logs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn scenario_1_policy_matrix_and_flow_log() {
    policy_matrix(Scenario::ProdTest, "n7");
}

#[test]
fn scenario_2_policy_matrix_and_flow_log() {
    policy_matrix(Scenario::SharedDmz, "n8");
}

#[test]
fn scenario_3_policy_matrix_and_flow_log() {
    policy_matrix(Scenario::VSwitches, "n9");
}

/// The same matrix with two packet workers (`gateway.workers: 2`): each flow is decided by the
/// worker its port belongs to, DNS-mode facts cross between them, every verdict and record as
/// with one.
#[test]
fn scenario_2_policy_matrix_with_two_packet_workers() {
    policy_matrix_with(Scenario::SharedDmz, "w2", Some(2));
}
