//! Client checks run from VPC hosts (curl, openssl s_client, dig, ping, ssh-keyscan, UDP echo),
//! what each lab policy should do with them, and `natfw lab demo`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use super::plan::{self, HostSpec, Plan, Scenario, WEB_NAMES};
use super::{GatewayMode, Lab, LabError, Options};

/// Where the client checks run: the namespace lab ([`Lab`]) or the compose lab
/// ([`crate::compose::ComposeLab`]). Both run the same programs with the same arguments; only
/// the way into a host and the paths the host sees differ.
pub trait Clients {
    /// Run `args` on the host (namespace or container) named `ns` in the plan.
    fn exec(&self, ns: &str, args: &[&str], timeout: Duration) -> Result<Output, LabError>;
    /// The nginx access log as the host running this program sees it.
    fn access_log(&self) -> String;
    /// The lab CA certificate, as a path the clients see.
    fn client_ca(&self) -> String;
    /// The natfw binary (its UDP tools), as a path the clients see.
    fn client_natfw(&self) -> String;
}

impl Clients for crate::LabGuard {
    fn exec(&self, ns: &str, args: &[&str], timeout: Duration) -> Result<Output, LabError> {
        Lab::exec(self, ns, args, timeout)
    }
    fn access_log(&self) -> String {
        Lab::access_log(self)
    }
    fn client_ca(&self) -> String {
        self.ca_cert().display().to_string()
    }
    fn client_natfw(&self) -> String {
        self.opts.natfw_bin.display().to_string()
    }
}

