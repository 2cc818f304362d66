//! Ways past the policy, tried with real clients through `natfw run` on the lab's prod gateway
//! (scenario 1: default drop, `*.vendor.test` allowed, `blocked.example.test` denied):
//! - tuple reuse: `curl --local-port` to an allowed name, then from the same source port to the
//!   denied name on the same server address (HTTPS and HTTP);
//! - a TTL-limited decoy ClientHello (it expires after the gateway, before the server) followed
//!   by the real one on the same sequence numbers;
//! - a ClientHello cut into 48-byte segments (the client's MSS clamped), much larger than the
//!   client's initial window, through `openssl s_client`.
//!
//! Root only (prints `SKIP` otherwise); own namespace tags (`natfw-ev<N>-*`), torn down on
//! panic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use natfw_lab::demo::flow_records;
use natfw_lab::{plan, GatewayMode, Lab, LabGuard, Options, Scenario};

const PROD: &str = "10.10.1.10";
/// updates.vendor.test (allowed) and api.vendor.test (allowed): the servers the denied name is
/// pointed at, so that both connections share the whole 5-tuple.
const UPDATES: &str = "203.0.113.10";
const API: &str = "203.0.113.11";

fn up(tag: &str) -> Option<LabGuard> {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab evasion test {tag}: {why}");
        return None;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    let mut lab = LabGuard(Lab::up(plan(Scenario::ProdTest, tag), o).expect("lab up"));
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

fn stop_and_read_log(lab: &mut Lab) -> Vec<Value> {
    for (g, st) in lab.stop_natfw() {
        assert!(
            st.is_some_and(|s| s.success()),
            "natfw on {g} did not exit cleanly on SIGTERM: {st:?}"
        );
    }
    flow_records(lab)
}

fn s(r: &Value, k: &str) -> String {
    match r.get(k) {
        Some(Value::String(v)) => v.clone(),
        Some(v) => v.to_string(),
        None => "null".into(),
    }
}

/// Records of flows from `src`:`sport` to `dst`:`dport`, in log order.
fn records<'a>(recs: &'a [Value], dst: &str, sport: u16, dport: u16) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| {
            s(r, "src_ip") == PROD
                && s(r, "dst_ip") == dst
                && s(r, "src_port") == sport.to_string()
                && s(r, "dst_port") == dport.to_string()
        })
        .collect()
}

fn prod_ns(lab: &Lab) -> String {
    lab.plan.host("prod").expect("prod host").ns.clone()
}

