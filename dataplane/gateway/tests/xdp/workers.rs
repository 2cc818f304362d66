//! Split mode's packet workers: `natfw_steer` sends a steered frame to one worker's slow path
//! by port residue, or a copy to every worker (fragments, ICMP errors, IPv6 extension
//! headers, no readable L4 header). Each frame runs through the program in the kernel
//! (`BPF_PROG_TEST_RUN`) loaded with 1, 2, 3 and 8 workers, and the worker counter (or the
//! broadcast counter) that moved must be the expected one and what the Rust mirror
//! (`xdp::worker_of`) says. A live test sends real frames into an interface and counts what
//! arrives on each worker's XDP end. Root only (SKIP otherwise).

use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use natfw_gateway::xdp::{
    slow_link_names, worker_of, Counter, IfSide, SlowPath, Steering, WorkerChoice,
};

use crate::support::*;

const TC_ACT_REDIRECT: u32 = 7;

/// Where a frame must go, for any worker count.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `port % workers`.
    Port(u16),
    /// Worker 0.
    Zero,
    /// Every worker (worker 0 when there is only one).
    All,
}

impl Want {
    fn of(self, workers: u16) -> WorkerChoice {
        match self {
            _ if workers <= 1 => WorkerChoice::One(0),
            Want::Port(p) => WorkerChoice::One(p % workers),
            Want::Zero => WorkerChoice::One(0),
            Want::All => WorkerChoice::All,
        }
    }
}

fn tcp_ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = ports(sport, dport);
    l4[12] = 0x50;
    l4[13] = 0x10;
    l4
}

fn udp_ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = sport.to_be_bytes().to_vec();
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 8, 0, 0]);
    l4
}

fn icmp(typ: u8, id: u16) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// An ICMP error quoting an IPv4 TCP header (as a router sends it).
fn icmp_error(typ: u8) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0, 0, 0, 0, 0];
    let quoted = v4("203.0.113.1", "198.51.100.7", 6, &tcp_ports(40_001, 443));
    m.extend_from_slice(&quoted[14..14 + 28]);
    m
}

/// IPv4 with one option word (IHL 6) before the L4 header.
fn with_options(mut f: Vec<u8>) -> Vec<u8> {
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.splice(34..34, [1, 1, 1, 0]);
    f
}

