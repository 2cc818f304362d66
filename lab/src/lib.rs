//! The network-namespace lab (`natfw lab up|down|status|demo`): VPC hosts, NAT gateways and an
//! "internet" namespace with real servers (nginx HTTP/HTTPS, dnsmasq, sshd, iperf3, UDP echo),
//! built with `ip netns` + veth and driven through `ip`, `nft` and the servers' own commands.
//!
//! The gateways run either the kernel baseline ([`GatewayMode::Kernel`]: forwarding, nftables
//! SNAT to the EIPs and an L3/L4 ruleset equivalent to what nftables can express of the lab
//! policy) or natfw ([`GatewayMode::Natfw`]: `natfw run` in the gateway namespace; the kernel only
//! SNATs the bypass list). Everything the lab creates is named `natfw-<tag>-*` and its files live
//! in `/run/natfw-lab/<tag>/`, so [`down_tag`] can remove it even after a crash.

pub mod cli;
pub mod compose;
pub mod demo;
pub mod ha;
pub mod plan;
pub mod servers;
pub mod tools;

use std::fmt;
use std::fmt::Write as _;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use plan::{plan, GatewaySpec, HostSpec, Plan, Role, Scenario};

/// Where lab state (configs, certificates, keys, server logs, flow logs) lives, per tag.
pub const STATE_ROOT: &str = "/run/natfw-lab";

/// What `natfw run` prints (stderr) once it forwards.
const NATFW_READY_MARK: &str = "SIGINT/SIGTERM to stop";
/// How long `natfw run` may take to get ready.
const NATFW_READY_TIMEOUT: Duration = Duration::from_secs(90);

fn tail_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// Default timeout of one command the lab runs.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// A lab operation that failed: what was being done and what the command said.
#[derive(Debug)]
pub struct LabError {
    pub context: String,
    pub detail: String,
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.detail.trim_end())
    }
}

impl std::error::Error for LabError {}

fn err(context: impl Into<String>, detail: impl fmt::Display) -> LabError {
    LabError {
        context: context.into(),
        detail: detail.to_string(),
    }
}

/// Who forwards and translates on the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMode {
    /// Kernel forwarding + nftables SNAT + an equivalent L3/L4 ruleset (the baseline).
    Kernel,
    /// natfw forwards SNAT-bound traffic; the kernel only SNATs the bypass list.
    Natfw,
}

/// Settings of a lab instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `natfw` binary (runs `natfw run` and the lab's traffic tools in namespaces).
    pub natfw_bin: PathBuf,
    /// Turn TX checksum offload off on end-host and internet veths (AF_XDP forwarding through
    /// veth otherwise sees partial checksums; see docs/PLATFORM.md).
    pub tx_csum_off: bool,
    /// Gateway mode right after `up`.
    pub mode: GatewayMode,
    /// `gateway.workers` for every `natfw run` of this lab (`None`: the config's own, 1 by
    /// default).
    pub workers: Option<u16>,
}

impl Options {
    /// Defaults for a given `natfw` binary: kernel mode, offloads untouched.
    pub fn new(natfw_bin: PathBuf) -> Options {
        Options {
            natfw_bin,
            tx_csum_off: false,
            mode: GatewayMode::Kernel,
            workers: None,
        }
    }
}

/// Run `cmd`, capturing output, killing it after `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, LabError> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("spawn {what}"), e))?;
    let pipe_reader = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = pipe_reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let errp = pipe_reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(what, format!("timed out after {timeout:?}")));
            }
            Err(e) => return Err(err(what, e)),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: errp.join().unwrap_or_default(),
    })
}

