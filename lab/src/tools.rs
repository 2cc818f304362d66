//! Small traffic tools the lab runs inside its namespaces (`natfw lab udp-echo`, `udp-rtt`,
//! `http-rate`): a UDP echo service, a UDP round-trip latency probe and a short-HTTP-request
//! connection-rate client. All bounded in count and time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Echo every datagram back to its sender, forever (the lab kills it at `down`).
pub fn udp_echo(bind: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(bind)?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, peer) = sock.recv_from(&mut buf)?;
        // A failed send (e.g. no route back) must not stop the service.
        let _ = sock.send_to(&buf[..n], peer);
    }
}

/// Result of a UDP round-trip probe.
#[derive(Debug, Clone, Serialize)]
pub struct RttStats {
    pub sent: u32,
    pub received: u32,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// Consecutive lost probes after which [`udp_rtt`] gives up (the path is down: do not spend
/// `count × timeout` finding out).
const MAX_CONSECUTIVE_LOSSES: u32 = 20;

/// `count` sequential echo round trips of `size` bytes to `to`, each waiting at most `timeout`;
/// stops early after [`MAX_CONSECUTIVE_LOSSES`] losses in a row (`sent` says how many went).
pub fn udp_rtt(to: SocketAddr, count: u32, size: usize, timeout: Duration) -> io::Result<RttStats> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.connect(to)?;
    sock.set_read_timeout(Some(timeout))?;
    let size = size.clamp(8, 1400);
    // Sequence number, then text: a payload no classifier should mistake for a protocol.
    let mut out: Vec<u8> = b"....natfw lab echo probe "
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    let mut buf = [0u8; 2048];
    let mut samples = Vec::with_capacity(count.min(1 << 20) as usize);
    let (mut sent, mut losses) = (0u32, 0u32);
    for seq in 0..count {
        if losses >= MAX_CONSECUTIVE_LOSSES {
            break;
        }
        sent += 1;
        out[..4].copy_from_slice(&seq.to_be_bytes());
        let t0 = Instant::now();
        sock.send(&out)?;
        // Skip late replies to earlier (timed-out) probes.
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 && buf[..4] == seq.to_be_bytes() => {
                    samples.push(t0.elapsed().as_secs_f64() * 1e6);
                    losses = 0;
                    break;
                }
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => {
                    losses += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(RttStats {
        sent,
        received: samples.len() as u32,
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The `q` quantile (nearest rank) of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Result of a connection-rate run.
#[derive(Debug, Clone, Serialize)]
pub struct RateStats {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// `threads` clients each make up to `per_thread` short HTTP/1.1 requests (new TCP connection,
/// `Connection: close`, read to EOF, expect 200), stopping early at `max_time`.
pub fn http_rate(
    to: SocketAddr,
    host: &str,
    threads: u32,
    per_thread: u32,
    max_time: Duration,
) -> RateStats {
    let start = Instant::now();
    let deadline = start + max_time;
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let req = req.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut buf = [0u8; 1024];
                for _ in 0..per_thread {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match one_request(to, req.as_bytes(), &mut buf) {
                        Ok(true) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        if let Ok((o, f)) = h.join() {
            ok += o;
            failed += f;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    RateStats {
        ok,
        failed,
        seconds,
        per_second: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
    }
}

/// One connection of [`conn_loop`]: when it started and ended (Unix ms), its source port and
/// whether it got `200`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Attempt {
    pub start_ms: u64,
    pub end_ms: u64,
    pub ok: bool,
    pub src_port: Option<u16>,
    pub error: Option<String>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A new HTTP connection every `interval` for `duration` (each on its own thread, so a
/// connection that hangs during a failover does not delay the next), each given `timeout`.
/// Bounded: at most 10,000 attempts.
pub fn conn_loop(
    to: SocketAddr,
    host: &str,
    interval: Duration,
    duration: Duration,
    timeout: Duration,
) -> Vec<Attempt> {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let start = Instant::now();
    let mut handles = Vec::new();
    let interval = interval.max(Duration::from_millis(1));
    for i in 0..10_000u32 {
        let at = start + interval * i;
        if at >= start + duration {
            break;
        }
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let req = req.clone();
        handles.push(std::thread::spawn(move || {
            let start_ms = unix_ms();
            let mut port = None;
            let r = (|| -> io::Result<bool> {
                let mut s = TcpStream::connect_timeout(&to, timeout)?;
                port = s.local_addr().ok().map(|a| a.port());
                s.set_read_timeout(Some(timeout))?;
                s.write_all(req.as_bytes())?;
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if head.len() < 12 {
                        head.extend_from_slice(&buf[..n.min(12)]);
                    }
                }
                Ok(head.starts_with(b"HTTP/1.1 200"))
            })();
            Attempt {
                start_ms,
                end_ms: unix_ms(),
                ok: matches!(r, Ok(true)),
                src_port: port,
                error: match r {
                    Ok(true) => None,
                    Ok(false) => Some("not 200".into()),
                    Err(e) => Some(e.to_string()),
                },
            }
        }));
    }
    handles.into_iter().filter_map(|h| h.join().ok()).collect()
}

fn one_request(to: SocketAddr, req: &[u8], buf: &mut [u8]) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    s.write_all(req)?;
    let mut head = Vec::with_capacity(16);
    loop {
        let n = s.read(buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 12 {
            head.extend_from_slice(&buf[..n.min(12)]);
        }
    }
    Ok(head.starts_with(b"HTTP/1.1 200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), Some(50.0));
        assert_eq!(percentile(&s, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn echo_and_rtt_over_loopback() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        std::thread::spawn(move || udp_echo(addr));
        std::thread::sleep(Duration::from_millis(50));
        let r = udp_rtt(addr, 50, 64, Duration::from_millis(500)).unwrap();
        assert_eq!(r.sent, 50);
        assert!(r.received >= 45, "{r:?}");
        assert!(r.p50_us.unwrap() <= r.p99_us.unwrap());
    }

    #[test]
    fn rtt_gives_up_on_a_dead_path() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = udp_rtt(
            silent.local_addr().unwrap(),
            1000,
            64,
            Duration::from_millis(5),
        )
        .unwrap();
        assert_eq!(r.received, 0);
        assert_eq!(r.sent, MAX_CONSECUTIVE_LOSSES);
        assert_eq!(r.p50_us, None);
    }
}
