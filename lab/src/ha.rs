//! A gateway pair that fails over, on namespaces (`natfw lab demo --scenario ha`).
//!
//! Two gateways (`gwa`, `gwb`) with the same policy (scenario 1's prod VPC) share the VPC
//! segment (a bridge in the VPC host's namespace) and the internet segment. keepalived
//! (Debian's, VRRP) on each holds the VPC-side next hop [`VIP`] on `inside0` and the EIP on
//! `outside0` of the active gateway; it tracks `natfw health --standby-ok`. Its notify script
//! starts `natfw run` on the gateway that becomes active and stops it on the one that is not: a
//! standby runs no natfw and forwards nothing (its fail-closed guard, installed by
//! `natfw guard` at boot, drops whatever reaches it). Flows open on the failed gateway break:
//! no state is replicated.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::plan::{self, GatewaySpec, HostSpec, Link, NsSpec, Plan, Role, Scenario, SnatSpec};
use crate::tools::Attempt;
use crate::{err, GatewayMode, Lab, LabError, Options};

/// The VPC-side next hop the VPC routes to; VRRP moves it.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);
/// The EIP; VRRP moves it with [`VIP`].
pub const EIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// The VPC host.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 10);
/// Gateways: (name, own inside address, own outside address, VRRP priority).
pub const GATEWAYS: [(&str, Ipv4Addr, Ipv4Addr, u8); 2] = [
    (
        "gwa",
        Ipv4Addr::new(10, 10, 1, 2),
        Ipv4Addr::new(198, 51, 100, 141),
        150,
    ),
    (
        "gwb",
        Ipv4Addr::new(10, 10, 1, 3),
        Ipv4Addr::new(198, 51, 100, 142),
        100,
    ),
];
/// Where natfw's metrics listener (and so `GET /healthz`) is, in each gateway's namespace.
pub const HEALTH_LISTEN: &str = "127.0.0.1:9108";
/// The traffic the failover runs under: new HTTP connections to this server.
pub const TARGET: &str = "updates.vendor.test";
const TARGET_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// A flow's record is written when the flow ends (FIN/RST), and the flow-log writer flushes
/// within 200 ms: a SIGKILL loses the records of every open flow and of flows that ended within
/// this before it.
pub const RECORD_DELAY_MS: u64 = 1_000;

fn net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(a, len).unwrap_or_else(|_| Ipv4Net::from(a))
}

/// The pair's plan: internet, two gateways, the VPC host (its bridge is added after `up`).
pub fn ha_plan(tag: &str) -> Plan {
    let ns = |r: &str| format!("{}{tag}-{r}", plan::NS_PREFIX);
    let inet = ns("inet");
    let host = ns("prod");
    let mut p = Plan {
        scenario: Scenario::ProdTest,
        tag: tag.into(),
        namespaces: vec![NsSpec {
            name: inet.clone(),
            role: Role::Internet,
            routes: Vec::new(),
        }],
        links: Vec::new(),
        gateways: Vec::new(),
        hosts: Vec::new(),
        vpc_resolver: None,
    };
    for (name, inside, outside, _) in GATEWAYS {
        let g = ns(name);
        p.namespaces.push(NsSpec {
            name: g.clone(),
            role: Role::Gateway,
            routes: vec![(None, plan::INET_ROUTER)],
        });
        p.links.push(Link {
            a_ns: g.clone(),
            a_if: "outside0".into(),
            a_addr: Some(net(outside, plan::INET_PREFIX_LEN)),
            b_ns: inet.clone(),
            b_if: format!("to-{name}"),
            b_addr: None,
            b_bridged: true,
        });
        p.links.push(Link {
            a_ns: g.clone(),
            a_if: "inside0".into(),
            a_addr: Some(net(inside, 24)),
            b_ns: host.clone(),
            b_if: format!("to-{name}"),
            b_addr: None,
            b_bridged: false,
        });
        p.gateways.push(GatewaySpec {
            name: name.into(),
            ns: g,
            own_addr: outside,
            // On neither at `up`: keepalived puts it on the active one.
            eips: Vec::new(),
            snat: vec![SnatSpec {
                name: "prod-vpc".into(),
                source: net(Ipv4Addr::new(10, 10, 0, 0), 16),
                eip: EIP,
            }],
            bypass: Vec::new(),
            config: "examples/lab/scenario-1-prod.yaml".into(),
        });
    }
    // The host's route goes in once its bridge has an address.
    p.namespaces.push(NsSpec {
        name: host.clone(),
        role: Role::Host,
        routes: Vec::new(),
    });
    p.hosts.push(HostSpec {
        name: "prod".into(),
        ns: host,
        addr: HOST,
        gateway: 0,
        bypassed: false,
    });
    p
}

