//! Operating a live gateway in the lab: a SIGHUP reload that now denies a domain leaves an
//! established flow to it alone while new connections are refused; `/metrics` counts the
//! traffic; `natfw bypass add|remove` through the admin API lets a host around the policy and
//! back (after the removal its flows are SNATed, decided and logged by natfw again). Root only (prints `SKIP` otherwise); its own namespace tag (`natfw-o1-*`) and a
//! guard that tears the lab down (and stops the natfw it started) on panic.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use natfw_lab::{self, gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};

use super::support::metric;

const METRICS: &str = "127.0.0.1:9109";
const ADMIN: &str = "127.0.0.1:9443";

/// `natfw run` started by this test (with a metrics listener); SIGKILLed on drop if still up.
struct Natfw(Child);

impl Drop for Natfw {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

fn wait_for_log(log: &Path, needle: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = std::fs::read_to_string(log).unwrap_or_default();
        if out.contains(needle) {
            return out;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("natfw run exited ({st}):\n{out}");
        }
        assert!(Instant::now() < deadline, "no `{needle}` in:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_keeps_established_flows_denies_new_ones_metrics_move_and_bypass_applies_live() {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab ops test: {why}");
        return;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    let lab = LabGuard(Lab::up(plan(Scenario::ProdTest, "o1"), o).expect("lab up"));
    let g = lab
        .plan
        .gateways
        .iter()
        .find(|g| g.name == "prod")
        .expect("prod gateway")
        .clone();
    let base = gateway_config_text(&g).expect("embedded config");
    let token = lab.dir.join("ops-token");
    std::fs::write(&token, "lab-ops-token\n").unwrap();
    let with_metrics = format!(
        "{base}metrics:\n  listen: \"{METRICS}\"\nadmin:\n  listen: \"{ADMIN}\"\n  token_file: {}\n  plain_http: true\n",
        token.display()
    );
    let cfg = lab.dir.join("ops-prod.yaml");
    std::fs::write(&cfg, &with_metrics).unwrap();
    let log = lab.dir.join("ops-natfw.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &g.ns])
        .arg(env!("CARGO_BIN_EXE_natfw"))
        .args(["run", "--config"])
        .arg(&cfg)
        .current_dir(&lab.dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn natfw run");
    let mut natfw = Natfw(child);
    wait_for_log(&log, "SIGINT/SIGTERM to stop", &mut natfw.0);
    let t = Duration::from_secs(20);
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], t);

    // A held-open HTTP/1.1 connection to api.vendor.test: one request now, one after the
    // reload (when the marker file appears), on the same TCP flow.
    let host = lab.plan.host("prod").expect("host").ns.clone();
    let marker = lab.dir.join("ops-reloaded");
    let req = "GET / HTTP/1.1\\r\\nHost: api.vendor.test\\r\\n\\r\\n";
    let script = format!(
        "exec 3<>/dev/tcp/203.0.113.11/80 || exit 9
         printf '{req}' >&3; timeout 2 cat <&3
         for i in $(seq 200); do [ -e {m} ] && break; sleep 0.1; done
         echo '--- after reload'
         printf '{req}' >&3; timeout 3 cat <&3; true",
        m = marker.display()
    );
    let held = Command::new("ip")
        .args(["netns", "exec", &host, "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("held-open client");
    std::thread::sleep(Duration::from_secs(3)); // first response read

    let scrape = || {
        let o = lab
            .exec(
                &g.ns,
                &["curl", "-sS", &format!("http://{METRICS}/metrics")],
                t,
            )
            .expect("curl metrics");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let before = scrape();
    let fwd_before = metric(
        &before,
        "natfw_packets_total{direction=\"out\",action=\"forward\"}",
    );
    assert!(fwd_before > 0, "no forwarded packets counted:\n{before}");

    // A broken config first: every error logged with its position, the policy stays.
    std::fs::write(
        &cfg,
        with_metrics.replace("action: accept", "action: maybe"),
    )
    .unwrap();
    signal(natfw.0.id(), "HUP");
    let out = wait_for_log(&log, "reload failed", &mut natfw.0);
    assert!(out.contains("ops-prod.yaml:23:15: "), "{out}");

    // Now deny the vendor's domains (the rule that admitted the held flow turns into a drop).
    let denied = with_metrics.replacen(
        "    - name: allow-vendor\n      description: software updates and the vendor API\n",
        "    - name: allow-vendor\n      description: now denied\n",
        1,
    );
    let denied = denied.replacen(
        "      ports: [80, 443]\n      action: accept",
        "      ports: [80, 443]\n      action: drop",
        1,
    );
    // A new first rule shifts every rule's index: records of flows decided before the reload
    // must still name the rule that decided them.
    let denied = denied.replacen(
        "  rules:\n",
        "  rules:\n    - name: shifted-in\n      destination: { cidr: [192.0.2.99/32] }\n      action: drop\n",
        1,
    );
    assert_ne!(denied, with_metrics, "the rule edit did not apply");
    std::fs::write(&cfg, &denied).unwrap();
    signal(natfw.0.id(), "HUP");
    wait_for_log(&log, "reloaded:", &mut natfw.0);
    std::fs::write(&marker, b"").unwrap();

    let out = held.wait_with_output().expect("held-open client");
    let text = String::from_utf8_lossy(&out.stdout);
    let (first, second) = text.split_once("--- after reload").unwrap_or((&text, ""));
    assert!(first.contains("200 OK"), "first response: {text}");
    assert!(
        second.contains("200 OK"),
        "the established flow was cut by the reload: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let new = lab
        .exec(
            &host,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "--resolve",
                "api.vendor.test:80:203.0.113.11",
                "http://api.vendor.test/",
            ],
            t,
        )
        .expect("curl");
    assert!(
        !new.status.success(),
        "a new connection to the now-denied domain went through: {}",
        String::from_utf8_lossy(&new.stdout)
    );

    // Counters are published about once a second: poll until they show the new traffic.
    let fwd = "natfw_packets_total{direction=\"out\",action=\"forward\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let m = scrape();
        let done = metric(&m, fwd) > fwd_before
            && metric(&m, "natfw_flows_created_total") >= 2
            && metric(&m, "natfw_dropped_packets_total{reason=\"policy\"}") >= 1;
        if done || Instant::now() >= deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metric(&after, fwd) > fwd_before,
        "forwarded packets did not move:\n{after}"
    );
    assert_eq!(
        metric(&after, "natfw_policy_reloads_total{result=\"ok\"}"),
        1,
        "{after}"
    );
    assert_eq!(
        metric(&after, "natfw_policy_reloads_total{result=\"error\"}"),
        1,
        "{after}"
    );
    assert!(metric(&after, "natfw_flows_created_total") >= 2, "{after}");
    assert!(
        metric(&after, "natfw_dropped_packets_total{reason=\"policy\"}") >= 1,
        "{after}"
    );

    // Bypass the host through the admin API client: the denied domain is reachable again,
    // SNATed by the kernel to the gateway's own address; removing it denies again.
    let natfw_bin = env!("CARGO_BIN_EXE_natfw");
    let tok = token.display().to_string();
    let admin_url = format!("http://{ADMIN}");
    let bypass = |op: &str| {
        let o = lab
            .exec(
                &g.ns,
                &[
                    natfw_bin,
                    "bypass",
                    op,
                    "10.10.1.10",
                    "--admin",
                    &admin_url,
                    "--token-file",
                    &tok,
                ],
                t,
            )
            .expect("natfw bypass");
        assert!(
            o.status.success(),
            "natfw bypass {op}: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let fetch = || {
        lab.exec(
            &host,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "--resolve",
                "api.vendor.test:80:203.0.113.11",
                "http://api.vendor.test/bypass-probe",
            ],
            t,
        )
        .expect("curl")
    };
    bypass("add");
    let o = fetch();
    assert!(
        o.status.success(),
        "bypassed host still blocked: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let own = g.own_addr.to_string();
    assert!(
        lab.access_log()
            .lines()
            .any(|l| l.contains("bypass-probe") && l.starts_with(&own)),
        "bypassed request not seen from {own}: {}",
        lab.access_log()
    );
    let to_kernel_before = metric(
        &scrape(),
        "natfw_afxdp_frames_total{event=\"to_kernel_dropped\"}",
    );
    bypass("remove");
    assert!(
        !fetch().status.success(),
        "removing the bypass did not restore the policy"
    );
    // The removed source is natfw's again, in the engine too (not only in XDP and nftables):
    // an allowed flow (ICMP) is SNATed to the EIP and answered, and logged below; no packet
    // of it is answered "to the kernel" and dropped.
    let ping = lab
        .exec(
            &host,
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.53"],
            t,
        )
        .expect("ping");
    assert!(
        ping.status.success(),
        "ping from the un-bypassed host failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let to_kernel_after = loop {
        let m = scrape();
        let n = metric(&m, "natfw_afxdp_frames_total{event=\"to_kernel_dropped\"}");
        if n > to_kernel_before || Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        to_kernel_after, to_kernel_before,
        "frames of the un-bypassed host were dropped as the kernel's"
    );

    signal(natfw.0.id(), "TERM");
    let mut st = None;
    for _ in 0..100 {
        if let Ok(Some(s)) = natfw.0.try_wait() {
            st = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = String::new();
    let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut rest));
    assert!(
        st.is_some_and(|s| s.success()),
        "natfw did not stop cleanly:\n{rest}"
    );
    // The held flow was decided by allow-vendor before the reload and kept its accept.
    let recs = natfw_lab::demo::flow_records(&lab);
    let to_vendor: Vec<_> = natfw_lab::demo::records_for(
        &recs,
        "10.10.1.10".parse().unwrap(),
        "203.0.113.11".parse().unwrap(),
        Some(80),
    );
    let rule_action = |r: &serde_json::Value| {
        (
            r["acl_rule_id"].as_str().unwrap_or("").to_string(),
            r["action"].as_str().unwrap_or("").to_string(),
        )
    };
    let got: Vec<_> = to_vendor.iter().map(|r| rule_action(r)).collect();
    let accept = ("allow-vendor".to_string(), "accept".to_string());
    let drop = ("allow-vendor".to_string(), "drop".to_string());
    assert!(
        got.contains(&accept),
        "held flow not logged as accepted: {got:?}"
    );
    assert!(
        got.contains(&drop),
        "new flow not logged as dropped: {got:?}"
    );
    // Two denied flows: the one before the bypass and the one after its removal (while
    // bypassed, the kernel carried the request and natfw logged nothing).
    let drops = got.iter().filter(|g| **g == drop).count();
    assert!(
        drops >= 2,
        "the flow after `bypass remove` was not decided by natfw: {got:?}"
    );
    let pings = natfw_lab::demo::records_for(
        &recs,
        "10.10.1.10".parse().unwrap(),
        "203.0.113.53".parse().unwrap(),
        None,
    );
    assert!(
        pings.iter().any(|r| r["action"] == "accept"
            && r["acl_rule_id"] == "allow-icmp"
            && r["snat_ip"] == "198.51.100.11"),
        "the un-bypassed host's ping was not SNATed and logged by natfw: {pings:?}"
    );
}
