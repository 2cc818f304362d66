//! The lab topology with the kernel baseline on the gateways (forwarding + nftables SNAT and the
//! L3/L4 ruleset): proves namespaces, routes, servers and clients work independently of natfw.
//!
//! Root only (prints `SKIP` otherwise). Each test uses its own namespace tag (`natfw-k<N>-*`),
//! so they may run in parallel; a guard tears the lab down even when a test panics.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use natfw_lab::demo::{self, Kind, CHECKS};
use natfw_lab::{plan, GatewayMode, Lab, LabGuard, Options, Scenario};

fn up(scenario: Scenario, tag: &str) -> Option<LabGuard> {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab test {tag}: {why}");
        return None;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Kernel;
    Some(LabGuard(Lab::up(plan(scenario, tag), o).expect("lab up")))
}

fn check(kind: Kind) -> demo::Check {
    demo::Check {
        label: "ad hoc",
        kind,
    }
}

fn run(lab: &Lab, host: &str, kind: Kind) -> demo::Observed {
    let h = lab.plan.host(host).expect("host");
    demo::run_check(lab, h, &check(kind)).expect("check ran")
}

/// Source addresses nginx logged for requests with this Host.
fn seen_from(lab: &Lab, name: &str) -> Vec<String> {
    lab.access_log()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(name))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn https_and_http_work_and_the_server_sees_each_vpcs_eip() {
    let Some(lab) = up(Scenario::ProdTest, "k1") else {
        return;
    };
    for (host, eip) in [("prod", "198.51.100.11"), ("test", "198.51.100.12")] {
        let o = run(&lab, host, Kind::Https("updates.vendor.test"));
        assert!(o.allowed, "{host}: {o:?}");
        assert_eq!(o.server_saw, vec![eip.to_string()], "{host}");
        let o = run(&lab, host, Kind::Http("api.vendor.test"));
        assert!(o.allowed, "{host}: {o:?}");
        assert_eq!(o.server_saw, vec![eip.to_string()], "{host}");
        let o = run(&lab, host, Kind::Tls("api.vendor.test"));
        assert!(o.allowed, "{host}: {o:?}");
    }
    // No private address ever reaches the internet side.
    assert!(!lab.access_log().contains("10."), "{}", lab.access_log());
}

#[test]
fn blocked_server_gets_a_reset_and_receives_nothing() {
    let Some(lab) = up(Scenario::ProdTest, "k2") else {
        return;
    };
    let cap = lab
        .capture(lab.plan.inet_ns(), "to-prod", "tcp")
        .expect("capture");
    let o = run(&lab, "prod", Kind::Https(plan::BLOCKED_NAME));
    // Control: an allowed request in the same capture window is seen.
    let ctl = run(&lab, "prod", Kind::Http("updates.vendor.test"));
    let pkts = cap.finish().expect("capture read");
    assert!(!o.allowed, "{o:?}");
    // nftables rejects the SYN with a RST: curl reports a refused connection at once.
    assert!(o.detail.contains("curl exit 7"), "{o:?}");
    assert!(ctl.allowed, "{ctl:?}");
    assert!(
        pkts.iter().any(|l| l.contains("> 203.0.113.10.80")),
        "{pkts:?}"
    );
    let to_blocked: Vec<&String> = pkts.iter().filter(|l| l.contains("203.0.113.13")).collect();
    assert!(
        to_blocked.is_empty(),
        "packets reached the blocked server: {to_blocked:?}"
    );
    assert!(seen_from(&lab, plan::BLOCKED_NAME).is_empty());
}

#[test]
fn dns_ping_ssh_and_udp_echo_go_through_snat() {
    let Some(lab) = up(Scenario::ProdTest, "k3") else {
        return;
    };
    let cap = lab
        .capture(
            lab.plan.inet_ns(),
            "to-prod",
            "udp or icmp or tcp port 2222",
        )
        .expect("capture");
    for kind in [
        Kind::Dns("pay.partner.test"),
        Kind::Ping("api.vendor.test"),
        Kind::Ssh,
        Kind::UdpEcho,
    ] {
        let o = run(&lab, "prod", kind);
        assert!(o.allowed, "{kind:?}: {o:?}");
    }
    let pkts = cap.finish().expect("capture read");
    let outbound: Vec<&String> = pkts
        .iter()
        .filter(|l| l.contains(" > 203.0.113."))
        .collect();
    assert!(outbound.len() >= 4, "{pkts:?}");
    for l in outbound {
        assert!(l.contains("IP 198.51.100.11"), "not from the EIP: {l}");
    }
}

