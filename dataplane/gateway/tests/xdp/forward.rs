//! Live data-path tests in network namespaces (root only):
//!
//! ```text
//!  client 10.0.1.2/24 ── in0 [gateway: natfw / AF_XDP] out0 203.0.113.1/24 (EIP) ── server 203.0.113.2/24
//! ```
//!
//! The gateway has IP forwarding off, so anything that crosses it went through AF_XDP. The
//! end hosts keep veth checksum offload on: forwarded frames carry partial checksums that the
//! I/O layer must complete. Skipped, with the reason printed, when not root or when the kernel
//! lacks network namespaces, veth, XDP or AF_XDP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use natfw_engine::time::Timestamp;
use natfw_gateway::afxdp::{AfXdp, Disposition, FrameHandler, IoStats, PortInfo};
use natfw_gateway::xdp::{Counter, IfSide, Steering, SteeringRules};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const EIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
const EIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// Run `ip ARGS`; its stderr on failure.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three namespaces, deleted on drop (also when the test panics).
struct NetNsGuard {
    client: String,
    gw: String,
    server: String,
}

impl NetNsGuard {
    /// Build the topology; `Err` = the machine cannot (the test is skipped).
    fn new(tag: &str) -> Result<NetNsGuard, String> {
        let p = format!("nfx{}{tag}", std::process::id() % 100_000);
        let g = NetNsGuard {
            client: format!("{p}c"),
            gw: format!("{p}g"),
            server: format!("{p}s"),
        };
        for n in [&g.client, &g.gw, &g.server] {
            let _ = ip(&["netns", "del", n]);
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        let (c, gw, s) = (g.client.as_str(), g.gw.as_str(), g.server.as_str());
        ip(&[
            "-n", gw, "link", "add", "in0", "type", "veth", "peer", "name", "eth0", "netns", c,
        ])?;
        ip(&[
            "-n", gw, "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", s,
        ])?;
        for (ns, dev, addr) in [
            (c, "eth0", "10.0.1.2/24"),
            (gw, "in0", "10.0.1.1/24"),
            (gw, "out0", "203.0.113.1/24"),
            // The gateway's own (non-EIP) address: the kernel SNATs bypassed sources to it.
            (gw, "out0", "203.0.113.254/24"),
            (s, "eth0", "203.0.113.2/24"),
            (s, "eth0", "203.0.113.3/24"),
            // A bypassed host (second address of the client, used towards 203.0.113.3).
            (c, "eth0", "10.0.1.200/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for (ns, dev, addr) in [
            (c, "eth0", "fd00:1::2/64"),
            (gw, "in0", "fd00:1::1/64"),
            (gw, "out0", "2001:db8:1::1/64"),
            (s, "eth0", "2001:db8:1::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev, "nodad"])?;
        }
        ip(&["-n", c, "route", "add", "default", "via", "10.0.1.1"])?;
        ip(&[
            "-n",
            c,
            "route",
            "add",
            "203.0.113.3/32",
            "via",
            "10.0.1.1",
            "src",
            "10.0.1.200",
        ])?;
        ip(&["-n", c, "-6", "route", "add", "default", "via", "fd00:1::1"])?;
        ip(&[
            "-n",
            gw,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::2",
        ])?;
        ip(&["-n", gw, "route", "add", "default", "via", "203.0.113.2"])?;
        // Kernel ports of the gateway (passed to its own stack) apart from the client's.
        sysctl(gw, "net.ipv4.ip_local_port_range", "61000 61999")?;
        sysctl(c, "net.ipv4.ip_local_port_range", "40000 49999")?;
        sysctl(gw, "net.ipv4.ip_forward", "0")?;
        sysctl(gw, "net.ipv6.conf.all.forwarding", "0")?;
        Ok(g)
    }
}

fn sysctl(ns: &str, key: &str, val: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let val = val.to_string();
    in_netns(ns, move || {
        std::fs::write(&path, val).map_err(|e| format!("{path}: {e}"))
    })
    .join()
    .map_err(|_| "sysctl thread panicked".to_string())?
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        for n in [&self.client, &self.gw, &self.server] {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Run `f` on a new thread inside namespace `ns` (setns only affects that thread).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns with a valid namespace fd; it changes only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if natfw_gateway::xdp::PROGRAM.is_empty() {
        return Some("built without the XDP program (no clang)".into());
    }
    None
}

/// A server that answers each connection with "<peer ip> <first line>".
fn echo_server(ns: &str, at: SocketAddr) -> std::thread::JoinHandle<Result<Vec<IpAddr>, String>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = in_netns(ns, move || {
        let l = TcpListener::bind(at).map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let mut peers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while peers.is_empty() && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))
                        .map_err(|e| e.to_string())?;
                    let mut line = String::new();
                    BufReader::new(&s)
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    write!(s, "{} {}", peer.ip(), line).map_err(|e| e.to_string())?;
                    peers.push(peer.ip());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(peers)
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    h
}

/// A server in `ns` on `at` that reads one connection to its end and answers with the number
/// of bytes it got and the peer's address.
fn count_server(ns: &str, at: SocketAddr) -> std::thread::JoinHandle<Result<(), String>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = in_netns(ns, move || {
        let l = TcpListener::bind(at).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let (mut s, peer) = l.accept().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut n = 0u64;
        let mut buf = vec![0u8; 65_536];
        loop {
            match s.read(&mut buf).map_err(|e| e.to_string())? {
                0 => break,
                k => n += k as u64,
            }
        }
        write!(s, "{n} {}", peer.ip()).map_err(|e| e.to_string())
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    h
}

/// Send `bytes` from `ns` to `to` after a first line (which the engine decides the flow on)
/// and its echo; return the server's answer ("<bytes> <peer>").
fn tcp_bulk(ns: &str, to: SocketAddr, bytes: usize) -> Result<String, std::io::Error> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"hello natfw\n")?;
        // Let the engine decide and offload the flow before the bulk.
        std::thread::sleep(Duration::from_millis(300));
        let chunk = vec![0x5au8; 16_384];
        let mut left = bytes;
        while left > 0 {
            let k = left.min(chunk.len());
            s.write_all(&chunk[..k])?;
            left -= k;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

/// Connect from `ns` to `to`, send a line, return the reply.
fn tcp_exchange(ns: &str, to: SocketAddr) -> Result<String, std::io::Error> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"hello natfw\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
    .join()
    .expect("client thread")
}

fn ping(ns: &str, to: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2",
        ])
        .arg(to.to_string())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Check that TCP and ping cross the gateway with the EIP as source.
fn check_snat_path(net: &NetNsGuard, port: u16) {
    let server = echo_server(&net.server, SocketAddr::from((SERVER, port)));
    let reply = tcp_exchange(&net.client, SocketAddr::from((SERVER, port)))
        .expect("TCP connection through the gateway");
    assert_eq!(
        reply,
        format!("{EIP} hello natfw\n"),
        "server must see the EIP"
    );
    let peers = server.join().expect("server thread").expect("server");
    assert_eq!(peers, vec![IpAddr::V4(EIP)]);
    assert!(ping(&net.client, SERVER), "ping through the gateway");
    assert!(
        ping(&net.client, "10.0.1.1".parse().unwrap()),
        "ping the gateway itself"
    );
}

/// Check that TCP over IPv6 crosses the gateway with the IPv6 EIP as source.
fn check_snat_path_v6(net: &NetNsGuard, port: u16) {
    let server = echo_server(&net.server, SocketAddr::from((SERVER6, port)));
    let reply = tcp_exchange(&net.client, SocketAddr::from((SERVER6, port)))
        .expect("TCP/IPv6 connection through the gateway");
    assert_eq!(
        reply,
        format!("{EIP6} hello natfw\n"),
        "server must see the EIP"
    );
    let peers = server.join().expect("server thread").expect("server");
    assert_eq!(peers, vec![IpAddr::V6(EIP6)]);
}

/// A 1:1 static NAT (client <-> EIP, IPv4 and IPv6): a real, minimal handler that exercises the
/// I/O layer (rings, UMEM accounting, MAC rewrite, neighbour lookup) independently of the
/// engine. Like the engine on this path, it rewrites with `wire::rewrite` in full-checksum
/// mode: veth hands over partial checksums and the I/O layer does not complete them.
struct StaticNat;

impl FrameHandler for StaticNat {
    fn handle(&mut self, _now: Timestamp, side: IfSide, frame: &mut [u8]) -> Disposition {
        use natfw_engine::wire::rewrite::{self, ChecksumMode};
        let Ok(info) = natfw_engine::wire::parse(frame) else {
            return Disposition::Consumed;
        };
        let (v4, v6) = match side {
            IfSide::Inside => ((CLIENT, EIP), (CLIENT6, EIP6)),
            IfSide::Outside => ((EIP, CLIENT), (EIP6, CLIENT6)),
        };
        let (from, to) = match info.src {
            IpAddr::V4(_) => (IpAddr::V4(v4.0), IpAddr::V4(v4.1)),
            IpAddr::V6(_) => (IpAddr::V6(v6.0), IpAddr::V6(v6.1)),
        };
        let done = match side {
            IfSide::Inside if info.src == from => {
                rewrite::set_src(frame, &info, to, None, ChecksumMode::Full)
            }
            IfSide::Outside if info.dst == from => {
                rewrite::set_dst(frame, &info, to, None, ChecksumMode::Full)
            }
            _ => return Disposition::ToKernel,
        };
        match done {
            Ok(()) => Disposition::Forward,
            Err(_) => Disposition::Consumed,
        }
    }

    fn take_emits(&mut self, _out: &mut Vec<(IfSide, Vec<u8>)>) {}

    fn tick(&mut self, _now: Timestamp, _io: &IoStats) {}
}

#[test]
fn afxdp_io_forwards_tcp_v4_v6_and_ping_with_static_nat() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let net = match NetNsGuard::new("a") {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: cannot build namespaces: {e}");
            return;
        }
    };
    // A smaller MTU outside: too-big packets from the inside get an ICMP answer.
    ip(&["-n", &net.gw, "link", "set", "out0", "mtu", "1400"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let fwd = {
        let stop = Arc::clone(&stop);
        in_netns(&net.gw, move || {
            let setup = || -> Result<(Steering, Steering, AfXdp), String> {
                let rules = SteeringRules {
                    snat: vec![
                        "10.0.1.0/24".parse().unwrap(),
                        "fd00:1::/64".parse().unwrap(),
                    ],
                    eips: vec![IpAddr::V4(EIP), IpAddr::V6(EIP6)],
                    gateway_addrs: vec![
                        "10.0.1.1".parse().unwrap(),
                        IpAddr::V4(EIP),
                        "fd00:1::1".parse().unwrap(),
                        IpAddr::V6(EIP6),
                    ],
                    kernel_ports: Some(61000..=61999),
                    ..SteeringRules::default()
                };
                let mut si =
                    Steering::load("in0", IfSide::Inside, &rules).map_err(|e| e.to_string())?;
                let mut so =
                    Steering::load("out0", IfSide::Outside, &rules).map_err(|e| e.to_string())?;
                let inside = PortInfo::lookup("in0", IfSide::Inside).map_err(|e| e.to_string())?;
                let outside =
                    PortInfo::lookup("out0", IfSide::Outside).map_err(|e| e.to_string())?;
                let x = AfXdp::open(inside, outside).map_err(|e| e.to_string())?;
                for (side, fd) in x.socket_fds() {
                    let s = if side == IfSide::Inside {
                        &mut si
                    } else {
                        &mut so
                    };
                    s.register_socket(0, fd).map_err(|e| e.to_string())?;
                }
                si.attach().map_err(|e| e.to_string())?;
                so.attach().map_err(|e| e.to_string())?;
                Ok((si, so, x))
            };
            let (si, so, mut x) = match setup() {
                Ok(v) => v,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return None;
                }
            };
            let _ = ready_tx.send(Ok(()));
            x.run(&mut StaticNat, &stop, Duration::from_millis(100));
            let counters = (si.counters().unwrap(), so.counters().unwrap());
            Some((x.stats(), counters, x.frames_unaccounted()))
        })
    };
    match ready_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("skipped: XDP/AF_XDP unavailable here: {e}");
            return;
        }
        Err(_) => panic!("forwarder did not start"),
    }
    check_snat_path(&net, 7000);
    check_snat_path_v6(&net, 7001);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.client,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
        ])
        .args(["-s", "1400", "203.0.113.2"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.0.1.1") && text.contains("mtu = 1400"),
        "fragmentation needed from the gateway: {text}"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.client,
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
        ])
        .args(["-s", "1400", "2001:db8:1::2"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From fd00:1::1") && text.contains("mtu=1400"),
        "packet too big from the gateway: {text}"
    );
    stop.store(true, Ordering::Relaxed);
    let (io, (cin, cout), out) = fwd.join().expect("forwarder").expect("ran");
    eprintln!("io: {io:?}\nin0: {cin}\nout0: {cout}");
    assert!(
        cin.get(Counter::SteeredInside) >= 5,
        "SYN, ACK, data, FIN, pings: {cin}"
    );
    assert!(cout.get(Counter::SteeredOutside) >= 5, "{cout}");
    assert!(
        cin.get(Counter::PassGateway) >= 1,
        "ping to the gateway passes: {cin}"
    );
    assert_eq!(cin.get(Counter::RedirectFailed), 0);
    assert_eq!(io.bad_desc, 0);
    assert!(io.forwarded >= 10, "{io:?}");
    assert_eq!(io.too_big, 2, "{io:?}");
    assert_eq!(io.emitted, 2, "the ICMP answers: {io:?}");
    // Every frame is back in the pool or in a ring: none leaked.
    assert_eq!(out, 0, "frames unaccounted for");
}