/// Run a command that must succeed; returns its stdout.
fn must(args: &[&str]) -> Result<String, LabError> {
    let (prog, rest) = args
        .split_first()
        .ok_or_else(|| err("run", "empty command"))?;
    let o = run_timeout(Command::new(prog).args(rest), CMD_TIMEOUT)?;
    if !o.status.success() {
        return Err(err(
            args.join(" "),
            format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr)),
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Run `args` inside namespace `ns` (must succeed).
fn ns_must(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    must(&v)
}

/// Every network namespace whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(o) = run_timeout(Command::new("ip").args(["netns", "list"]), CMD_TIMEOUT) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Process ids running in namespace `ns`.
pub fn ns_pids(ns: &str) -> Vec<u32> {
    run_timeout(Command::new("ip").args(["netns", "pids", ns]), CMD_TIMEOUT)
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let mut c = Command::new("kill");
    c.arg(format!("-{sig}"));
    c.args(pids.iter().map(u32::to_string));
    let _ = run_timeout(&mut c, CMD_TIMEOUT);
}

/// Remove every namespace of lab `tag` (killing the processes inside, by pid) and its state
/// directory. Safe to call when nothing exists.
pub fn down_tag(tag: &str) -> Vec<String> {
    let nss = namespaces_with_prefix(&format!("{}{tag}-", plan::NS_PREFIX));
    let pids: Vec<u32> = nss.iter().flat_map(|n| ns_pids(n)).collect();
    signal(&pids, "TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && nss.iter().any(|n| !ns_pids(n).is_empty()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = nss.iter().flat_map(|n| ns_pids(n)).collect();
    signal(&left, "KILL");
    for n in &nss {
        let _ = run_timeout(Command::new("ip").args(["netns", "del", n]), CMD_TIMEOUT);
    }
    let _ = std::fs::remove_dir_all(Path::new(STATE_ROOT).join(tag));
    nss
}

/// Tags with a state directory (labs that were brought up and not taken down).
pub fn known_tags() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|t| plan::valid_tag(t))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A running natfw gateway process.
#[derive(Debug)]
struct NatfwProc {
    gateway: usize,
    child: Child,
}

/// A lab instance: its plan, its state directory and the processes it started. Dropping it does
/// not tear it down; call [`Lab::down`] (tests wrap it in a guard that does).
#[derive(Debug)]
pub struct Lab {
    pub plan: Plan,
    pub dir: PathBuf,
    pub opts: Options,
    children: Vec<Child>,
    natfw: Vec<NatfwProc>,
}

/// The embedded natfw config of a gateway (`examples/lab/*.yaml`).
pub fn gateway_config_text(gw: &GatewaySpec) -> Option<&'static str> {
    Some(match gw.config.as_str() {
        "examples/lab/scenario-1-prod.yaml" => {
            include_str!("../../examples/lab/scenario-1-prod.yaml")
        }
        "examples/lab/scenario-1-test.yaml" => {
            include_str!("../../examples/lab/scenario-1-test.yaml")
        }
        "examples/lab/scenario-2.yaml" => include_str!("../../examples/lab/scenario-2.yaml"),
        "examples/lab/scenario-3.yaml" => include_str!("../../examples/lab/scenario-3.yaml"),
        _ => return None,
    })
}

impl Lab {
    /// Bring `plan` up (idempotent: an instance that is fully up is reused as is; leftovers of a
    /// half-built or crashed one are removed first).
    pub fn up(plan: Plan, opts: Options) -> Result<Lab, LabError> {
        if !plan::valid_tag(&plan.tag) {
            return Err(err("lab up", format!("bad tag {:?}", plan.tag)));
        }
        let dir = Path::new(STATE_ROOT).join(&plan.tag);
        let mut lab = Lab {
            plan,
            dir,
            opts,
            children: Vec::new(),
            natfw: Vec::new(),
        };
        if lab.is_up() {
            lab.set_gateway_mode(lab.opts.mode)?;
            return Ok(lab);
        }
        down_tag(&lab.plan.tag);
        if let Err(e) = lab.build() {
            lab.down();
            return Err(e);
        }
        Ok(lab)
    }

    /// Is this instance complete (ready marker present, every namespace exists, every server
    /// listening)?
    pub fn is_up(&self) -> bool {
        let have = namespaces_with_prefix(&format!("{}{}-", plan::NS_PREFIX, self.plan.tag));
        self.dir.join("ready").exists()
            && self.plan.namespaces.iter().all(|n| have.contains(&n.name))
            && self.servers_listening().is_ok()
    }

    fn build(&mut self) -> Result<(), LabError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| err(format!("mkdir {:?}", self.dir), e))?;
        for n in &self.plan.namespaces {
            must(&["ip", "netns", "add", &n.name])?;
            must(&["ip", "-n", &n.name, "link", "set", "lo", "up"])?;
            let fwd = if matches!(n.role, Role::Gateway | Role::Router) {
                "1"
            } else {
                "0"
            };
            ns_must(
                &n.name,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.ip_forward={fwd}"),
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
        }
        let inet = self.plan.inet_ns().to_owned();
        must(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        let router = format!("{}/{}", plan::INET_ROUTER, plan::INET_PREFIX_LEN);
        must(&["ip", "-n", &inet, "addr", "add", &router, "dev", "br0"])?;
        must(&["ip", "-n", &inet, "link", "set", "br0", "up"])?;
        for a in server_addrs() {
            must(&[
                "ip",
                "-n",
                &inet,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ])?;
        }
        for l in &self.plan.links {
            must(&[
                "ip", "link", "add", "name", &l.a_if, "netns", &l.a_ns, "type", "veth", "peer",
                "name", &l.b_if, "netns", &l.b_ns,
            ])?;
            for (ns, ifn, addr) in [(&l.a_ns, &l.a_if, l.a_addr), (&l.b_ns, &l.b_if, l.b_addr)] {
                if let Some(a) = addr {
                    must(&["ip", "-n", ns, "addr", "add", &a.to_string(), "dev", ifn])?;
                }
                must(&["ip", "-n", ns, "link", "set", ifn, "up"])?;
            }
            if l.b_bridged {
                must(&["ip", "-n", &l.b_ns, "link", "set", &l.b_if, "master", "br0"])?;
            }
        }
        for g in &self.plan.gateways {
            for e in &g.eips {
                let a = format!("{e}/{}", plan::INET_PREFIX_LEN);
                must(&["ip", "-n", &g.ns, "addr", "add", &a, "dev", "outside0"])?;
            }
        }
        for n in &self.plan.namespaces {
            for (dst, via) in &n.routes {
                let d = dst.map_or("default".to_string(), |d| d.to_string());
                must(&[
                    "ip",
                    "-n",
                    &n.name,
                    "route",
                    "add",
                    &d,
                    "via",
                    &via.to_string(),
                ])?;
            }
        }
        if self.opts.tx_csum_off {
            self.tx_csum_off()?;
        }
        self.make_certs()?;
        self.start_servers()?;
        self.set_gateway_mode(self.opts.mode)?;
        std::fs::write(self.dir.join("ready"), self.summary())
            .map_err(|e| err("write ready marker", e))?;
        Ok(())
    }

    fn tx_csum_off(&self) -> Result<(), LabError> {
        for h in &self.plan.hosts {
            ns_must(&h.ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        let inet = self.plan.inet_ns();
        ns_must(inet, &["ethtool", "-K", "br0", "tx", "off"])?;
        for l in self.plan.links.iter().filter(|l| l.b_bridged) {
            ns_must(inet, &["ethtool", "-K", &l.b_if, "tx", "off"])?;
        }
        Ok(())
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn make_certs(&self) -> Result<(), LabError> {
        make_certs(&self.dir)
    }

    /// Start a long-running process in `ns`, output to `<dir>/<log>`.
    fn spawn_in(&mut self, ns: &str, log: &str, args: &[&str]) -> Result<(), LabError> {
        let f = std::fs::File::create(self.dir.join(log)).map_err(|e| err("create log", e))?;
        let f2 = f.try_clone().map_err(|e| err("dup log", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| err(format!("start {}", args.join(" ")), e))?;
        self.children.push(child);
        Ok(())
    }

    fn start_servers(&mut self) -> Result<(), LabError> {
        let inet = self.plan.inet_ns().to_owned();
        let d = self.dir.clone();
        for t in [
            "nginx-body",
            "nginx-proxy",
            "nginx-fastcgi",
            "nginx-uwsgi",
            "nginx-scgi",
            servers::DOWNLOAD_DIR,
        ] {
            std::fs::create_dir_all(d.join(t)).map_err(|e| err("mkdir", e))?;
        }
        let conf = self.path("nginx.conf");
        std::fs::write(&conf, servers::nginx_conf(&d)).map_err(|e| err("write nginx.conf", e))?;
        std::fs::write(d.join("access.log"), "").map_err(|e| err("create access.log", e))?;
        let elog = self.path("nginx-error.log");
        self.spawn_in(
            &inet,
            "nginx.out",
            &["nginx", "-c", &conf, "-e", &elog, "-g", "daemon off;"],
        )?;
        let dns = servers::dnsmasq_args(&d);
        let mut dns_cmd = vec!["dnsmasq"];
        dns_cmd.extend(dns.iter().map(String::as_str));
        self.spawn_in(&inet, "dnsmasq.log", &dns_cmd)?;
        if let Some(r) = self.plan.vpc_resolver.clone() {
            let args = servers::dnsmasq_args_at(&d, r.addr, "dnsmasq-vpc.pid");
            let mut cmd = vec!["dnsmasq"];
            cmd.extend(args.iter().map(String::as_str));
            self.spawn_in(&r.ns, "dnsmasq-vpc.log", &cmd)?;
        }
        let sshd_conf = self.path("sshd_config");
        std::fs::write(
            &sshd_conf,
            servers::sshd_config(&d, plan::SSH_ADDR, plan::SSH_PORT),
        )
        .map_err(|e| err("write sshd_config", e))?;
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| err("mkdir /run/sshd", e))?;
        self.spawn_in(
            &inet,
            "sshd.log",
            &["/usr/sbin/sshd", "-D", "-e", "-f", &sshd_conf],
        )?;
        let (ia, ip_) = (plan::IPERF_ADDR.to_string(), plan::IPERF_PORT.to_string());
        self.spawn_in(
            &inet,
            "iperf3.log",
            &["iperf3", "-s", "-B", &ia, "-p", &ip_],
        )?;
        let echo = format!("{}:{}", plan::ECHO_ADDR, plan::ECHO_PORT);
        let bin = self.opts.natfw_bin.display().to_string();
        self.spawn_in(
            &inet,
            "udp-echo.log",
            &[&bin, "lab", "udp-echo", "--bind", &echo],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.servers_listening() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(err(
                        "servers did not start",
                        format!("{e}; see {:?}", self.dir),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Ok when every server in the internet namespace is listening.
    pub fn servers_listening(&self) -> Result<(), LabError> {
        let ss = ns_must(self.plan.inet_ns(), &["ss", "-Hlntu"])?;
        let mut want: Vec<String> = vec![
            format!("{}:{}", plan::DNS_ADDR, 53),
            format!("{}:{}", plan::ECHO_ADDR, plan::ECHO_PORT),
            format!("{}:{}", plan::SSH_ADDR, plan::SSH_PORT),
            format!("{}:{}", plan::IPERF_ADDR, plan::IPERF_PORT),
        ];
        for w in plan::WEB_NAMES {
            want.push(format!("{}:80", w.addr));
            want.push(format!("{}:443", w.addr));
        }
        let mut missing: Vec<&String> = want.iter().filter(|w| !ss.contains(w.as_str())).collect();
        let vpc = self
            .plan
            .vpc_resolver
            .as_ref()
            .map(|r| (r.ns.clone(), format!("{}:53", r.addr)));
        if let Some((ns, addr)) = &vpc {
            if !ns_must(ns, &["ss", "-Hlnu"])?.contains(addr.as_str()) {
                missing.push(addr);
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(err("not listening", format!("{missing:?}")))
        }
    }

    /// Replace the nftables table of every gateway with the one `mode` needs. The tables a
    /// `natfw run` left behind (its fail-closed guard and NAT, which outlive it by design) go
    /// too when switching to the kernel baseline.
    pub fn set_gateway_mode(&self, mode: GatewayMode) -> Result<(), LabError> {
        for g in &self.plan.gateways {
            let mut tables = vec![("ip", "natfw_lab")];
            if mode == GatewayMode::Kernel {
                tables.extend([("inet", "natfw_guard"), ("inet", "natfw")]);
            }
            for (family, table) in tables {
                let _ = run_timeout(
                    Command::new("ip").args([
                        "netns", "exec", &g.ns, "nft", "delete", "table", family, table,
                    ]),
                    CMD_TIMEOUT,
                );
            }
            let Some(rules) = gateway_nft(g, mode) else {
                continue;
            };
            let path = self.dir.join(format!("nft-{}.conf", g.name));
            std::fs::write(&path, rules).map_err(|e| err("write nft rules", e))?;
            ns_must(&g.ns, &["nft", "-f", &path.display().to_string()])?;
        }
        Ok(())
    }

    /// Run `args` in namespace `ns` with a timeout; returns the output whatever the exit status.
    pub fn exec(&self, ns: &str, args: &[&str], timeout: Duration) -> Result<Output, LabError> {
        run_timeout(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args)
                .current_dir(&self.dir),
            timeout,
        )
    }

    /// Like [`Lab::exec`] on a host by short name.
    pub fn host_exec(
        &self,
        host: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, LabError> {
        let h = self
            .plan
            .host(host)
            .ok_or_else(|| err("host_exec", format!("no host {host}")))?;
        self.exec(&h.ns, args, timeout)
    }

    /// The nginx access log (one line per request; first field = source address seen).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Path of the lab CA certificate (clients verify HTTPS with it).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Flow-log path of gateway `g` while it runs natfw.
    pub fn flow_log(&self, g: &GatewaySpec) -> PathBuf {
        self.dir.join(format!("flow-{}.jsonl", g.name))
    }

    /// Write gateway `gi`'s config into the state dir (flow log `flow-<name>.jsonl` relative to
    /// it) and start `natfw run --config` in its namespace; returns once it reports that it
    /// forwards. Fails (with the end of its output) if it exits or is not ready in 90 s (a debug
    /// build needs ~13 s alone; parallel tests on 2 cores several times that).
    pub fn start_natfw(&mut self, gi: usize) -> Result<(), LabError> {
        let g = self
            .plan
            .gateways
            .get(gi)
            .ok_or_else(|| err("start natfw", "no gateway"))?
            .clone();
        let text = gateway_config_text(&g)
            .ok_or_else(|| err("start natfw", format!("no config {}", g.config)))?;
        self.start_natfw_with(gi, text)
    }

    /// [`Lab::start_natfw`] with the config `text` instead of the gateway's embedded one.
    pub fn start_natfw_with(&mut self, gi: usize, text: &str) -> Result<(), LabError> {
        let g = self
            .plan
            .gateways
            .get(gi)
            .ok_or_else(|| err("start natfw", "no gateway"))?
            .clone();
        let cfg = self.dir.join(format!("{}.yaml", g.name));
        let text = match self.opts.workers {
            Some(n) if !text.contains("\n  workers:") => {
                text.replacen("gateway:\n", &format!("gateway:\n  workers: {n}\n"), 1)
            }
            _ => text.to_string(),
        };
        std::fs::write(&cfg, text).map_err(|e| err("write config", e))?;
        let log_name = format!("natfw-{}.log", g.name);
        let log = std::fs::File::create(self.dir.join(&log_name)).map_err(|e| err("log", e))?;
        let log2 = log.try_clone().map_err(|e| err("log", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &g.ns])
            .arg(&self.opts.natfw_bin)
            .args(["run", "--config"])
            .arg(&cfg)
            // The fast path's pins and handover file stay in this lab (mount a bpffs on
            // `bpf` for pinning to work; `ip netns exec` gives natfw a /sys without one).
            .env("NATFW_PIN_DIR", self.dir.join("bpf"))
            .env("NATFW_HANDOVER_FILE", self.dir.join("handover"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err("spawn natfw run", e))?;
        self.natfw.push(NatfwProc { gateway: gi, child });
        // Ready when it says it forwards (XDP attached, sockets registered, router neighbours
        // probed); traffic sent before that would be lost.
        let deadline = Instant::now() + NATFW_READY_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(self.dir.join(&log_name)).unwrap_or_default();
            let exited = self
                .natfw
                .last_mut()
                .and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(st) = exited {
                self.natfw.pop();
                return Err(err(
                    format!("natfw run in {} exited at start ({st})", g.ns),
                    tail_lines(&out, 8),
                ));
            }
            if out.contains(NATFW_READY_MARK) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(
                    format!(
                        "natfw run in {} not ready after {NATFW_READY_TIMEOUT:?}",
                        g.ns
                    ),
                    tail_lines(&out, 8),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM every natfw this lab started and wait (5 s, then SIGKILL); returns
    /// (gateway name, exit status) per process.
    pub fn stop_natfw(&mut self) -> Vec<(String, Option<ExitStatus>)> {
        let mut out = Vec::new();
        for mut p in self.natfw.drain(..) {
            signal(&[p.child.id()], "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut st = None;
            while Instant::now() < deadline {
                if let Ok(Some(s)) = p.child.try_wait() {
                    st = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if st.is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            out.push((self.plan.gateways[p.gateway].name.clone(), st));
        }
        out
    }

    /// Tear everything down: natfw processes, servers, namespaces, state directory.
    pub fn down(&mut self) {
        self.stop_natfw();
        down_tag(&self.plan.tag);
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Human-readable description of the topology.
    pub fn summary(&self) -> String {
        plan_summary(&self.plan, &self.dir)
    }
}

/// Human-readable description of a topology whose state lives in `dir`.
pub fn plan_summary(p: &Plan, dir: &Path) -> String {
    {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}), tag {}",
            p.scenario,
            p.scenario.describe(),
            p.tag
        );
        for g in &p.gateways {
            let eips: Vec<String> = g.eips.iter().map(Ipv4Addr::to_string).collect();
            let _ = writeln!(
                s,
                "  gateway {:<5} ns {:<22} EIPs {} (own address {})",
                g.name,
                g.ns,
                eips.join(", "),
                g.own_addr
            );
            for e in &g.snat {
                let _ = writeln!(s, "    snat {:<9} {:<15} -> {}", e.name, e.source, e.eip);
            }
            for b in &g.bypass {
                let _ = writeln!(s, "    bypass {b}");
            }
        }
        for h in &p.hosts {
            let _ = writeln!(
                s,
                "  host {:<5} ns {:<22} {:<11} via {}{}",
                h.name,
                h.ns,
                h.addr,
                p.gateways[h.gateway].name,
                if h.bypassed { " (bypassed)" } else { "" }
            );
        }
        let _ = writeln!(s, "  internet ns {}: ", p.inet_ns());
        for w in plan::WEB_NAMES {
            let _ = writeln!(s, "    {:<22} {} (HTTP 80, HTTPS 443)", w.name, w.addr);
        }
        let _ = writeln!(
            s,
            "    dns {}:53  echo {}:{}  ssh {}:{}  iperf3 {}:{}",
            plan::DNS_ADDR,
            plan::ECHO_ADDR,
            plan::ECHO_PORT,
            plan::SSH_ADDR,
            plan::SSH_PORT,
            plan::IPERF_ADDR,
            plan::IPERF_PORT
        );
        let _ = writeln!(
            s,
            "  state dir {} (CA: ca.crt, access.log, flow-*.jsonl)",
            dir.display()
        );
        s
    }
}

/// Make the lab CA, the server certificate for every web name and the sshd host key in `dir`
/// (private keys stay there; nothing secret is in the repository).
pub fn make_certs(dir: &Path) -> Result<(), LabError> {
    let path = |n: &str| dir.join(n).display().to_string();
    let (ca_key, ca_crt) = (path("ca.key"), path("ca.crt"));
    let (key, csr, crt) = (path("server.key"), path("server.csr"), path("server.crt"));
    let ext = path("server.ext");
    std::fs::write(&ext, servers::server_cert_ext()).map_err(|e| err("write ext", e))?;
    must(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-days",
        "2",
        "-subj",
        "/CN=natfw lab CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    must(&[
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=natfw lab servers",
    ])?;
    must(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        &ext,
    ])?;
    let hostkey = path("ssh_host_ed25519_key");
    must(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        &hostkey,
    ])?;
    Ok(())
}

/// Addresses of the internet servers (on the internet namespace's loopback).
pub fn server_addrs() -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = plan::WEB_NAMES.iter().map(|w| w.addr).collect();
    v.extend([
        plan::DNS_ADDR,
        plan::ECHO_ADDR,
        plan::SSH_ADDR,
        plan::IPERF_ADDR,
    ]);
    v
}

/// The nftables ruleset of a gateway in `mode`.
///
/// Kernel: drop unsolicited traffic to the gateway from outside, forward only inside → outside
/// (plus replies), reject the blocked server with a TCP reset (the L3/L4 equivalent of the lab
/// policy's domain rule) except for bypassed sources, SNAT each entry's source to its EIP.
/// Natfw: none (`natfw run` owns SNAT and installs the bypass list's masquerade itself).
pub fn gateway_nft(g: &GatewaySpec, mode: GatewayMode) -> Option<String> {
    let blocked = plan::WEB_NAMES
        .iter()
        .find(|w| w.name == plan::BLOCKED_NAME)
        .map(|w| w.addr)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut s = String::from("table ip natfw_lab {\n");
    match mode {
        GatewayMode::Kernel => {
            s.push_str(
                "  chain input {\n    type filter hook input priority filter; policy accept;\n\
                 \x20   iifname \"outside0\" ct state established,related accept\n\
                 \x20   iifname \"outside0\" drop\n  }\n",
            );
            s.push_str(
                "  chain forward {\n    type filter hook forward priority filter; policy drop;\n\
                 \x20   ct state established,related accept\n",
            );
            for b in &g.bypass {
                let _ = writeln!(
                    s,
                    "    iifname \"inside0\" ip saddr {b} oifname \"outside0\" accept"
                );
            }
            let _ = writeln!(
                s,
                "    iifname \"inside0\" ip daddr {blocked} tcp dport {{ 80, 443 }} reject with tcp reset"
            );
            let _ = writeln!(s, "    iifname \"inside0\" ip daddr {blocked} drop");
            s.push_str("    iifname \"inside0\" oifname \"outside0\" accept\n  }\n");
            s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
            // Bypassed sources leave from the gateway's own address, as under natfw.
            for b in &g.bypass {
                let _ = writeln!(
                    s,
                    "    oifname \"outside0\" ip saddr {b} snat to {}",
                    g.own_addr
                );
            }
            for e in &g.snat {
                let _ = writeln!(
                    s,
                    "    oifname \"outside0\" ip saddr {} snat to {}",
                    e.source, e.eip
                );
            }
            s.push_str("  }\n");
        }
        // `natfw run` installs its own masquerade for the bypass list (restricted to the
        // kernel's port range so return traffic stays apart from natfw's SNAT ports).
        GatewayMode::Natfw => return None,
    }
    s.push_str("}\n");
    Some(s)
}

/// `natfw lab status`: every lab namespace with addresses and processes.
pub fn status() -> String {
    let mut s = String::new();
    let nss = namespaces_with_prefix(plan::NS_PREFIX);
    if nss.is_empty() {
        s.push_str("no natfw lab namespaces\n");
    }
    for t in known_tags() {
        let ready = Path::new(STATE_ROOT).join(&t).join("ready");
        match std::fs::read_to_string(&ready) {
            Ok(summary) => {
                let _ = write!(s, "lab {t}: up\n{summary}");
            }
            Err(_) => {
                let _ = writeln!(
                    s,
                    "lab {t}: incomplete (no ready marker; `natfw lab down` cleans it)"
                );
            }
        }
    }
    for n in &nss {
        let _ = writeln!(s, "namespace {n}");
        if let Ok(o) = run_timeout(
            Command::new("ip").args(["-n", n, "-br", "addr"]),
            CMD_TIMEOUT,
        ) {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = writeln!(s, "    {l}");
            }
        }
        for pid in ns_pids(n) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let _ = writeln!(s, "    pid {pid:<7} {}", cmd.trim_end());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ruleset_snats_every_entry_and_natfw_mode_leaves_nat_to_natfw() {
        let p = plan(Scenario::VSwitches, "x");
        let g = &p.gateways[0];
        let k = gateway_nft(g, GatewayMode::Kernel).expect("kernel rules");
        for e in &g.snat {
            assert!(
                k.contains(&format!("ip saddr {} snat to {}", e.source, e.eip)),
                "{k}"
            );
        }
        assert!(k.contains("reject with tcp reset"));
        assert!(
            k.contains("ip saddr 10.30.9.10/32 snat to 198.51.100.130"),
            "{k}"
        );
        assert!(gateway_nft(g, GatewayMode::Natfw).is_none());
        assert_eq!(k.matches('{').count(), k.matches('}').count());
    }

    #[test]
    fn every_gateway_has_an_embedded_config() {
        for s in Scenario::ALL {
            for g in &plan(s, "x").gateways {
                assert!(gateway_config_text(g).is_some(), "{}", g.config);
            }
        }
    }
}

/// Owns a [`Lab`] and tears it down when dropped, also when a test panics.
#[derive(Debug)]
pub struct LabGuard(pub Lab);

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl std::ops::DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        self.0.down();
    }
}

/// Programs the lab runs (installed by `scripts/lab-deps.sh`).
pub const REQUIRED_PROGRAMS: [&str; 15] = [
    "ip",
    "nft",
    "ethtool",
    "nginx",
    "dnsmasq",
    "sshd",
    "ssh-keyscan",
    "ssh-keygen",
    "iperf3",
    "curl",
    "openssl",
    "dig",
    "ping",
    "tcpdump",
    "ss",
];

fn on_path(prog: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(prog).is_file())
}

/// Why the lab cannot run here (not root, or programs missing), or `Ok`.
pub fn prerequisites() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Err("needs root (network namespaces)".into());
    }
    let missing: Vec<&str> = REQUIRED_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !on_path(p))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing programs {missing:?} (run scripts/lab-deps.sh)"
        ));
    }
    Ok(())
}