impl Clients for Lab {
    fn exec(&self, ns: &str, args: &[&str], timeout: Duration) -> Result<Output, LabError> {
        Lab::exec(self, ns, args, timeout)
    }
    fn access_log(&self) -> String {
        Lab::access_log(self)
    }
    fn client_ca(&self) -> String {
        self.ca_cert().display().to_string()
    }
    fn client_natfw(&self) -> String {
        self.opts.natfw_bin.display().to_string()
    }
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `dig @lab-dns NAME A`: expects the name's lab address.
    Dns(&'static str),
    /// `curl https://NAME/` verifying with the lab CA.
    Https(&'static str),
    /// `curl http://NAME/`.
    Http(&'static str),
    /// `openssl s_client -servername NAME` (verified handshake).
    Tls(&'static str),
    /// `ping -c 2` the server of NAME.
    Ping(&'static str),
    /// `ssh-keyscan` the lab sshd (banner + key exchange).
    Ssh,
    /// Three UDP echo round trips.
    UdpEcho,
}

/// One client check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Short label for tables.
    pub label: &'static str,
    pub kind: Kind,
}

impl Check {
    /// Destination address of the traffic this check sends.
    pub fn target(&self) -> Ipv4Addr {
        match self.kind {
            Kind::Dns(_) => plan::DNS_ADDR,
            Kind::Https(n) | Kind::Http(n) | Kind::Tls(n) | Kind::Ping(n) => web_addr(n),
            Kind::Ssh => plan::SSH_ADDR,
            Kind::UdpEcho => plan::ECHO_ADDR,
        }
    }

    /// Destination port (`None` for ICMP).
    pub fn port(&self) -> Option<u16> {
        match self.kind {
            Kind::Dns(_) => Some(53),
            Kind::Https(_) | Kind::Tls(_) => Some(443),
            Kind::Http(_) => Some(80),
            Kind::Ping(_) => None,
            Kind::Ssh => Some(plan::SSH_PORT),
            Kind::UdpEcho => Some(plan::ECHO_PORT),
        }
    }

    /// Flow-log `ip_protocol` of the traffic this check sends.
    pub fn protocol(&self) -> &'static str {
        match self.kind {
            Kind::Dns(_) | Kind::UdpEcho => "udp",
            Kind::Ping(_) => "icmp",
            _ => "tcp",
        }
    }

    /// The web name involved, for HTTP(S)/TLS checks (what nginx logs as `$host`).
    pub fn web_name(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Https(n) | Kind::Http(n) | Kind::Tls(n) => Some(n),
            _ => None,
        }
    }
}

/// The lab address of a web name (unspecified if it is not one).
pub fn web_addr(name: &str) -> Ipv4Addr {
    WEB_NAMES
        .iter()
        .find(|w| w.name == name)
        .map_or(Ipv4Addr::UNSPECIFIED, |w| w.addr)
}

/// The checks the demo and the tests run from each host.
pub const CHECKS: [Check; 10] = [
    Check {
        label: "dns updates.vendor.test",
        kind: Kind::Dns("updates.vendor.test"),
    },
    Check {
        label: "https updates.vendor.test",
        kind: Kind::Https("updates.vendor.test"),
    },
    Check {
        label: "http api.vendor.test",
        kind: Kind::Http("api.vendor.test"),
    },
    Check {
        label: "tls api.vendor.test",
        kind: Kind::Tls("api.vendor.test"),
    },
    Check {
        label: "https pay.partner.test",
        kind: Kind::Https("pay.partner.test"),
    },
    Check {
        label: "https blocked.example.test",
        kind: Kind::Https(plan::BLOCKED_NAME),
    },
    Check {
        label: "http blocked.example.test",
        kind: Kind::Http(plan::BLOCKED_NAME),
    },
    Check {
        label: "ping updates.vendor.test",
        kind: Kind::Ping("updates.vendor.test"),
    },
    Check {
        label: "ssh 203.0.113.22:2222",
        kind: Kind::Ssh,
    },
    Check {
        label: "udp echo 203.0.113.7:7",
        kind: Kind::UdpEcho,
    },
];

/// Should `check` from `host` get through, given the gateway mode and the scenario's policy
/// (`examples/lab/scenario-*.yaml`; the kernel baseline can only block the blocked server's
/// address)?
pub fn expected_allowed(scenario: Scenario, mode: GatewayMode, host: &HostSpec, c: &Check) -> bool {
    let blocked = matches!(c.kind, Kind::Https(n) | Kind::Http(n) if n == plan::BLOCKED_NAME);
    if host.bypassed {
        return true;
    }
    if mode == GatewayMode::Kernel {
        return !blocked;
    }
    if blocked {
        return false;
    }
    let pay = matches!(c.kind, Kind::Https("pay.partner.test"));
    match (scenario, host.name.as_str()) {
        // Prod: DNS, ICMP, *.vendor.test on 80/443; default drop.
        (Scenario::ProdTest, "prod") => {
            matches!(
                c.kind,
                Kind::Dns(_) | Kind::Ping(_) | Kind::Https(_) | Kind::Http(_) | Kind::Tls(_)
            ) && !pay
        }
        (Scenario::ProdTest, _) => !pay,
        (Scenario::SharedDmz, "vpca") => true,
        (Scenario::SharedDmz, "vpcb") => !pay,
        (Scenario::SharedDmz, _) => !pay && c.kind != Kind::Ssh,
        (Scenario::VSwitches, "vsw2") => {
            matches!(c.kind, Kind::Dns(_) | Kind::Https("updates.vendor.test"))
        }
        (Scenario::VSwitches, _) => true,
    }
}

/// Does what was observed meet the expectation? A denied HTTP/HTTPS/TLS check must end in a
/// TCP reset (natfw decides after the name is known and resets both ends; the kernel baseline
/// rejects with a reset), not in silence.
pub fn matches_expectation(want_allowed: bool, c: &Check, o: &Observed) -> bool {
    if want_allowed || o.allowed {
        return want_allowed == o.allowed;
    }
    c.web_name().is_none() || o.reset
}

/// What one check observed.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The traffic got through and the answer was right.
    pub allowed: bool,
    /// One line: the answer, or how it failed.
    pub detail: String,
    /// Source addresses nginx logged for this check's requests (HTTP/HTTPS/TLS checks).
    pub server_saw: Vec<String>,
    /// Blocked with a TCP reset (connection refused or reset by peer), not by silence.
    pub reset: bool,
}

impl Observed {
    /// `allowed`, `reset` or `dropped` (no answer).
    pub fn verdict(&self) -> &'static str {
        match (self.allowed, self.reset) {
            (true, _) => "allowed",
            (false, true) => "reset",
            (false, false) => "dropped",
        }
    }
}

