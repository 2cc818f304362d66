//! Small-packet UDP tools for the lab harness's queued-burst drain (`udp_drain_60b`).
//!
//! * `send`: from one UDP socket bound to `--sport`, send `--count` datagrams of 18 bytes of
//!   payload (60-byte Ethernet frames) to `--to`. A send that blocks longer than
//!   `--timeout-ms` (socket send buffer full) ends the run early; the JSON says how many left.
//!   Packets held in a qdisc stay charged to the socket's send buffer, so it is raised with
//!   `SO_SNDBUFFORCE` (root) to `--sndbuf` bytes (default 1 GiB; about 1 KiB per packet).
//!   To port 53 the payload is a 17-byte DNS query instead (59-byte frames), which a DNS-aware
//!   gateway keeps inspecting.
//! * `sink`: bind `--bind` (so the server's kernel answers no ICMP port-unreachable), never
//!   read, print `ready`, wait for a line on stdin, then poll the counter file `--counter`
//!   (a `rx_packets` statistics file) until it has changed and then stayed still for
//!   `--idle-ms`. Prints one JSON object: `delta` (packets counted), `dur_s` (from the last poll
//!   before the first change to the first poll that saw the final value) and `pps`.
//!
//! ```text
//! udp_burst send --to 203.0.113.5:9000 --sport 40000 --count 300000 [--timeout-ms 2000] [--sndbuf BYTES]
//! udp_burst sink --bind 203.0.113.5:9000 --counter /sys/class/net/X/statistics/rx_packets \
//!     [--idle-ms 300] [--wait-s 20] [--interval-us 500]
//! ```

use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

/// UDP payload: 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 = 60 bytes on the wire.
const PAYLOAD_LEN: usize = 18;

fn usage() -> ExitCode {
    eprintln!(
        "usage: udp_burst send --to ADDR:PORT --sport PORT --count N [--timeout-ms MS] [--sndbuf BYTES]\n       \
         udp_burst sink --bind ADDR:PORT --counter FILE [--idle-ms MS] [--wait-s S] [--interval-us US]"
    );
    ExitCode::from(2)
}

struct Opts {
    to: Option<SocketAddr>,
    sport: u16,
    count: u64,
    timeout_ms: u64,
    sndbuf: i32,
    counter: String,
    idle_ms: u64,
    wait_s: u64,
    interval_us: u64,
}

fn parse(args: &[String]) -> Option<Opts> {
    let mut o = Opts {
        to: None,
        sport: 0,
        count: 0,
        timeout_ms: 2000,
        sndbuf: 1 << 30,
        counter: String::new(),
        idle_ms: 300,
        wait_s: 20,
        interval_us: 500,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next()?;
        match k.as_str() {
            "--to" | "--bind" => o.to = Some(v.parse().ok()?),
            "--sport" => o.sport = v.parse().ok()?,
            "--count" => o.count = v.parse::<u64>().ok()?.min(10_000_000),
            "--timeout-ms" => o.timeout_ms = v.parse::<u64>().ok()?.clamp(1, 60_000),
            "--sndbuf" => o.sndbuf = v.parse::<i32>().ok()?.clamp(4096, 1 << 30),
            "--counter" => o.counter = v.clone(),
            "--idle-ms" => o.idle_ms = v.parse::<u64>().ok()?.clamp(10, 10_000),
            "--wait-s" => o.wait_s = v.parse::<u64>().ok()?.clamp(1, 120),
            "--interval-us" => o.interval_us = v.parse::<u64>().ok()?.clamp(50, 100_000),
            _ => return None,
        }
    }
    Some(o)
}

fn send(o: &Opts) -> Result<serde_json::Value, String> {
    let to = o.to.ok_or("--to missing")?;
    let sock = UdpSocket::bind(("0.0.0.0", o.sport)).map_err(|e| format!("bind: {e}"))?;
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    let v: libc::c_int = o.sndbuf;
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a live c_int and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "SO_SNDBUFFORCE: {}",
            std::io::Error::last_os_error()
        ));
    }
    sock.set_write_timeout(Some(Duration::from_millis(o.timeout_ms)))
        .map_err(|e| format!("timeout: {e}"))?;
    // To the DNS port: a real query (the root's A record, 17 bytes) so that a gateway that
    // inspects DNS keeps watching the flow; anything else: 18 filler bytes.
    let dns: [u8; 17] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
    ];
    let filler = [0x5au8; PAYLOAD_LEN];
    let payload: &[u8] = if to.port() == 53 { &dns } else { &filler };
    let t0 = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut last_error = String::new();
    while sent < o.count {
        match sock.send(payload) {
            Ok(_) => sent += 1,
            Err(e) => {
                errors += 1;
                last_error = e.to_string();
                // A full send buffer (timeout) or repeated errors: stop, say so.
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) || errors > 1000
                {
                    break;
                }
            }
        }
    }
    Ok(json!({
        "sent": sent,
        "errors": errors,
        "last_error": last_error,
        "seconds": t0.elapsed().as_secs_f64(),
    }))
}

fn read_counter(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn sink(o: &Opts) -> Result<serde_json::Value, String> {
    let at = o.to.ok_or("--bind missing")?;
    let _sock = UdpSocket::bind(at).map_err(|e| format!("bind {at}: {e}"))?;
    let c0 = read_counter(&o.counter).ok_or_else(|| format!("cannot read {}", o.counter))?;
    println!("ready");
    // Wait for the go line (or EOF: then start at once).
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let c0 = read_counter(&o.counter).unwrap_or(c0);
    let iv = Duration::from_micros(o.interval_us);
    let idle = Duration::from_millis(o.idle_ms);
    let start = Instant::now();
    let mut prev = start;
    let (t_first, mut t_last, mut last);
    loop {
        let t = Instant::now();
        let c = read_counter(&o.counter).ok_or("counter unreadable")?;
        if c != c0 {
            t_first = prev;
            t_last = t;
            last = c;
            break;
        }
        prev = t;
        if t.duration_since(start) > Duration::from_secs(o.wait_s) {
            return Err(format!("no packet counted in {} s", o.wait_s));
        }
        std::thread::sleep(iv);
    }
    let hard_end = Instant::now() + Duration::from_secs(o.wait_s);
    loop {
        std::thread::sleep(iv);
        let t = Instant::now();
        let c = read_counter(&o.counter).ok_or("counter unreadable")?;
        if c != last {
            last = c;
            t_last = t;
        } else if t.duration_since(t_last) > idle || t > hard_end {
            break;
        }
    }
    let delta = last.saturating_sub(c0);
    let dur = t_last.duration_since(t_first).as_secs_f64();
    let pps = if dur > 0.0 { delta as f64 / dur } else { 0.0 };
    Ok(json!({ "delta": delta, "dur_s": dur, "pps": pps }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    let Some(o) = parse(rest) else {
        return usage();
    };
    let r = match cmd.as_str() {
        "send" => send(&o),
        "sink" => sink(&o),
        _ => return usage(),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udp_burst {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