/// Steered frames of every class, per side: (name, frame, where it must go).
fn frames(side: IfSide) -> Vec<(String, Vec<u8>, Want)> {
    let (client, server, eip) = ("10.1.2.3", "198.51.100.7", "203.0.113.1");
    let (c6, s6, e6) = ("fd00::5", "2001:db8:ffff::1", "2001:db8::1");
    // (src, dst) of a packet arriving on this side, v4 and v6.
    let (src, dst, src6, dst6) = match side {
        IfSide::Inside => (client, server, c6, s6),
        IfSide::Outside => (server, eip, s6, e6),
    };
    // The port the worker follows: the client's (inside source, outside destination).
    let tu = |client_port: u16, other: u16| match side {
        IfSide::Inside => (client_port, other),
        IfSide::Outside => (other, client_port),
    };
    let echo = match side {
        IfSide::Inside => 8,
        IfSide::Outside => 0,
    };
    let echo6 = match side {
        IfSide::Inside => 128,
        IfSide::Outside => 129,
    };
    let mut out: Vec<(String, Vec<u8>, Want)> = Vec::new();
    for p in (40_000u16..40_008).chain([12_345, 1]) {
        let (s, d) = tu(p, 443);
        out.push((
            format!("TCP {p}"),
            v4(src, dst, 6, &tcp_ports(s, d)),
            Want::Port(p),
        ));
        let (s, d) = tu(p, 53);
        out.push((
            format!("UDP {p}"),
            v4(src, dst, 17, &udp_ports(s, d)),
            Want::Port(p),
        ));
        out.push((
            format!("v6 TCP {p}"),
            v6(src6, dst6, 6, &tcp_ports(tu(p, 443).0, tu(p, 443).1)),
            Want::Port(p),
        ));
        out.push((
            format!("v6 UDP {p}"),
            v6(src6, dst6, 17, &udp_ports(tu(p, 53).0, tu(p, 53).1)),
            Want::Port(p),
        ));
        out.push((
            format!("TCP {p} with IP options"),
            with_options(v4(src, dst, 6, &tcp_ports(tu(p, 80).0, tu(p, 80).1))),
            Want::Port(p),
        ));
    }
    for id in [7u16, 8, 9, 0xffff] {
        out.push((
            format!("ICMP echo id {id}"),
            v4(src, dst, 1, &icmp(echo, id)),
            Want::Port(id),
        ));
        out.push((
            format!("ICMPv6 echo id {id}"),
            v6(src6, dst6, 58, &icmp(echo6, id)),
            Want::Port(id),
        ));
    }
    let (s, d) = tu(40_001, 53);
    let udp = udp_ports(s, d);
    out.extend([
        (
            "first fragment (MF)".to_string(),
            v4_with(eth(0x0800), src, dst, 17, 0x2000, &udp),
            Want::All,
        ),
        (
            "later fragment".to_string(),
            v4_with(eth(0x0800), src, dst, 17, 0x00b9, &udp),
            Want::All,
        ),
        (
            "DF only: no fragment".to_string(),
            v4_with(eth(0x0800), src, dst, 17, 0x4000, &udp),
            Want::Port(40_001),
        ),
        (
            "ICMP unreachable".to_string(),
            v4(src, dst, 1, &icmp_error(3)),
            Want::All,
        ),
        (
            "ICMP time exceeded".to_string(),
            v4(src, dst, 1, &icmp_error(11)),
            Want::All,
        ),
        (
            "ICMP parameter problem".to_string(),
            v4(src, dst, 1, &icmp_error(12)),
            Want::All,
        ),
        (
            "ICMP timestamp".to_string(),
            v4(src, dst, 1, &icmp(13, 9)),
            Want::Zero,
        ),
        (
            "ICMPv6 unreachable".to_string(),
            v6(src6, dst6, 58, &icmp_error(1)),
            Want::All,
        ),
        (
            "ICMPv6 too big".to_string(),
            v6(src6, dst6, 58, &icmp_error(2)),
            Want::All,
        ),
        (
            "ICMPv6 node information".to_string(),
            v6(src6, dst6, 58, &icmp(139, 9)),
            Want::Zero,
        ),
        (
            "IPv6 fragment header".to_string(),
            v6(
                src6,
                dst6,
                44,
                &[17, 0, 0, 1, 0, 0, 0, 1, 0x9c, 0x41, 0, 53],
            ),
            Want::All,
        ),
        (
            "IPv6 hop-by-hop".to_string(),
            v6(src6, dst6, 0, &[6, 0, 1, 4, 0, 0, 0, 0]),
            Want::All,
        ),
        ("GRE".to_string(), v4(src, dst, 47, &[0; 8]), Want::Zero),
        (
            "TCP header cut short".to_string(),
            v4(src, dst, 6, &tcp_ports(1, 2)[..12]),
            Want::All,
        ),
        (
            "UDP header cut short".to_string(),
            v4(src, dst, 17, &udp[..6]),
            Want::All,
        ),
        (
            "ICMP header cut short".to_string(),
            v4(src, dst, 1, &[8, 0, 0, 0]),
            Want::All,
        ),
        (
            "options, TCP cut short behind them".to_string(),
            with_options(v4(src, dst, 6, &tcp_ports(1, 2)[..16])),
            Want::All,
        ),
    ]);
    // An in-frame VLAN tag is read past.
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0, 5, 0x08, 0x00]);
    let (s, d) = tu(40_002, 443);
    out.push((
        "802.1Q TCP".to_string(),
        v4_with(tagged, src, dst, 6, 0, &tcp_ports(s, d)),
        Want::Port(40_002),
    ));
    out
}

/// Placeholder slow paths for `n` workers (nothing attached: ifindex 0, a redirect there is
/// dropped by the kernel).
fn no_slow_paths(n: usize) -> Vec<SlowPath> {
    (0..n)
        .map(|w| {
            let [(k, x), _] = slow_link_names(w);
            SlowPath {
                kernel_end: k,
                kernel_ifindex: 0,
                xdp_end: x,
                xdp_ifindex: 0,
                wire_ifindex: 0,
            }
        })
        .collect()
}