fn tail_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Run `c` from `host` in `lab`. Bounded: every client has a 5 s timeout.
pub fn run_check<L: Clients + ?Sized>(
    lab: &L,
    host: &HostSpec,
    c: &Check,
) -> Result<Observed, LabError> {
    let t = Duration::from_secs(8);
    let before = lab.access_log().lines().count();
    let target = c.target().to_string();
    let ca = lab.client_ca();
    let (allowed, detail) = match c.kind {
        Kind::Dns(name) => {
            let o = lab.exec(
                &host.ns,
                &[
                    "dig",
                    "+time=2",
                    "+tries=2",
                    "+short",
                    &format!("@{target}"),
                    name,
                    "A",
                ],
                t,
            )?;
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let want = web_addr(name).to_string();
            let ok = o.status.success() && out == want;
            (ok, if ok { out } else { tail_line(&out) })
        }
        Kind::Https(name) | Kind::Http(name) => {
            let (scheme, port) = if matches!(c.kind, Kind::Https(_)) {
                ("https", 443)
            } else {
                ("http", 80)
            };
            let resolve = format!("{name}:{port}:{target}");
            let url = format!("{scheme}://{name}/");
            let o = lab.exec(
                &host.ns,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "5",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    &url,
                ],
                t,
            )?;
            let body = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let ok = o.status.success() && body == format!("{name} ok");
            let detail = if ok {
                format!("200 \"{body}\"")
            } else {
                format!(
                    "curl exit {}: {}",
                    o.status.code().unwrap_or(-1),
                    tail_line(&String::from_utf8_lossy(&o.stderr))
                )
            };
            (ok, detail)
        }
        Kind::Tls(name) => {
            let connect = format!("{target}:443");
            let o = lab.exec(
                &host.ns,
                &[
                    "sh", "-c",
                    "printf '' | timeout 5 openssl s_client -brief -connect \"$1\" -servername \"$2\" -CAfile \"$3\" -verify_return_error 2>&1",
                    "s_client", &connect, name, &ca,
                ],
                t,
            )?;
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let ok = o.status.success() && out.contains("Verification: OK");
            let detail = out
                .lines()
                .find(|l| {
                    l.starts_with("Protocol version") || l.contains("errno") || l.contains("error")
                })
                .unwrap_or("")
                .trim()
                .to_owned();
            (
                ok,
                if ok {
                    format!("verified, {detail}")
                } else {
                    format!(
                        "openssl: {}",
                        if detail.is_empty() {
                            tail_line(&out)
                        } else {
                            detail
                        }
                    )
                },
            )
        }
        Kind::Ping(_) => {
            let o = lab.exec(
                &host.ns,
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", &target],
                t,
            )?;
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = out
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or("")
                .trim()
                .to_owned();
            (o.status.success(), line)
        }
        Kind::Ssh => {
            let port = plan::SSH_PORT.to_string();
            let o = lab.exec(
                &host.ns,
                &[
                    "ssh-keyscan",
                    "-T",
                    "5",
                    "-t",
                    "ed25519",
                    "-p",
                    &port,
                    &target,
                ],
                t,
            )?;
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let ok = out.contains("ssh-ed25519");
            (
                ok,
                if ok {
                    "host key ssh-ed25519 received".into()
                } else {
                    "no host key".into()
                },
            )
        }
        Kind::UdpEcho => {
            let to = format!("{target}:{}", plan::ECHO_PORT);
            let bin = lab.client_natfw();
            let o = lab.exec(
                &host.ns,
                &[
                    &bin,
                    "lab",
                    "udp-rtt",
                    "--to",
                    &to,
                    "--count",
                    "3",
                    "--timeout-ms",
                    "1000",
                ],
                t,
            )?;
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            let got = v.get("received").and_then(Value::as_u64).unwrap_or(0);
            (got == 3, format!("{got}/3 echoed"))
        }
    };
    let server_saw = if c.web_name().is_some() {
        lab.access_log()
            .lines()
            .skip(before)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    } else {
        Vec::new()
    };
    // ECONNRESET / ECONNREFUSED as curl and openssl word them (errno 104 = ECONNRESET).
    let d = detail.to_ascii_lowercase();
    let reset = !allowed
        && (d.contains("reset")
            || d.contains("refused")
            || d.contains("errno=104")
            || d.starts_with("curl exit 7:"));
    Ok(Observed {
        allowed,
        detail,
        server_saw,
        reset,
    })
}