/// One gateway's natfw config: scenario 1's prod policy, its own flow log, and a metrics
/// listener on loopback for `GET /healthz`.
pub fn gateway_config(name: &str) -> String {
    let base = include_str!("../../examples/lab/scenario-1-prod.yaml");
    let mut s = base
        .replace(
            "flow_log: flow-prod.jsonl",
            &format!("flow_log: flow-{name}.jsonl"),
        )
        .replace("name: lab-prod", &format!("name: lab-ha-{name}"));
    let _ = write!(s, "metrics:\n  listen: \"{HEALTH_LISTEN}\"\n");
    s
}

/// keepalived.conf of gateway `i` of [`GATEWAYS`].
pub fn keepalived_conf(i: usize, dir: &Path, natfw: &Path) -> String {
    let (name, inside, _, prio) = GATEWAYS[i];
    let peer = GATEWAYS[1 - i].1;
    let d = dir.display();
    let bin = natfw.display();
    format!(
        "# keepalived for natfw lab gateway {name}: VRRP on the VPC side, the next hop and the EIP\n\
         # move together; natfw runs only where they are (notify script).\n\
         global_defs {{\n  router_id natfw-{name}\n  script_user root\n  \
         vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 3\n}}\n\
         vrrp_script natfw_health {{\n  script \"{bin} health --config {d}/{name}.yaml --standby-ok\"\n  \
         interval 1\n  timeout 2\n  fall 1\n  rise 1\n}}\n\
         vrrp_instance vpc {{\n  state BACKUP\n  nopreempt\n  interface inside0\n  \
         virtual_router_id 51\n  priority {prio}\n  advert_int 1\n  \
         unicast_src_ip {inside}\n  unicast_peer {{\n    {peer}\n  }}\n  \
         virtual_ipaddress {{\n    {VIP}/24 dev inside0\n    {EIP}/24 dev outside0\n  }}\n  \
         track_script {{\n    natfw_health\n  }}\n  \
         notify_master \"{d}/notify-{name}.sh master\"\n  \
         notify_backup \"{d}/notify-{name}.sh backup\"\n  \
         notify_fault \"{d}/notify-{name}.sh fault\"\n  \
         notify_stop \"{d}/notify-{name}.sh stop\"\n}}\n"
    )
}

/// keepalived's notify script of gateway `name`: start natfw when it becomes active, stop it
/// (SIGTERM: the flow log is flushed) otherwise; every transition is logged with a timestamp.
pub fn notify_script(name: &str, dir: &Path, natfw: &Path) -> String {
    let d = dir.display();
    let bin = natfw.display();
    format!(
        "#!/bin/sh\n\
         # keepalived notify for {name}: natfw runs only on the active gateway.\n\
         pidf={d}/natfw-{name}.pid\n\
         echo \"$(date +%s%3N) $1\" >>{d}/ha-{name}.events\n\
         running() {{ [ -f \"$pidf\" ] && kill -0 \"$(cat \"$pidf\")\" 2>/dev/null; }}\n\
         case $1 in\n\
         master)\n  running && exit 0\n  \
         cd {d} && setsid {bin} run --config {d}/{name}.yaml >>{d}/natfw-{name}.log 2>&1 </dev/null &\n  \
         echo $! >\"$pidf\" ;;\n\
         *)\n  running && kill -TERM \"$(cat \"$pidf\")\"\n  rm -f \"$pidf\" ;;\n\
         esac\n"
    )
}

/// The running pair.
#[derive(Debug)]
pub struct HaLab {
    pub lab: Lab,
    keepalived: Vec<Child>,
}

impl HaLab {
    /// Build the pair with tag `tag`, install the guard on both gateways, start keepalived on
    /// both and wait until one is active with natfw forwarding.
    pub fn up(tag: &str, natfw_bin: &Path) -> Result<HaLab, LabError> {
        let mut opts = Options::new(natfw_bin.to_path_buf());
        opts.mode = GatewayMode::Natfw;
        let lab = Lab::up(ha_plan(tag), opts)?;
        let mut ha = HaLab {
            lab,
            keepalived: Vec::new(),
        };
        if let Err(e) = ha.start() {
            ha.down();
            return Err(e);
        }
        Ok(ha)
    }