fn sh(lab: &Lab, ns: &str, script: &str) -> (bool, String) {
    let o = lab
        .exec(ns, &["sh", "-c", script], Duration::from_secs(30))
        .expect("exec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// `curl` from prod's `sport` to `name` pointed at `addr`; (exit code, output).
fn curl_from(lab: &Lab, sport: u16, scheme: &str, name: &str, addr: &str) -> (i32, String) {
    let port = if scheme == "https" { 443 } else { 80 };
    let ca = lab.ca_cert().display().to_string();
    let o = lab
        .exec(
            &prod_ns(lab),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "--http1.1",
                "-H",
                "Connection: close",
                "--local-port",
                &sport.to_string(),
                "--cacert",
                &ca,
                "--resolve",
                &format!("{name}:{port}:{addr}"),
                &format!("{scheme}://{name}/"),
            ],
            Duration::from_secs(10),
        )
        .expect("curl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text.trim().to_owned())
}

#[test]
fn a_second_connection_from_the_same_source_port_is_inspected_and_logged() {
    let Some(mut lab) = up("ev1") else {
        return;
    };
    // `Connection: close`: the server usually closes first, so the client's side of the tuple
    // is free at once (the server's TIME_WAIT takes a SYN with a newer sequence number as a
    // new connection). On a loaded machine curl may close first (it has the whole body) and
    // keep the port in TIME_WAIT for a minute: the client namespace keeps no TIME_WAIT
    // sockets, so the tuple is reusable whichever side closed first.
    let ns = prod_ns(&lab);
    let tw = lab
        .exec(
            &ns,
            &["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0"],
            Duration::from_secs(10),
        )
        .expect("sysctl");
    assert!(tw.status.success(), "sysctl tcp_max_tw_buckets: {tw:?}");
    for (scheme, allowed, addr, sport) in [
        ("https", "updates.vendor.test", UPDATES, 41_443),
        ("http", "api.vendor.test", API, 41_080),
    ] {
        let (code, out) = curl_from(&lab, sport, scheme, allowed, addr);
        assert_eq!(code, 0, "{scheme} {allowed}: {out}");
        assert_eq!(out, format!("{allowed} ok"));
        std::thread::sleep(Duration::from_millis(1100));
        // A close still in progress (LAST_ACK waiting for a retransmitted ACK) holds the port
        // a little longer: retry only that local error.
        let mut tries = 0;
        let (code, out) = loop {
            let (code, out) = curl_from(&lab, sport, scheme, plan::BLOCKED_NAME, addr);
            tries += 1;
            if !out.contains("bind failed") || tries == 10 {
                break (code, out);
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_ne!(code, 0, "{scheme}: the denied name answered: {out}");
        assert!(
            out.to_lowercase().contains("reset"),
            "{scheme}: expected a RST, got: {out}"
        );
    }
    assert!(
        !lab.access_log().contains(plan::BLOCKED_NAME),
        "a request for the denied name reached the server:\n{}",
        lab.access_log()
    );
    let recs = stop_and_read_log(&mut lab);
    for (addr, sport, dport, allowed) in [
        (UPDATES, 41_443, 443, "updates.vendor.test"),
        (API, 41_080, 80, "api.vendor.test"),
    ] {
        let rs = records(&recs, addr, sport, dport);
        assert_eq!(
            rs.len(),
            2,
            "one record per connection on the tuple: {rs:#?}"
        );
        assert_eq!(s(rs[0], "domain"), allowed);
        assert_eq!(s(rs[0], "action"), "accept");
        assert_eq!(s(rs[1], "domain"), plan::BLOCKED_NAME);
        assert_eq!(s(rs[1], "action"), "drop");
        assert_eq!(s(rs[1], "acl_rule_id"), "deny-blocked");
    }
}

/// The decoy client: a kernel TCP connection; a raw IPv4 segment with the decoy ClientHello
/// (built by Python's ssl for `decoy`) at the connection's first data sequence number and a
/// small TTL; then the real TLS handshake for `real` on the socket (same sequence numbers).
/// Prints `RESET`, `HANDSHAKE_OK <version>` or `OTHER <error>`.
const DECOY_CLIENT: &str = r#"
import socket, ssl, struct, sys, time
dst, port, decoy, real, cafile, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sniff.bind(("eth0", 0))
sniff.settimeout(0.5)
s = socket.create_connection((dst, port), timeout=5)
src, lport = s.getsockname()
isn_c = isn_s = None
end = time.time() + 3
while time.time() < end and isn_s is None:
    try:
        f = sniff.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 6 or socket.inet_ntoa(ip[12:16]) != dst:
        continue
    sp, dp, seq, ack = struct.unpack("!HHII", ip[ihl:ihl + 12])
    flags = ip[ihl + 13]
    if sp == port and dp == lport and flags & 0x12 == 0x12:
        isn_s, isn_c = seq, (ack - 1) & 0xffffffff
if isn_s is None:
    print("OTHER no SYN-ACK seen"); sys.exit(2)
ctx = ssl.create_default_context(cafile=cafile)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname=decoy)
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
tcp = struct.pack("!HHIIBBHHH", lport, port, (isn_c + 1) & 0xffffffff, (isn_s + 1) & 0xffffffff, 5 << 4, 0x18, 502, 0, 0) + hello
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
c = csum(pseudo + tcp)
tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x1234, 0x4000, ttl, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(iph + tcp, (dst, 0))
time.sleep(0.3)
try:
    t = ctx.wrap_socket(s, server_hostname=real)
    print("HANDSHAKE_OK", t.version())
except (ConnectionResetError, BrokenPipeError):
    print("RESET")
except (ssl.SSLError, OSError) as e:
    print("RESET" if "reset" in str(e).lower() else "OTHER %r" % (e,))
"#;

#[test]
fn a_ttl_limited_decoy_clienthello_gets_the_flow_reset() {
    let Some(mut lab) = up("ev2") else {
        return;
    };
    // The decoy leaves the gateway with TTL 1: where a router would let it expire, the server
    // side drops it (the lab's servers sit right behind the internet router).
    let inet = lab.plan.inet_ns().to_owned();
    let (ok, out) = sh(
        &lab,
        &inet,
        "nft add table ip natfw_ttl && \
         nft add chain ip natfw_ttl pre '{ type filter hook prerouting priority -300; }' && \
         nft add rule ip natfw_ttl pre ip ttl 1 counter drop",
    );
    assert!(ok, "{out}");
    let script = lab.ca_cert().with_file_name("decoy_client.py");
    std::fs::write(&script, DECOY_CLIENT).expect("write the decoy client");
    let ca = lab.ca_cert().display().to_string();
    let cap = lab
        .capture(&inet, "to-prod", "tcp port 443")
        .expect("capture");
    let o = lab
        .exec(
            &prod_ns(&lab),
            &[
                "python3",
                &script.display().to_string(),
                UPDATES,
                "443",
                "updates.vendor.test",
                plan::BLOCKED_NAME,
                &ca,
                "2",
            ],
            Duration::from_secs(20),
        )
        .expect("decoy client");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let pkts = cap.finish().expect("capture read");
    assert!(
        out.trim() == "RESET",
        "expected the real ClientHello to be reset, got: {out}\n{pkts:#?}"
    );
    // The decoy did leave the gateway (and was dropped by the TTL rule, not by natfw).
    let (_, counters) = sh(&lab, &inet, "nft list chain ip natfw_ttl pre");
    assert!(
        !counters.contains("packets 0 "),
        "decoy never arrived: {counters}"
    );
    let recs = stop_and_read_log(&mut lab);
    let rs: Vec<&Value> = recs
        .iter()
        .filter(|r| s(r, "src_ip") == PROD && s(r, "dst_ip") == UPDATES)
        .collect();
    assert_eq!(rs.len(), 1, "{rs:#?}");
    assert_eq!(s(rs[0], "action"), "drop");
    assert_eq!(s(rs[0], "app_dpi_state"), "unknown_strict");
    assert!(
        s(rs[0], "reason").contains("evasion"),
        "{}",
        s(rs[0], "reason")
    );
}

#[test]
fn a_clienthello_in_48_byte_segments_is_identified_before_the_deadline() {
    let Some(mut lab) = up("ev3") else {
        return;
    };
    let ns = prod_ns(&lab);
    // The path's MSS is 48: the server's SYN-ACK is clamped on its way in, so the client cuts
    // everything it sends into 48-byte segments (Linux's smallest send MSS).
    let (ok, out) = sh(
        &lab,
        &ns,
        "nft add table ip natfw_mss && \
         nft add chain ip natfw_mss in '{ type filter hook input priority -150; }' && \
         nft add rule ip natfw_mss in 'tcp flags & (syn | ack) == syn | ack tcp option maxseg size set 48'",
    );
    assert!(ok, "{out}");
    let cap = lab.capture(&ns, "eth0", "tcp port 443").expect("capture");
    // A large ClientHello: every cipher suite and a long ALPN list (about 1.3 KB, 28 segments
    // of 48 bytes: far more than an initial window of 10).
    let alpn: Vec<String> = (0..40)
        .map(|i| format!("x-natfw-lab-protocol-{i:02}"))
        .chain(["http/1.1".to_string()])
        .collect();
    let ca = lab.ca_cert().display().to_string();
    let started = Instant::now();
    let o = lab
        .exec(
            &ns,
            &[
                "sh",
                "-c",
                "printf '' | timeout 10 openssl s_client -brief -connect \"$1\" -servername \"$2\" -CAfile \"$3\" -verify_return_error -cipher 'ALL:@SECLEVEL=0' -alpn \"$4\" 2>&1",
                "s_client",
                &format!("{UPDATES}:443"),
                "updates.vendor.test",
                &ca,
                &alpn.join(","),
            ],
            Duration::from_secs(15),
        )
        .expect("openssl");
    let took = started.elapsed();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let pkts = cap.finish().expect("capture read");
    assert!(
        out.contains("Verification: OK"),
        "handshake failed after {took:?}: {out}"
    );
    // Decided on the name, not by the 5 s identification deadline.
    assert!(
        took < Duration::from_secs(4),
        "the handshake waited {took:?}: identification was starved"
    );
    let client_segs: Vec<usize> = pkts
        .iter()
        .filter(|l| l.contains(&format!("{PROD}.")) && l.contains(" > 203.0.113.10.443"))
        .filter_map(|l| l.rsplit("length ").next()?.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .collect();
    assert!(
        client_segs.len() >= 20 && client_segs.iter().all(|&n| n <= 48),
        "the client did not send small segments: {client_segs:?}"
    );
    let recs = stop_and_read_log(&mut lab);
    let rs: Vec<&Value> = recs
        .iter()
        .filter(|r| s(r, "src_ip") == PROD && s(r, "dst_ip") == UPDATES)
        .collect();
    assert_eq!(rs.len(), 1, "{rs:#?}");
    assert_eq!(s(rs[0], "action"), "accept");
    assert_eq!(s(rs[0], "domain"), "updates.vendor.test");
    assert_eq!(s(rs[0], "acl_rule_id"), "allow-vendor");
    assert_eq!(s(rs[0], "app_dpi_state"), "success");
}
