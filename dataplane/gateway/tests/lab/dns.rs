//! Domain modes in a VPC whose resolver sits inside the VPC (scenario 2 with an in-VPC resolver
//! behind the transit router): its answers never cross the gateway, so `dns` and
//! `fqdn_and_dns` rules must rest on the gateway's own resolution and its forwarder. Through
//! `natfw run` (XDP + AF_XDP + the engine + the DNS thread), real clients and servers, checked
//! at the server (nginx access log, tcpdump on the server's segment) and in the flow log.
//!
//! Root only (prints `SKIP` otherwise); the lab is torn down by a guard even on failure.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use natfw_lab::demo::{flow_records, records_for};
use natfw_lab::plan::VPC_RESOLVER_ADDR;
use natfw_lab::{gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};

const API: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const UPDATES: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
const BLOCKED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 13);
/// The DMZ gateway's inside address: the forwarder listens there.
const FORWARDER: &str = "10.255.0.1";

/// The DMZ gateway's config: its `gateway` section from the lab, a policy of DNS-based rules
/// and the gateway's own DNS (the internet-side lab resolver upstream, the forwarder inside).
fn config(base: &str) -> String {
    let gateway = &base[..base.find("firewall:").expect("firewall section")];
    format!(
        "{gateway}firewall:
  enabled: true
  mode: loose
  default_action: drop
  rules:
    - name: api-by-dns
      destination: {{ domain: [api.vendor.test] }}
      domain_mode: dns
      protocol: tcp
      ports: [80]
      action: accept
    - name: partner-verified
      destination: {{ domain: [\"*.partner.test\"] }}
      domain_mode: fqdn_and_dns
      protocol: tcp
      ports: [443]
      action: accept
logging:
  flow_log: flow-dmz.jsonl
dns:
  resolvers: [203.0.113.53]
  forwarder:
    listen: \"{FORWARDER}:53\"
"
    )
}

fn field<'a>(r: &'a Value, k: &str) -> &'a Value {
    r.get(k).unwrap_or(&Value::Null)
}

fn one(recs: &[Value], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> &Value {
    let rs = records_for(recs, src, dst, Some(port));
    assert_eq!(
        rs.len(),
        1,
        "records {src} -> {dst}:{port}: {rs:#?}\nall: {recs:#?}"
    );
    rs[0]
}

/// Run a shell script in host `h`'s namespace; (exit ok, stdout, stderr).
fn sh(lab: &Lab, h: &str, script: &str) -> (bool, String, String) {
    let o = lab
        .host_exec(h, &["bash", "-c", script], Duration::from_secs(20))
        .expect("exec");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// Resolve `lookup` at `resolver` and at once fetch `https://sni/` from the address it gave.
fn resolve_and_connect(lab: &Lab, h: &str, resolver: &str, lookup: &str, sni: &str) -> bool {
    let ca = lab.ca_cert().display().to_string();
    let script = format!(
        "a=$(dig +time=2 +tries=1 +short @{resolver} {lookup} A) && [ -n \"$a\" ] || exit 7
         curl -sS --max-time 5 --cacert {ca} --resolve {sni}:443:$a https://{sni}/"
    );
    let (ok, out, _) = sh(lab, h, &script);
    ok && out == format!("{sni} ok")
}

fn http(lab: &Lab, h: &str, name: &str, addr: Ipv4Addr) -> bool {
    let (ok, out, _) = sh(
        lab,
        h,
        &format!("curl -sS --max-time 5 --resolve {name}:80:{addr} http://{name}/"),
    );
    ok && out == format!("{name} ok")
}

#[test]
fn in_vpc_resolver_dns_rules_verified_sni_and_forwarder_facts() {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab dns test: {why}");
        return;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    let p = plan(Scenario::SharedDmz, "d1")
        .with_vpc_resolver()
        .expect("scenario 2 has a transit router");
    let mut lab = LabGuard(Lab::up(p, o).expect("lab up"));
    let g = lab.plan.gateways[0].clone();
    let text = config(gateway_config_text(&g).expect("embedded config"));
    lab.start_natfw_with(0, &text).expect("natfw run");
    let (vpca, vpcb) = (Ipv4Addr::new(10, 1, 1, 10), Ipv4Addr::new(10, 2, 1, 10));
    let cap = lab
        .capture(lab.plan.inet_ns(), "to-dmz", "tcp or udp port 53")
        .expect("capture");
    let vpc_dns = VPC_RESOLVER_ADDR.to_string();

    // The in-VPC resolver answers the hosts directly (its answers never cross the gateway).
    let (ok, out, err) = sh(
        &lab,
        "vpcb",
        &format!("dig +time=2 +short @{vpc_dns} api.vendor.test A"),
    );
    assert!(ok && out == API.to_string(), "{out} {err}");

    // 1. A `dns` rule allows its name's server and not another server, with no answer crossing
    //    the gateway: the gateway's own resolution of the rule name decides.
    assert!(http(&lab, "vpcb", "api.vendor.test", API), "api by dns");
    assert!(
        !http(&lab, "vpcb", "updates.vendor.test", UPDATES),
        "another server"
    );

    // 2. `fqdn_and_dns`: a client resolves through the in-VPC resolver and connects at once.
    //    The correct SNI is accepted (the gateway verifies the wildcard's name on demand while
    //    the flow waits); the allowed SNI sent to another server's address is dropped.
    assert!(
        resolve_and_connect(
            &lab,
            "vpcb",
            &vpc_dns,
            "pay.partner.test",
            "pay.partner.test"
        ),
        "true SNI"
    );
    assert!(
        !resolve_and_connect(
            &lab,
            "vpcb",
            &vpc_dns,
            "blocked.example.test",
            "pay.partner.test"
        ),
        "forged SNI"
    );

    // 3. The forwarder: vpca asks it, vpcb does not; both reach api.vendor.test, vpca's flow is
    //    tied to the name by vpca's own forwarded answer, vpcb's by the gateway's resolution.
    let (ok, out, err) = sh(
        &lab,
        "vpca",
        &format!("dig +time=2 +short @{FORWARDER} api.vendor.test A"),
    );
    assert!(ok && out == API.to_string(), "forwarder: {out} {err}");
    assert!(http(&lab, "vpca", "api.vendor.test", API), "vpca api");

    let pkts = cap.finish().expect("capture read");
    // No payload byte of the forged flow reached the server that was not its name's.
    let leaked: Vec<&String> = pkts
        .iter()
        .filter(|l| l.contains(&format!("> {BLOCKED}.443")) && !l.ends_with("length 0"))
        .collect();
    assert!(leaked.is_empty(), "payload reached {BLOCKED}: {leaked:?}");
    // Control: the accepted flow's payload is in the same capture.
    assert!(
        pkts.iter()
            .any(|l| l.contains(&format!("> {PAY}.443")) && !l.ends_with("length 0")),
        "{pkts:?}"
    );
    let access = lab.access_log();
    assert!(
        !access.lines().any(|l| l.contains("updates.vendor.test")),
        "{access}"
    );

    for (gname, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "{gname}: {st:?}");
    }
    let recs = flow_records(&lab);
    // The hosts' queries to the in-VPC resolver never crossed the gateway.
    assert!(
        records_for(&recs, vpcb, VPC_RESOLVER_ADDR, Some(53)).is_empty(),
        "{recs:#?}"
    );
    let r = one(&recs, vpcb, API, 80);
    assert_eq!(field(r, "action"), "accept");
    assert_eq!(field(r, "acl_rule_id"), "api-by-dns");
    assert_eq!(field(r, "dns_verified"), "gateway_resolution");
    assert!(
        field(r, "reason")
            .as_str()
            .unwrap()
            .contains("gateway_resolution"),
        "{r}"
    );
    let r = one(&recs, vpcb, UPDATES, 80);
    assert_eq!(field(r, "action"), "drop");
    assert_eq!(field(r, "dns_verified"), &Value::Null);
    let r = one(&recs, vpcb, PAY, 443);
    assert_eq!(field(r, "action"), "accept");
    assert_eq!(field(r, "acl_rule_id"), "partner-verified");
    assert_eq!(field(r, "domain"), "pay.partner.test");
    assert_eq!(field(r, "dns_verified"), "gateway_resolution");
    let r = one(&recs, vpcb, BLOCKED, 443);
    assert_eq!(field(r, "action"), "drop");
    assert_eq!(field(r, "domain"), "pay.partner.test");
    assert_eq!(field(r, "acl_rule_id"), &Value::Null, "default drop: {r}");
    assert_eq!(field(r, "dns_verified"), &Value::Null);
    let r = one(&recs, vpca, API, 80);
    assert_eq!(field(r, "action"), "accept");
    assert_eq!(field(r, "dns_verified"), "forwarder", "{r}");
}