/// The worker choice the counters show for one run of `natfw_steer` on `frame`.
fn kernel_choice(s: &mut Steering, name: &str, frame: &[u8]) -> WorkerChoice {
    let before = s.counters().unwrap();
    let action = s
        .test_run_steer(frame)
        .unwrap_or_else(|e| panic!("{name}: test run: {e}"));
    let after = s.counters().unwrap();
    let (dist, other): (Vec<Counter>, Vec<Counter>) = Counter::ALL
        .into_iter()
        .filter(|c| after.get(*c) != before.get(*c))
        .partition(|c| c.is_distribution());
    assert_eq!(action, TC_ACT_REDIRECT, "{name}: not steered ({other:?})");
    assert!(
        other.len() == 1 && matches!(other[0], Counter::SteeredInside | Counter::SteeredOutside),
        "{name}: {other:?}"
    );
    assert_eq!(dist.len(), 1, "{name}: worker counters moved: {dist:?}");
    for c in &dist {
        assert_eq!(
            after.get(*c) - before.get(*c),
            1,
            "{name}: {c:?} counts once"
        );
    }
    match dist[0] {
        Counter::SteeredBroadcast => WorkerChoice::All,
        c => WorkerChoice::One(c.worker().expect("a worker slot") as u16),
    }
}