/// `natfw run` inside the gateway namespace; killed on drop if still running.
struct Natfw {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Natfw {
    fn start(gw: &str, config: &std::path::Path, log: std::path::PathBuf) -> Natfw {
        Natfw::start_env(gw, config, log, &[])
    }

    fn start_env(
        gw: &str,
        config: &std::path::Path,
        log: std::path::PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Natfw {
        let err = std::fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                gw,
                env!("CARGO_BIN_EXE_natfw"),
                "run",
                "--config",
            ])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn natfw");
        Natfw { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `what`; panics with the log if the process ends first.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log().contains(what) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("natfw exited ({st}) before `{what}`:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("natfw did not log `{what}`:\n{}", self.log());
    }

    /// SIGTERM, then wait for the exit status.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on the pid of our own child (`ip netns exec` execs natfw in place).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "natfw ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Natfw {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `fast_path`: split mode (tc steering, veth slow path) or classic mode (XDP on in0/out0).
fn config(inside: &str, eip: &str, flow_log: &std::path::Path, fast_path: bool) -> String {
    format!(
        "gateway:
  name: test-gw
  fast_path: {fast_path}
  inside: {inside}
  outside: out0
  eips: [{eip}, \"2001:db8:1::1\"]
  snat:
    - {{name: lab, source: 10.0.1.0/24}}
    - {{name: lab6, source: \"fd00:1::/64\"}}
  bypass: [10.0.1.200/32]
firewall: {{enabled: true, mode: loose, default_action: accept, rules: []}}
logging: {{flow_log: {}}}
",
        flow_log.display()
    )
}

fn link_show(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A counter from natfw's last `xdp IFACE: name=value ...` log line.
fn counter(log: &str, iface: &str, name: &str) -> u64 {
    let prefix = format!(" xdp {iface}: ");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        })
        .unwrap_or(0)
}

fn recv_notify(s: &std::os::unix::net::UnixDatagram) -> String {
    let mut b = [0u8; 1024];
    let n = s.recv(&mut b).expect("a notification from natfw");
    String::from_utf8_lossy(&b[..n]).into_owned()
}

fn recv_notify_now(s: &std::os::unix::net::UnixDatagram) -> std::io::Result<String> {
    s.set_nonblocking(true)?;
    let mut b = [0u8; 1024];
    let n = s.recv(&mut b)?;
    Ok(String::from_utf8_lossy(&b[..n]).into_owned())
}

fn nft_table_exists(ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "inet", "natfw"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `natfw run` (the real binary) in the gateway namespace, its whole life: prerequisite
/// errors, replacing a stale program, attach, SNAT of TCP and ping through the engine,
/// unsolicited traffic to the EIP dropped, bypassed sources SNATed by the kernel, SIGTERM,
/// detach, nftables tables left in place until `natfw uninstall`, the flow record written.
#[test]
fn natfw_run_snats_tcp_and_ping_and_drops_unsolicited() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let has_nft = Command::new("nft").arg("--version").output().is_ok();
    if !has_nft {
        eprintln!("skipped: nft (nftables) is not installed");
        return;
    }
    let net = match NetNsGuard::new("r") {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: cannot build namespaces: {e}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let flows = dir.path().join("flows.jsonl");

    // Prerequisites are checked with clear errors.
    ip(&[
        "-n",
        &net.gw,
        "link",
        "add",
        "mq0",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "mq1",
    ])
    .unwrap();
    ip(&["-n", &net.gw, "link", "set", "mq0", "up"]).unwrap();
    for (i, (inside, eip, want)) in [
        (
            "in0",
            "203.0.113.9",
            "EIP 203.0.113.9 is not configured on out0",
        ),
        ("nope0", "203.0.113.1", "no interface named nope0"),
        ("mq0", "203.0.113.1", "mq0 has 2 RX queues"),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&bad, config(inside, eip, &flows, false)).unwrap();
        let mut p = Natfw::start(&net.gw, &bad, dir.path().join(format!("bad{i}.log")));
        let st = p.child.wait().expect("wait");
        assert_eq!(st.code(), Some(1), "{}", p.log());
        assert!(p.log().contains(want), "want `{want}`:\n{}", p.log());
    }

    // Split mode takes every RX queue at tc: a multi-queue inside interface is fine there.
    let split = dir.path().join("split-mq.yaml");
    std::fs::write(&split, config("mq0", "203.0.113.1", &flows, true)).unwrap();
    let mut p = Natfw::start(&net.gw, &split, dir.path().join("split-mq.log"));
    p.wait_for("forwarding mq0 <-> out0");
    let (st, log) = p.terminate();
    assert!(
        st.success(),
        "split mode on a 2-queue interface: {st}:\n{log}"
    );

    // A program left attached (by a crashed loader) is replaced.
    let obj = dir.path().join("stale.o");
    std::fs::write(&obj, natfw_gateway::xdp::PROGRAM).unwrap();
    let stale = ip(&[
        "-n",
        &net.gw,
        "link",
        "set",
        "dev",
        "in0",
        "xdpgeneric",
        "obj",
        obj.to_str().unwrap(),
        "sec",
        "xdp",
    ]);
    match &stale {
        Ok(()) => assert!(link_show(&net.gw, "in0").contains("xdpgeneric")),
        Err(e) => {
            eprintln!("note: cannot pre-attach a stale program ({e}); not checking replacement")
        }
    }

    // Classic mode here (XDP on the interfaces); the ECMP test below runs split mode.
    let good = dir.path().join("natfw.yaml");
    std::fs::write(&good, config("in0", "203.0.113.1", &flows, false)).unwrap();
    // As under systemd: a notify socket and a watchdog of 1 s.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut p = Natfw::start_env(
        &net.gw,
        &good,
        dir.path().join("run.log"),
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("1000000")),
        ],
    );
    let ready = recv_notify(&notify);
    assert!(
        ready.starts_with("READY=1\nSTATUS=forwarding: 0 flows active"),
        "{ready}"
    );
    // READY comes after XDP is attached and the worker forwards.
    assert!(p.log().contains("forwarding in0 <-> out0"), "{}", p.log());
    p.wait_for("XDP attached");
    let mut got = Vec::new();
    while !(got.iter().any(|m: &String| m == "WATCHDOG=1\n")
        && got.iter().any(|m| m.starts_with("STATUS=forwarding:")))
    {
        got.push(recv_notify(&notify));
    }
    // SIGHUP: RELOADING, then READY again.
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGHUP) };
    let reloading = loop {
        let m = recv_notify(&notify);
        if m.starts_with("RELOADING=1") {
            break m;
        }
    };
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");
    loop {
        if recv_notify(&notify).starts_with("READY=1") {
            break;
        }
    }
    let shown = link_show(&net.gw, "in0");
    assert!(shown.contains("prog/xdp"), "{shown}");
    if stale.is_ok() {
        assert!(
            !shown.contains("xdpgeneric"),
            "stale generic program replaced: {shown}"
        );
    }
    assert!(
        nft_table_exists(&net.gw),
        "masquerade table for bypassed sources"
    );