#[test]
fn unsolicited_traffic_to_an_eip_is_dropped() {
    let Some(lab) = up(Scenario::ProdTest, "k4") else {
        return;
    };
    let host = lab.plan.host("prod").expect("host").ns.clone();
    let cap = lab.capture(&host, "eth0", "not arp").expect("capture");
    let inet = lab.plan.inet_ns().to_owned();
    let t = Duration::from_secs(10);
    // TCP to the EIP: dropped, so the connect times out (exit 28) rather than being refused.
    let o = lab
        .exec(
            &inet,
            &[
                "curl",
                "-sS",
                "--connect-timeout",
                "2",
                "http://198.51.100.11:8080/",
            ],
            t,
        )
        .expect("curl");
    assert_eq!(
        o.status.code(),
        Some(28),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = lab
        .exec(
            &inet,
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.11"],
            t,
        )
        .expect("ping");
    assert!(!o.status.success(), "the EIP answered an unsolicited ping");
    // Control: solicited traffic in the same window is seen on the host.
    assert!(run(&lab, "prod", Kind::Ping("updates.vendor.test")).allowed);
    let pkts = cap.finish().expect("capture read");
    assert!(
        pkts.iter().any(|l| l.contains("ICMP echo reply")),
        "{pkts:?}"
    );
    let unsolicited: Vec<&String> = pkts
        .iter()
        .filter(|l| {
            l.contains("8080") || l.contains("203.0.113.254") || l.contains("198.51.100.254")
        })
        .collect();
    assert!(unsolicited.is_empty(), "{unsolicited:?}");
}

#[test]
fn shared_dmz_gateway_translates_each_vpc_to_its_eip() {
    let Some(lab) = up(Scenario::SharedDmz, "k5") else {
        return;
    };
    for (host, eip) in [
        ("vpca", "198.51.100.21"),
        ("vpcb", "198.51.100.22"),
        ("vpcc", "198.51.100.21"),
    ] {
        let o = run(&lab, host, Kind::Https("pay.partner.test"));
        assert!(o.allowed, "{host}: {o:?}");
        assert_eq!(o.server_saw, vec![eip.to_string()], "{host}");
        let h = lab.plan.host(host).expect("host");
        assert_eq!(
            lab.plan.expected_eip(h),
            Some(eip.parse::<Ipv4Addr>().expect("ip"))
        );
    }
}

#[test]
fn vswitches_use_their_own_eip_and_the_bypassed_host_is_not_filtered() {
    let Some(lab) = up(Scenario::VSwitches, "k6") else {
        return;
    };
    for (host, eip) in [
        ("vsw1", "198.51.100.31"),
        ("vsw2", "198.51.100.32"),
        ("vsw3", "198.51.100.33"),
        ("mgmt", "198.51.100.130"),
    ] {
        let o = run(&lab, host, Kind::Http("updates.vendor.test"));
        assert!(o.allowed, "{host}: {o:?}");
        assert_eq!(o.server_saw, vec![eip.to_string()], "{host}");
    }
    // The blocked server: refused for vSwitch hosts, reachable for the bypassed mgmt host.
    assert!(!run(&lab, "vsw1", Kind::Https(plan::BLOCKED_NAME)).allowed);
    let o = run(&lab, "mgmt", Kind::Https(plan::BLOCKED_NAME));
    assert!(o.allowed, "{o:?}");
    assert_eq!(o.server_saw, vec!["198.51.100.130".to_string()]);
}

#[test]
fn every_check_matches_the_kernel_expectations_in_every_scenario() {
    for (s, tag) in [
        (Scenario::ProdTest, "k7"),
        (Scenario::SharedDmz, "k8"),
        (Scenario::VSwitches, "k9"),
    ] {
        let Some(lab) = up(s, tag) else { return };
        for h in &lab.plan.hosts {
            for c in CHECKS {
                let o = demo::run_check(&lab, h, &c).expect("check ran");
                let want = demo::expected_allowed(s, GatewayMode::Kernel, h, &c);
                assert!(
                    demo::matches_expectation(want, &c, &o),
                    "{s} {} {}: expected allowed={want}, got {o:?}",
                    h.name,
                    c.label
                );
            }
        }
    }
}

#[test]
fn up_is_idempotent_and_down_removes_everything() {
    let Some(mut lab) = up(Scenario::VSwitches, "k10") else {
        return;
    };
    let nss = natfw_lab::namespaces_with_prefix("natfw-k10-");
    assert_eq!(nss.len(), lab.plan.namespaces.len());
    let pids_before = natfw_lab::ns_pids(lab.plan.inet_ns());
    // A second `up` finds the instance complete and reuses it: same servers, same namespaces.
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Kernel;
    let again = Lab::up(plan(Scenario::VSwitches, "k10"), o).expect("second up");
    assert_eq!(natfw_lab::ns_pids(again.plan.inet_ns()), pids_before);
    assert!(run(&again, "vsw3", Kind::Http("api.vendor.test")).allowed);
    assert!(natfw_lab::status().contains("natfw-k10-inet"));
    lab.down();
    assert!(natfw_lab::namespaces_with_prefix("natfw-k10-").is_empty());
    assert!(!lab.dir.exists());
    for p in pids_before {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists() || is_zombie(p),
            "pid {p} left"
        );
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn up_after_a_crash_removes_what_was_left() {
    if natfw_lab::prerequisites().is_err() {
        eprintln!("SKIP lab test k11: not root or programs missing");
        return;
    }
    // What a killed run leaves: a namespace of the tag with a process in it, no ready marker.
    let junk = "natfw-k11-gwold";
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", junk])
        .status();
    let st = std::process::Command::new("ip")
        .args(["netns", "add", junk])
        .status()
        .expect("ip");
    assert!(st.success());
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", junk, "sleep", "60"])
        .spawn()
        .expect("sleep");
    let lab = up(Scenario::ProdTest, "k11");
    let st = sleeper.wait().expect("wait");
    let lab = lab.expect("prerequisites were checked");
    assert!(!natfw_lab::namespaces_with_prefix("natfw-k11-").contains(&junk.to_string()));
    // The leftover process was ended (by pid) with its namespace.
    assert!(!st.success(), "sleep ran to completion: {st}");
    assert!(run(&lab, "prod", Kind::Http("api.vendor.test")).allowed);
}