/// A running tcpdump writing to a file in the lab's state directory.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Lab {
    /// Start capturing on `iface` in namespace `ns` with a pcap `filter`; returns once tcpdump
    /// is listening (at most 5 s).
    pub fn capture(&self, ns: &str, iface: &str, filter: &str) -> Result<Capture, LabError> {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let file = self.dir.join(format!("cap-{n}.pcap"));
        let errf = self.dir.join(format!("cap-{n}.err"));
        let e = std::fs::File::create(&errf).map_err(|e| err("capture log", e))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-U",
                "-nn",
                "-s",
                "256",
                "-i",
                iface,
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(e)
            .spawn()
            .map_err(|e| err("spawn tcpdump", e))?;
        let mut cap = Capture { child, file };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&errf).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(cap);
            }
            if Instant::now() >= deadline || matches!(cap.child.try_wait(), Ok(Some(_))) {
                let _ = cap.child.kill();
                let _ = cap.child.wait();
                return Err(err("tcpdump did not start", text));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Capture {
    /// Stop the capture and return the captured packets, one tcpdump text line each.
    pub fn finish(mut self) -> Result<Vec<String>, LabError> {
        // Let the last packets be written before stopping.
        std::thread::sleep(Duration::from_millis(200));
        signal(&[self.child.id()], "INT");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let f = self.file.display().to_string();
        let out = must(&["tcpdump", "-nn", "-r", &f])?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use natfw_policy::config::load_str;

    /// The embedded configs load without errors or warnings and describe exactly the gateways
    /// the topology builds (interfaces, EIPs, SNAT entries, bypass list).
    #[test]
    fn embedded_configs_load_and_match_the_topology() {
        for s in Scenario::ALL {
            for g in &plan(s, "x").gateways {
                let text = gateway_config_text(g).expect("config");
                let loaded = load_str(&g.config, text).unwrap_or_else(|d| panic!("{d}"));
                assert!(
                    loaded.warnings.is_empty(),
                    "{}: {:?}",
                    g.config,
                    loaded.warnings
                );
                let gw = &loaded.config.gateway;
                assert_eq!(
                    (gw.inside.as_str(), gw.outside.as_str()),
                    ("inside0", "outside0")
                );
                let eips: Vec<std::net::IpAddr> = g.eips.iter().map(|e| (*e).into()).collect();
                assert_eq!(gw.eips, eips, "{}", g.config);
                assert_eq!(gw.snat.len(), g.snat.len(), "{}", g.config);
                for (c, p) in gw.snat.iter().zip(&g.snat) {
                    assert_eq!(c.source, ipnet::IpNet::V4(p.source), "{}", g.config);
                    assert_eq!(c.eips, vec![std::net::IpAddr::V4(p.eip)], "{}", g.config);
                }
                let bypass: Vec<ipnet::IpNet> = g.bypass.iter().map(|b| (*b).into()).collect();
                assert_eq!(gw.bypass, bypass, "{}", g.config);
                assert_eq!(
                    loaded.config.logging.flow_log,
                    format!("flow-{}.jsonl", g.name)
                );
            }
        }
    }
}