/// Flow-log records (parsed JSON lines) of every gateway of `lab` that ran natfw.
pub fn flow_records(lab: &Lab) -> Vec<Value> {
    flow_records_in(&lab.plan, &lab.dir)
}

/// Flow-log records of every gateway of `plan` whose log `flow-<gateway>.jsonl` is in `dir`.
pub fn flow_records_in(plan: &Plan, dir: &Path) -> Vec<Value> {
    plan.gateways
        .iter()
        .filter_map(|g| std::fs::read_to_string(dir.join(format!("flow-{}.jsonl", g.name))).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Records of `check`'s traffic from `src` (destination, protocol and port).
pub fn records_for_check<'a>(recs: &'a [Value], src: Ipv4Addr, c: &Check) -> Vec<&'a Value> {
    records_for(recs, src, c.target(), c.port())
        .into_iter()
        .filter(|r| r.get("ip_protocol").and_then(Value::as_str) == Some(c.protocol()))
        .collect()
}

/// Records for traffic from `src` to `dst` (`dst_port` when given).
pub fn records_for(
    recs: &[Value],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dst_port: Option<u16>,
) -> Vec<&Value> {
    let (src, dst) = (src.to_string(), dst.to_string());
    recs.iter()
        .filter(|r| {
            r.get("src_ip").and_then(Value::as_str) == Some(src.as_str())
                && r.get("dst_ip").and_then(Value::as_str) == Some(dst.as_str())
                && dst_port
                    .is_none_or(|p| r.get("dst_port").and_then(Value::as_u64) == Some(u64::from(p)))
        })
        .collect()
}

fn short_record(r: &Value) -> String {
    let f = |k: &str| match r.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    };
    format!(
        "{} rule={} app={} domain={} snat={}",
        f("action"),
        f("acl_rule_id"),
        f("app_name"),
        f("domain"),
        f("snat_ip")
    )
}

/// `natfw lab demo`: up, gateways in `mode`, every check from every host, a table, down.
/// Returns the process exit code (0 when every check matched its expectation).
pub fn demo(scenario: Scenario, mode: GatewayMode, opts: Options, keep: bool) -> i32 {
    let tag = format!("demo{}", scenario.number());
    let mut opts = opts;
    opts.mode = mode;
    opts.tx_csum_off = true;
    println!(
        "natfw lab demo: {scenario} ({}), gateways: {mode:?}",
        scenario.describe()
    );
    let mut lab = match Lab::up(plan::plan(scenario, &tag), opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lab up failed: {e}");
            return 1;
        }
    };
    print!("{}", lab.summary());
    let code = demo_body(&mut lab, scenario, mode);
    if keep {
        println!("lab kept up (tag {tag}); `natfw lab down` removes it");
    } else {
        lab.down();
    }
    code
}