    check_snat_path(&net, 7100);
    check_snat_path_v6(&net, 7101);
    // The gateway's own address is never steered: the kernel answers.
    assert!(
        ping(&net.client, "10.0.1.1".parse().unwrap()),
        "ping the gateway"
    );

    // Unsolicited traffic to the EIP (a port outside the kernel's range) is dropped: the
    // connection times out instead of being refused by the gateway's kernel.
    let unsolicited = in_netns(&net.server, || {
        TcpStream::connect_timeout(&SocketAddr::from((EIP, 7200)), Duration::from_millis(1500))
    })
    .join()
    .expect("server thread");
    match unsolicited {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("unsolicited connection to the EIP must be dropped, got {other:?}"),
    }

    // A bypassed source is forwarded and SNATed by the kernel (to the gateway's non-EIP
    // address), uninspected.
    sysctl(&net.gw, "net.ipv4.ip_forward", "1").unwrap();
    let server = echo_server(&net.server, SocketAddr::from(([203, 0, 113, 3], 7300)));
    let reply = tcp_exchange(&net.client, SocketAddr::from(([203, 0, 113, 3], 7300)))
        .expect("bypassed TCP connection through the kernel");
    assert_eq!(reply, "203.0.113.254 hello natfw\n");
    server.join().expect("server thread").expect("server");
    sysctl(&net.gw, "net.ipv4.ip_forward", "0").unwrap();