#[test]
fn steering_picks_the_worker_by_port_residue_and_copies_the_rest_to_every_worker() {
    if skip() {
        return;
    }
    // The kernel cannot load the program at all: skipped (as the other tests are).
    if load(IfSide::Inside).is_none() {
        return;
    }
    let mut differ = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for side in [IfSide::Inside, IfSide::Outside] {
        // Classic-style load (no slow paths: one worker) and split mode with 1..8 workers.
        for workers in [0usize, 1, 2, 3, 8] {
            let slow = (workers > 0).then(|| no_slow_paths(workers));
            let mut s = Steering::load_with("lo", side, &rules(), slow)
                .unwrap_or_else(|e| panic!("{workers} workers: {e}"));
            let n = workers.max(1) as u16;
            for (name, frame, want) in frames(side) {
                let want = want.of(n);
                let kernel = kernel_choice(&mut s, &name, &frame);
                let rust = worker_of(side, &frame, n);
                seen.insert((n, format!("{kernel:?}")));
                if kernel != want || rust != want {
                    differ.push(format!(
                        "{side:?} {workers} workers, {name}: kernel {kernel:?}, Rust {rust:?}, want {want:?}"
                    ));
                }
            }
            if n == 1 {
                let c = s.counters().unwrap();
                assert_eq!(c.get(Counter::SteeredBroadcast), 0, "one worker: no copies");
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Every worker of 3 and 8 was chosen, and copies were made.
    for n in [3u16, 8] {
        for w in 0..n {
            assert!(
                seen.contains(&(n, format!("{:?}", WorkerChoice::One(w)))),
                "{n}: {w}"
            );
        }
        assert!(seen.contains(&(n, format!("{:?}", WorkerChoice::All))));
    }
}

/// More or fewer slow paths than the program has room for are refused at load.
#[test]
fn split_mode_needs_one_to_eight_slow_paths() {
    if skip() {
        return;
    }
    for n in [0, 9] {
        let r = Steering::load_with("lo", IfSide::Inside, &rules(), Some(no_slow_paths(n)));
        let e = r.expect_err("refused");
        assert!(e.to_string().contains("1 to 8 slow paths"), "{n}: {e}");
    }
}

use crate::forward::ip;

/// A network namespace, deleted on drop (with every link in it).
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Packets that arrived on `dev` (its RX counter: for a veth, what its peer sent, counted
/// before XDP runs).
fn rx_packets(ns: &str, dev: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip -s link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("{dev}: no rx packets in {v}"))
}

/// Send `frame` out of `ifindex` from a packet socket (the calling thread's namespace).
fn send_raw(ifindex: u32, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, valid descriptor that nothing else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: `frame` is valid for `frame.len()` bytes and `addr` for its size during the call.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Real frames into a real interface with `natfw_steer` attached and three workers' veth
/// pairs: a unicast frame arrives on its worker's XDP end only, a fragment on all three.
/// `natfw_slow` drops everything there (no socket bound) after the end counted it.
#[test]
fn a_broadcast_frame_arrives_on_every_worker_and_a_unicast_one_on_its_own() {
    if skip() {
        return;
    }
    let ns = NetNs(format!("nfxw{}", std::process::id() % 100_000));
    let _ = ip(&["netns", "del", &ns.0]);
    let setup = || -> Result<(), String> {
        ip(&["netns", "add", &ns.0])?;
        for key in ["all", "default"] {
            // No IPv6 on the test's links: no router solicitations or MLD reports that
            // would count as arrivals.
            let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            ip(&[
                "netns",
                "exec",
                &ns.0,
                "sh",
                "-c",
                &format!("echo 1 > {path}"),
            ])?;
        }
        ip(&[
            "-n", &ns.0, "link", "add", "wire0", "type", "veth", "peer", "name", "wirep",
        ])?;
        for w in 0..3 {
            let [(k, x), _] = slow_link_names(w);
            ip(&[
                "-n", &ns.0, "link", "add", &k, "type", "veth", "peer", "name", &x,
            ])?;
            ip(&["-n", &ns.0, "link", "set", &k, "up"])?;
            ip(&["-n", &ns.0, "link", "set", &x, "up"])?;
        }
        for d in ["lo", "wire0", "wirep"] {
            ip(&["-n", &ns.0, "link", "set", d, "up"])?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("skipped: cannot build the namespace: {e}");
        return;
    }
    let names: Vec<(String, String)> = (0..3).map(|w| slow_link_names(w)[0].clone()).collect();
    let nsname = ns.0.clone();
    let names2 = names.clone();
    let path = format!("/run/netns/{nsname}");
    // Everything in the namespace runs on one thread (setns affects only it).
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let worker = std::thread::spawn(move || -> Result<(u64, u64), String> {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        // SAFETY: setns with a valid namespace fd; it changes only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let idx = |n: &str| natfw_gateway::netlink::if_index(n).map_err(|e| format!("{n}: {e}"));
        let wire = idx("wire0")?;
        let peer = idx("wirep")?;
        let mut slow = Vec::new();
        for (k, x) in &names2 {
            slow.push(SlowPath {
                kernel_end: k.clone(),
                kernel_ifindex: idx(k)?,
                xdp_end: x.clone(),
                xdp_ifindex: idx(x)?,
                wire_ifindex: wire,
            });
        }
        let mut s = Steering::load_with("wire0", IfSide::Inside, &rules(), Some(slow))
            .map_err(|e| e.to_string())?;
        if let Err(e) = s.attach() {
            let _ = done_tx.send(Err(format!("attach: {e}")));
            return Err(String::new());
        }
        let _ = done_tx.send(Ok(()));
        for frame in rx {
            let r = send_raw(peer, &frame).map_err(|e| format!("send: {e}"));
            let _ = done_tx.send(r);
        }
        let c = s.counters().map_err(|e| e.to_string())?;
        Ok((
            c.get(Counter::SteeredBroadcast),
            c.get(Counter::RedirectFailed),
        ))
    });
    match done_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("skipped: tc/XDP attach unavailable here: {e}");
            drop(tx);
            let _ = worker.join();
            return;
        }
        Err(_) => {
            drop(tx);
            panic!("setup failed: {:?}", worker.join());
        }
    }
    let counts = || -> Vec<u64> { names.iter().map(|(_, x)| rx_packets(&nsname, x)).collect() };
    // Send one frame; wait until the arrivals stop changing; return them per worker.
    let send = |frame: Vec<u8>| -> Vec<u64> {
        let before = counts();
        tx.send(frame).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("sender thread")
            .expect("sent");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = counts();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = counts();
            if (now == last && now != before) || Instant::now() > deadline {
                break now.iter().zip(&before).map(|(a, b)| a - b).collect();
            }
            last = now;
        }
    };
    let src = "10.1.2.3";
    let dst = "198.51.100.7";
    for (p, want) in [
        (40_000u16, 40_000 % 3),
        (40_001, 40_001 % 3),
        (40_002, 40_002 % 3),
    ] {
        let got = send(v4(src, dst, 6, &tcp_ports(p, 443)));
        let mut expect = vec![0u64; 3];
        expect[want as usize] = 1;
        assert_eq!(got, expect, "TCP from port {p}: arrivals per worker");
    }
    let frag = v4_with(eth(0x0800), src, dst, 17, 0x2000, &udp_ports(40_000, 53));
    assert_eq!(send(frag), vec![1, 1, 1], "a fragment reaches every worker");
    let err = v4(src, dst, 1, &icmp_error(3));
    assert_eq!(
        send(err),
        vec![1, 1, 1],
        "an ICMP error reaches every worker"
    );
    drop(tx);
    let (broadcast, dropped) = worker.join().expect("thread").expect("counters");
    assert_eq!(broadcast, 2, "broadcast counter");
    // natfw_slow found each end's worker and, with no socket bound, dropped: 3 + 2 * 3.
    assert_eq!(dropped, 9, "natfw_slow drops (no socket)");
}