    fn ns_run(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let o = self.lab.exec(ns, args, Duration::from_secs(20))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(err(
                format!("{ns}: {}", args.join(" ")),
                String::from_utf8_lossy(&o.stderr),
            ))
        }
    }

    fn start(&mut self) -> Result<(), LabError> {
        let host = self.lab.plan.hosts[0].ns.clone();
        let h = HOST.to_string() + "/24";
        let via = VIP.to_string();
        for args in [
            vec!["ip", "link", "add", "br0", "type", "bridge"],
            vec!["ip", "link", "set", "to-gwa", "master", "br0"],
            vec!["ip", "link", "set", "to-gwb", "master", "br0"],
            vec!["ip", "addr", "add", &h, "dev", "br0"],
            vec!["ip", "link", "set", "br0", "up"],
            vec!["ip", "route", "add", "default", "via", &via],
            // As `--tx-csum-off` does for the other labs' hosts.
            vec!["ethtool", "-K", "br0", "tx", "off"],
        ] {
            self.ns_run(&host, &args)?;
        }
        for p in ["to-gwa", "to-gwb"] {
            let _ = self.ns_run(&host, &["ethtool", "-K", p, "tx", "off"]);
        }
        let dir = self.lab.dir.clone();
        let bin = self.lab.opts.natfw_bin.clone();
        for (i, (name, ..)) in GATEWAYS.iter().enumerate() {
            let w = |f: String, text: String| {
                std::fs::write(dir.join(&f), text).map_err(|e| err(format!("write {f}"), e))
            };
            w(format!("{name}.yaml"), gateway_config(name))?;
            w(
                format!("keepalived-{name}.conf"),
                keepalived_conf(i, &dir, &bin),
            )?;
            w(format!("notify-{name}.sh"), notify_script(name, &dir, &bin))?;
            let script = dir.join(format!("notify-{name}.sh"));
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| err("chmod", e))?;
            let ns = self.lab.plan.gateways[i].ns.clone();
            let cfg = dir.join(format!("{name}.yaml")).display().to_string();
            self.ns_run(
                &ns,
                &[&bin.display().to_string(), "guard", "--config", &cfg],
            )?;
        }
        for (i, (name, ..)) in GATEWAYS.iter().enumerate() {
            let ns = self.lab.plan.gateways[i].ns.clone();
            let log = std::fs::File::create(dir.join(format!("keepalived-{name}.log")))
                .map_err(|e| err("keepalived log", e))?;
            let log2 = log.try_clone().map_err(|e| err("keepalived log", e))?;
            let conf = dir.join(format!("keepalived-{name}.conf"));
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "keepalived",
                    "-n",
                    "-l",
                    "-D",
                    "--vrrp",
                    "-f",
                ])
                .arg(&conf)
                .arg("-p")
                .arg(dir.join(format!("keepalived-{name}.pid")))
                .arg("-r")
                .arg(dir.join(format!("keepalived-vrrp-{name}.pid")))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| err("spawn keepalived", e))?;
            self.keepalived.push(child);
        }
        self.wait_active(Duration::from_secs(90)).map(|_| ())
    }

    /// The gateway holding the EIP now, if any.
    pub fn holder(&self) -> Option<usize> {
        (0..GATEWAYS.len()).find(|&i| {
            let ns = &self.lab.plan.gateways[i].ns;
            self.ns_run(ns, &["ip", "-o", "-4", "addr", "show", "dev", "outside0"])
                .is_ok_and(|o| o.contains(&format!(" {EIP}/")))
        })
    }

    /// `natfw health` (without `--standby-ok`) on gateway `i`.
    pub fn healthy(&self, i: usize) -> bool {
        let ns = &self.lab.plan.gateways[i].ns;
        let cfg = self.lab.dir.join(format!("{}.yaml", GATEWAYS[i].0));
        let bin = self.lab.opts.natfw_bin.display().to_string();
        self.lab
            .exec(
                ns,
                &[&bin, "health", "--config", &cfg.display().to_string()],
                Duration::from_secs(10),
            )
            .is_ok_and(|o| o.status.success())
    }

    /// Wait until one gateway holds the EIP and its natfw is healthy; returns its index.
    pub fn wait_active(&self, timeout: Duration) -> Result<usize, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.holder() {
                if self.healthy(i) {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                return Err(err("no active gateway", self.events() + &self.logs_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pid of the natfw the notify script started on gateway `i`, if it runs.
    pub fn natfw_pid(&self, i: usize) -> Option<u32> {
        let p = self.lab.dir.join(format!("natfw-{}.pid", GATEWAYS[i].0));
        let pid: u32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Every keepalived transition (`<unix ms> <state>` per gateway).
    pub fn events(&self) -> String {
        let mut s = String::new();
        for (name, ..) in GATEWAYS {
            let t = std::fs::read_to_string(self.lab.dir.join(format!("ha-{name}.events")))
                .unwrap_or_default();
            for l in t.lines() {
                let _ = writeln!(s, "  {name}: {l}");
            }
        }
        s
    }

    fn logs_tail(&self) -> String {
        let mut s = String::new();
        for (name, ..) in GATEWAYS {
            for f in [
                format!("keepalived-{name}.log"),
                format!("natfw-{name}.log"),
            ] {
                let t = std::fs::read_to_string(self.lab.dir.join(&f)).unwrap_or_default();
                let v: Vec<&str> = t.lines().collect();
                let _ = writeln!(s, "--- {f}");
                for l in &v[v.len().saturating_sub(8)..] {
                    let _ = writeln!(s, "  {l}");
                }
            }
        }
        s
    }

    /// Stop keepalived on both (its stop notification SIGTERMs natfw, which flushes its flow
    /// log), wait for every natfw to exit.
    pub fn stop(&mut self) {
        for c in &self.keepalived {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.keepalived {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.keepalived.clear();
        for i in 0..GATEWAYS.len() {
            if let Some(pid) = self.natfw_pid(i) {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && (0..GATEWAYS.len()).any(|i| self.natfw_pid(i).is_some())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tear everything down.
    pub fn down(&mut self) {
        self.stop();
        self.lab.down();
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        self.down();
    }
}

/// What a failover run measured.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The gateway whose natfw was killed, and the one that holds the EIP afterwards.
    pub killed: String,
    pub active_after: Option<String>,
    /// From the SIGKILL to the start of the first connection that succeeded after it.
    pub failover_ms: Option<u64>,
    pub attempts: usize,
    pub ok: usize,
    /// Connections that failed (all of them around the switch).
    pub failed: usize,
    /// Successful connections started after the kill (they went through the standby).
    pub ok_after: usize,
    /// Packets with a VPC (10/8) source seen on the internet segment: must be 0.
    pub leaked: usize,
    /// Packets from the EIP seen there (the capture's positive control).
    pub from_eip: usize,
    /// Successful connections with a flow record on gateway a / b / both / neither.
    pub rec_a: usize,
    pub rec_b: usize,
    pub rec_both: usize,
    /// For each connection logged by both: the attempt and both records, in short.
    pub both: Vec<String>,
    pub unaccounted: Vec<Attempt>,
    /// Unaccounted connections that ended more than [`RECORD_DELAY_MS`] before the kill, or
    /// after it (they should have a record): must be 0.
    pub unexplained: usize,
    /// Records whose SNAT address is not the EIP: must be 0.
    pub wrong_snat: usize,
    pub kill_ms: u64,
    /// keepalived's transitions after the kill: the killed gateway's FAULT and the standby's
    /// MASTER, in ms after the kill.
    pub fault_after_ms: Option<u64>,
    pub master_after_ms: Option<u64>,
}

impl Failover {
    /// Did the standby take over (holds the EIP, new connections succeeded through it)?
    pub fn took_over(&self) -> bool {
        self.active_after
            .as_deref()
            .is_some_and(|a| a != self.killed)
            && self.ok_after > 0
    }

    /// The report `natfw lab demo --scenario ha` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "killed natfw on {} (SIGKILL); active now: {}",
            self.killed,
            self.active_after.as_deref().unwrap_or("none")
        );
        let _ = writeln!(
            s,
            "failover time (kill -> first new connection that succeeded): {}",
            self.failover_ms.map_or("never".to_string(), |m| format!(
                "{:.1} s",
                m as f64 / 1000.0
            ))
        );
        let ms = |m: Option<u64>| m.map_or("-".to_string(), |m| format!("{m} ms"));
        let _ = writeln!(
            s,
            "  kill -> FAULT on {}: {}; -> MASTER on the standby: {}; the rest is the standby's natfw start",
            self.killed,
            ms(self.fault_after_ms),
            ms(self.master_after_ms)
        );
        let _ = writeln!(
            s,
            "connections: {} attempted, {} succeeded ({} after the kill, through the standby), {} failed",
            self.attempts, self.ok, self.ok_after, self.failed
        );
        let _ = writeln!(
            s,
            "leaks: {} packets with a 10.0.0.0/8 source on the internet segment ({} from the EIP seen there)",
            self.leaked, self.from_eip
        );
        let _ = writeln!(
            s,
            "flow records: {} successful connections logged by gwa, {} by gwb, {} by both; {} without a record ({} unexplained), {} records with a wrong SNAT address",
            self.rec_a,
            self.rec_b,
            self.rec_both,
            self.unaccounted.len(),
            self.unexplained,
            self.wrong_snat
        );
        if !self.unaccounted.is_empty() {
            let _ = writeln!(
                s,
                "  (records of flows that ended on the killed gateway within {} ms before the kill were in its memory: no state replication)",
                RECORD_DELAY_MS
            );
        }
        s
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn records(dir: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("flow-{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Under new connections every `interval`, SIGKILL the active gateway's natfw after `before`
/// and keep going for `after`; then stop the pair and account for every connection.
pub fn failover(ha: &mut HaLab, before: Duration, after: Duration) -> Result<Failover, LabError> {
    let active = ha.wait_active(Duration::from_secs(30))?;
    let pid = ha
        .natfw_pid(active)
        .ok_or_else(|| err("failover", "the active gateway runs no natfw"))?;
    let inet = ha.lab.plan.inet_ns().to_owned();
    let leak_cap = ha.lab.capture(&inet, "br0", "src net 10.0.0.0/8")?;
    let eip_cap = ha
        .lab
        .capture(&inet, "br0", &format!("src host {EIP} and tcp"))?;
    let host = ha.lab.plan.hosts[0].ns.clone();
    let bin = ha.lab.opts.natfw_bin.display().to_string();
    let total = before + after;
    let out = std::fs::File::create(ha.lab.dir.join("conn-loop.jsonl"))
        .map_err(|e| err("conn-loop out", e))?;
    let mut client = Command::new("ip")
        .args(["netns", "exec", &host, &bin, "lab", "conn-loop", "--to"])
        .arg(format!("{TARGET_ADDR}:80"))
        .args([
            "--host",
            TARGET,
            "--interval-ms",
            "100",
            "--timeout-ms",
            "1000",
        ])
        .arg("--duration-ms")
        .arg(total.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err("spawn conn-loop", e))?;
    std::thread::sleep(before);
    let kill_ms = unix_ms();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = Instant::now() + total + Duration::from_secs(10);
    while matches!(client.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = client.kill();
    let _ = client.wait();
    let active_after = ha.holder().map(|i| GATEWAYS[i].0.to_string());
    ha.stop();
    let leaked = leak_cap.finish()?.len();
    let from_eip = eip_cap.finish()?.len();
    let attempts: Vec<Attempt> = std::fs::read_to_string(ha.lab.dir.join("conn-loop.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut ports: [HashMap<u16, String>; 2] = [HashMap::new(), HashMap::new()];
    let mut wrong_snat = 0;
    for (i, (name, ..)) in GATEWAYS.iter().enumerate() {
        for r in records(&ha.lab.dir, name) {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            if s("src_ip") != HOST.to_string()
                || s("dst_ip") != TARGET_ADDR.to_string()
                || r.get("dst_port").and_then(Value::as_u64) != Some(80)
            {
                continue;
            }
            if s("snat_ip") != EIP.to_string() {
                wrong_snat += 1;
            }
            if let Some(p) = r
                .get("src_port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
            {
                let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                let summary = format!(
                    "{} {}..{} {} {} pkts {}/{}",
                    s("action"),
                    s("start_time"),
                    s("end_time"),
                    s("end_reason"),
                    s("reason"),
                    n("out_packet_count"),
                    n("in_packet_count")
                );
                ports[i].insert(p, summary);
            }
        }
    }
    let ok: Vec<&Attempt> = attempts.iter().filter(|a| a.ok).collect();
    let (mut rec_a, mut rec_b, mut rec_both) = (0, 0, 0);
    let mut both = Vec::new();
    let mut unaccounted = Vec::new();
    let mut unexplained = 0;
    for a in &ok {
        let Some(p) = a.src_port else { continue };
        let (ia, ib) = (ports[0].contains_key(&p), ports[1].contains_key(&p));
        match (ia, ib) {
            (true, true) => {
                rec_both += 1;
                both.push(format!(
                    "port {p}: attempt {}..{} ms after the kill; gwa: {}; gwb: {}",
                    a.start_ms as i64 - kill_ms as i64,
                    a.end_ms as i64 - kill_ms as i64,
                    ports[0][&p],
                    ports[1][&p]
                ));
            }
            (true, false) => rec_a += 1,
            (false, true) => rec_b += 1,
            (false, false) => {
                // Only the killed gateway loses records, those of flows that ended within
                // RECORD_DELAY_MS before the kill (allowing 200 ms for the client's clock).
                let explained = a.end_ms <= kill_ms + 200 && a.end_ms + RECORD_DELAY_MS >= kill_ms;
                if !explained {
                    unexplained += 1;
                }
                unaccounted.push((*a).clone());
            }
        }
    }
    let after_kill: Vec<&&Attempt> = ok.iter().filter(|a| a.start_ms > kill_ms).collect();
    let event_after = |gi: usize, what: &str| {
        std::fs::read_to_string(ha.lab.dir.join(format!("ha-{}.events", GATEWAYS[gi].0)))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, e) = l.split_once(' ')?;
                let t: u64 = t.parse().ok()?;
                (e.trim() == what && t >= kill_ms).then(|| t - kill_ms)
            })
            .min()
    };
    Ok(Failover {
        killed: GATEWAYS[active].0.to_string(),
        active_after,
        failover_ms: after_kill.iter().map(|a| a.start_ms - kill_ms).min(),
        attempts: attempts.len(),
        ok: ok.len(),
        failed: attempts.len() - ok.len(),
        ok_after: after_kill.len(),
        leaked,
        from_eip,
        rec_a,
        rec_b,
        rec_both,
        both,
        unaccounted,
        unexplained,
        wrong_snat,
        kill_ms,
        fault_after_ms: event_after(active, "fault"),
        master_after_ms: event_after(1 - active, "master"),
    })
}

/// `natfw lab demo --scenario ha`: bring the pair up, kill the active natfw under traffic,
/// print what happened; exit 1 if the standby did not take over, or anything leaked.
pub fn demo(natfw_bin: &Path, keep: bool) -> i32 {
    println!("natfw lab demo: HA pair (two gateways, keepalived VRRP, one policy), tag ha");
    let mut ha = match HaLab::up("ha", natfw_bin) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("HA lab up failed: {e}");
            return 1;
        }
    };
    print!("{}", crate::plan_summary(&ha.lab.plan, &ha.lab.dir));
    println!("  VIP {VIP} (VPC next hop) and EIP {EIP} move together");
    let r = failover(&mut ha, Duration::from_secs(6), Duration::from_secs(8));
    println!("keepalived transitions (unix ms):\n{}", ha.events());
    let code = match r {
        Ok(f) => {
            print!("{}", f.render());
            let ok = f.took_over() && f.leaked == 0 && f.unexplained == 0 && f.wrong_snat == 0;
            println!(
                "{}",
                if ok {
                    "standby took over, nothing leaked"
                } else {
                    "FAILED: see above"
                }
            );
            i32::from(!ok)
        }
        Err(e) => {
            eprintln!("failover run: {e}");
            1
        }
    };
    if keep {
        println!("lab kept up (tag ha); `natfw lab down --tag ha` removes it");
        std::mem::forget(ha);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_moves_the_next_hop_and_the_eip_together() {
        let k = keepalived_conf(0, Path::new("/run/x"), Path::new("/usr/bin/natfw"));
        assert!(k.contains(&format!("{VIP}/24 dev inside0")));
        assert!(k.contains(&format!("{EIP}/24 dev outside0")));
        assert!(k.contains("health --config /run/x/gwa.yaml --standby-ok"));
        assert!(k.contains("unicast_peer {\n    10.10.1.3\n"));
        assert_eq!(k.matches('{').count(), k.matches('}').count());
    }

    #[test]
    fn both_gateways_get_the_same_policy() {
        let strip = |s: String, n: &str| {
            s.replace(&format!("flow-{n}.jsonl"), "F")
                .replace(&format!("lab-ha-{n}"), "N")
        };
        assert_eq!(
            strip(gateway_config("gwa"), "gwa"),
            strip(gateway_config("gwb"), "gwb")
        );
        assert!(gateway_config("gwa").contains("flow_log: flow-gwa.jsonl"));
    }

    #[test]
    fn plan_has_two_gateways_sharing_the_vpc_host() {
        let p = ha_plan("h1");
        assert_eq!(p.gateways.len(), 2);
        let host = &p.hosts[0].ns;
        assert_eq!(p.links.iter().filter(|l| &l.b_ns == host).count(), 2);
    }
}