    let (st, log) = p.terminate();
    let mut last = String::new();
    while let Ok(m) = recv_notify_now(&notify) {
        last = m;
    }
    assert_eq!(last, "STOPPING=1\nSTATUS=stopping\n");
    assert!(counter(&log, "in0", "pass_bypass") >= 3, "{log}");
    assert!(counter(&log, "in0", "pass_gateway") >= 1, "{log}");
    assert!(st.success(), "natfw exit {st}:\n{log}");
    assert!(
        !link_show(&net.gw, "in0").contains("prog/xdp"),
        "XDP detached on exit"
    );
    assert!(
        !link_show(&net.gw, "out0").contains("prog/xdp"),
        "XDP detached on exit"
    );
    // The tables stay (fail closed) until an explicit uninstall.
    assert!(
        nft_table_exists(&net.gw),
        "nftables tables left in place on exit"
    );
    let un = Command::new("ip")
        .args(["netns", "exec", &net.gw])
        .arg(env!("CARGO_BIN_EXE_natfw"))
        .arg("uninstall")
        .output()
        .expect("natfw uninstall");
    assert!(un.status.success(), "{un:?}");
    assert!(
        !nft_table_exists(&net.gw),
        "nftables tables removed by uninstall"
    );

    // The flow log has the TCP flow, before and after SNAT.
    let text = std::fs::read_to_string(&flows).unwrap_or_default();
    let found = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|r| {
            r["src_ip"] == "10.0.1.2"
                && r["dst_ip"] == "203.0.113.2"
                && r["dst_port"] == 7100
                && r["snat_ip"] == "203.0.113.1"
                && r["ip_protocol"] == "tcp"
        });
    assert!(found, "flow record for the TCP connection:\n{text}\n{log}");
}