fn demo_body(lab: &mut Lab, scenario: Scenario, mode: GatewayMode) -> i32 {
    if mode == GatewayMode::Natfw {
        for gi in 0..lab.plan.gateways.len() {
            if let Err(e) = lab.start_natfw(gi) {
                eprintln!("cannot start natfw: {e}");
                return 1;
            }
        }
    }
    let rows = match run_all(lab, &lab.plan.clone(), scenario, mode) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    for (g, st) in lab.stop_natfw() {
        println!("natfw run on gateway {g} exited: {st:?}");
    }
    let recs = flow_records(lab);
    report(&rows, &recs, mode)
}

/// One row of the demo table: host, check, expectation, what was observed.
pub type Row = (HostSpec, Check, bool, Observed);

/// Every check from every host of `plan`.
pub fn run_all<L: Clients + ?Sized>(
    lab: &L,
    plan: &Plan,
    scenario: Scenario,
    mode: GatewayMode,
) -> Result<Vec<Row>, LabError> {
    let mut rows = Vec::new();
    for host in plan.hosts.clone() {
        for c in CHECKS {
            let want = expected_allowed(scenario, mode, &host, &c);
            let o = run_check(lab, &host, &c).map_err(|e| LabError {
                context: format!("check {} from {}", c.label, host.name),
                detail: e.to_string(),
            })?;
            rows.push((host.clone(), c, want, o));
        }
    }
    Ok(rows)
}

/// Print the demo table (with the flow-log records of each check in natfw mode) and the
/// summary line; returns the exit code (0 when every check matched its expectation).
pub fn report(rows: &[Row], recs: &[Value], mode: GatewayMode) -> i32 {
    let mut mismatches = 0;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{:<6} {:<28} {:<8} {:<8} {:<3} {:<16} detail",
        "host", "check", "expect", "got", "ok", "server saw"
    );
    for (host, c, want, o) in rows {
        let ok = matches_expectation(*want, c, o);
        if !ok {
            mismatches += 1;
        }
        let verdict = |b: bool| match (b, c.web_name().is_some()) {
            (true, _) => "allowed",
            (false, true) => "reset",
            (false, false) => "blocked",
        };
        let saw = if o.server_saw.is_empty() {
            "-".to_string()
        } else {
            o.server_saw.join(",")
        };
        let _ = writeln!(
            t,
            "{:<6} {:<28} {:<8} {:<8} {:<3} {:<16} {}",
            host.name,
            c.label,
            verdict(*want),
            o.verdict(),
            if ok { "yes" } else { "NO" },
            saw,
            o.detail
        );
        if mode == GatewayMode::Natfw && !host.bypassed {
            let rs = records_for_check(recs, host.addr, c);
            if rs.is_empty() {
                let _ = writeln!(t, "{:>12} flow log: no record", "");
            }
            for r in rs.iter().take(2) {
                let _ = writeln!(t, "{:>12} flow log: {}", "", short_record(r));
            }
        }
    }
    print!("{t}");
    println!(
        "\n{} checks, {} as expected, {} mismatches; {} flow-log records",
        rows.len(),
        rows.len() - mismatches,
        mismatches,
        recs.len()
    );
    i32::from(mismatches > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bypassed_host_is_always_allowed_and_blocked_name_is_blocked_otherwise() {
        let p = plan::plan(Scenario::VSwitches, "x");
        let mgmt = p.host("mgmt").unwrap();
        let vsw1 = p.host("vsw1").unwrap();
        for c in CHECKS {
            assert!(expected_allowed(p.scenario, GatewayMode::Natfw, mgmt, &c));
            let blocked = c.label.contains("blocked");
            assert_eq!(
                expected_allowed(p.scenario, GatewayMode::Kernel, vsw1, &c),
                !blocked
            );
        }
    }

    #[test]
    fn every_check_has_a_lab_target() {
        for c in CHECKS {
            assert_ne!(c.target(), Ipv4Addr::UNSPECIFIED, "{}", c.label);
            assert!(crate::server_addrs().contains(&c.target()));
        }
    }
}