/// Next-hop resolution through a link-local IPv6 router (the usual form of an IPv6 default
/// route): the first lookup probes, a later one finds the router's MAC.
#[test]
fn next_hop_via_link_local_router_is_resolved() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let net = match NetNsGuard::new("n") {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: cannot build namespaces: {e}");
            return;
        }
    };
    let (router_ll, router_mac) = in_netns(&net.server, || {
        let idx = natfw_gateway::netlink::if_index("eth0").unwrap();
        let mac = natfw_gateway::netlink::link(idx).unwrap().mac;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ll = natfw_gateway::netlink::addresses()
                .unwrap()
                .into_iter()
                .find(|(i, a)| {
                    *i == idx && matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local())
                });
            if let Some((_, a)) = ll {
                return (a, mac);
            }
            assert!(
                Instant::now() < deadline,
                "no link-local address on the server"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .unwrap();
    let ll = router_ll.to_string();
    ip(&[
        "-n", &net.gw, "-6", "route", "replace", "default", "via", &ll, "dev", "out0",
    ])
    .unwrap();
    let got = in_netns(&net.gw, || {
        let idx = natfw_gateway::netlink::if_index("out0").unwrap();
        let mut hops = natfw_gateway::neigh::NextHops::new(idx);
        let remote: IpAddr = "2001:db8:ffff::7".parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(mac) = hops.resolve(remote, Instant::now()) {
                return (mac, hops.stats);
            }
            assert!(Instant::now() < deadline, "not resolved: {:?}", hops.stats);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .join()
    .unwrap();
    assert_eq!(got.0, router_mac);
    assert!(got.1.probes >= 1, "{:?}", got.1);
}

/// `natfw run` on a gateway whose default routes are ECMP (`RTA_MULTIPATH`) and then nexthop
/// objects (`ip nexthop`, a group of two for IPv4, a single one for IPv6, with the kernel's
/// route compatibility expansion off so only `RTA_NH_ID` is reported): it starts and SNATs
/// through both. A nexthop group whose members all leave by the inside interface is refused
/// with the usual message: the objects are really resolved.
#[test]
fn natfw_run_starts_with_ecmp_and_nexthop_object_default_routes() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: nft (nftables) is not installed");
        return;
    }
    let net = match NetNsGuard::new("m") {
        Ok(n) => n,
        Err(e) => {
            eprintln!("skipped: cannot build namespaces: {e}");
            return;
        }
    };
    let gw = net.gw.as_str();
    let dir = tempfile::tempdir().expect("temp dir");
    let flows = dir.path().join("flows.jsonl");
    // Split mode (the default): tc steering, the engine behind veth pairs.
    let cfg = dir.path().join("natfw.yaml");
    std::fs::write(&cfg, config("in0", "203.0.113.1", &flows, true)).unwrap();
    let run_and_check = |what: &str, port: u16| {
        let mut p = Natfw::start(gw, &cfg, dir.path().join(format!("{what}.log")));
        p.wait_for("forwarding in0 <-> out0");
        check_snat_path(&net, port);
        check_snat_path_v6(&net, port + 1);
        // A bulk IPv6 stream (veth senders: CHECKSUM_PARTIAL, GSO) takes the fast path once
        // decided, and arrives whole (a wrong checksum would stall it).
        let before = std::fs::read_to_string(dir.path().join(format!("{what}.log")))
            .map(|l| counter(&l, "in0", "fastpath_forwarded"))
            .unwrap_or(0);
        let bulk = count_server(&net.server, SocketAddr::from((SERVER6, port + 2)));
        let total = 4 << 20;
        let reply = tcp_bulk(&net.client, SocketAddr::from((SERVER6, port + 2)), total)
            .expect("bulk TCP/IPv6 through the gateway");
        bulk.join().expect("server thread").expect("server");
        assert_eq!(reply, format!("{} {EIP6}", total + 12), "{what}");
        let (st, log) = p.terminate();
        assert!(st.success(), "{what}: natfw exit {st}:\n{log}");
        // The short exchanges above make a few packets at most; the 4 MiB stream is well over
        // 50 frames (GSO super-frames count once here).
        assert!(
            counter(&log, "in0", "fastpath_forwarded") >= before + 50,
            "{what}: the IPv6 stream took the fast path:\n{log}"
        );
        assert!(
            log.contains("tc steering attached; slow path nfw-in-k -> nfw-in-x"),
            "{what}: split mode:\n{log}"
        );
        // The slow-path veth pairs go with a clean stop.
        for dev in ["nfw-in-k", "nfw-out-k"] {
            assert!(link_show(gw, dev).is_empty(), "{what}: {dev} left behind");
        }
    };

    // ECMP: two next hops out of out0 (both addresses of the server).
    ip(&[
        "-n",
        gw,
        "route",
        "replace",
        "default",
        "nexthop",
        "via",
        "203.0.113.2",
        "dev",
        "out0",
        "nexthop",
        "via",
        "203.0.113.3",
        "dev",
        "out0",
    ])
    .unwrap();
    let shown = Command::new("ip")
        .args(["-n", gw, "route", "show", "default"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("nexthop via 203.0.113.3"),
        "ECMP route installed"
    );
    run_and_check("ecmp", 7400);

    // Nexthop objects.
    if let Err(e) = ip(&[
        "-n",
        gw,
        "nexthop",
        "add",
        "id",
        "10",
        "via",
        "203.0.113.2",
        "dev",
        "out0",
    ]) {
        eprintln!("skipped the nexthop-object part: {e}");
        return;
    }
    for args in [
        &[
            "nexthop",
            "add",
            "id",
            "11",
            "via",
            "203.0.113.3",
            "dev",
            "out0",
        ][..],
        &["nexthop", "add", "id", "12", "group", "10/11"],
        &["route", "replace", "default", "nhid", "12"],
        &[
            "-6",
            "nexthop",
            "add",
            "id",
            "20",
            "via",
            "2001:db8:1::2",
            "dev",
            "out0",
        ],
        &["-6", "route", "replace", "default", "nhid", "20"],
    ] {
        let mut a = vec!["-n", gw];
        a.extend_from_slice(args);
        ip(&a).unwrap();
    }
    // Only RTA_NH_ID in route dumps (no expansion into RTA_OIF/RTA_MULTIPATH), where the kernel
    // has the switch.
    let compat = sysctl(gw, "net.ipv4.nexthop_compat_mode", "0");
    if let Err(e) = &compat {
        eprintln!("note: nexthop_compat_mode not settable ({e}); routes also carry the expansion");
    }
    run_and_check("nexthop", 7500);

    // A group leading out of the inside interface only: refused.
    for args in [
        &[
            "nexthop", "add", "id", "30", "via", "10.0.1.2", "dev", "in0",
        ][..],
        &["route", "replace", "default", "nhid", "30"],
    ] {
        let mut a = vec!["-n", gw];
        a.extend_from_slice(args);
        ip(&a).unwrap();
    }
    let mut p = Natfw::start(gw, &cfg, dir.path().join("inside.log"));
    let st = p.child.wait().expect("wait");
    assert_eq!(st.code(), Some(1), "{}", p.log());
    assert!(
        p.log().contains("no IPv4 default route leads out of out0"),
        "{}",
        p.log()
    );
}
