//! systemd service notifications (`sd_notify(3)`): datagrams to `$NOTIFY_SOCKET`.
//!
//! `natfw run` says `READY=1` once XDP is attached and the packet worker runs,
//! `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1` around a SIGHUP reload, `STOPPING=1` when
//! it stops, and a `STATUS=` line with flows and drops about once a second. With
//! `WatchdogSec=` set, systemd passes `WATCHDOG_USEC`; `WATCHDOG=1` is then sent at half that
//! interval, but only while the packet worker's heartbeat counter moves: a stuck worker
//! stops the pings and systemd restarts the service. Without `$NOTIFY_SOCKET` (not under
//! systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where notifications go, and the watchdog state.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
    last_feed: Option<Instant>,
    last_beat: u64,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// Linux abstract socket (`@name` in `$NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket.map(PathBuf::from),
            watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()),
        )
    }

    /// Notifications to `socket` (`@name` = abstract); the watchdog expects a ping every
    /// `watchdog`.
    pub fn new(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        let target = socket.and_then(|p| {
            let bytes = p.as_os_str().as_encoded_bytes();
            let t = match bytes.first() {
                Some(b'@') => Target::Abstract(bytes[1..].to_vec()),
                Some(b'/') => Target::Path(p.clone()),
                _ => return None,
            };
            UnixDatagram::unbound().ok().map(|s| (s, t))
        });
        Notifier {
            target,
            watchdog,
            last_feed: None,
            last_beat: 0,
        }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send one notification (lines `KEY=value`). Errors are returned for the caller to log.
    pub fn send(&self, msg: &str) -> std::io::Result<()> {
        let Some((sock, target)) = &self.target else {
            return Ok(());
        };
        match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr).map(|_| ())
            }
        }
    }

    pub fn ready(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={status}\n"))
    }

    pub fn reloading(&self) -> std::io::Result<()> {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\n",
            monotonic_usec()
        ))
    }

    pub fn stopping(&self) -> std::io::Result<()> {
        self.send("STOPPING=1\nSTATUS=stopping\n")
    }

    pub fn status(&self, status: &str) -> std::io::Result<()> {
        self.send(&format!("STATUS={status}\n"))
    }

    /// Call often with the worker's heartbeat counter: pings the watchdog when half its
    /// interval has passed since the last ping and the counter moved since then. Returns
    /// whether a ping was sent.
    pub fn feed_watchdog(&mut self, now: Instant, heartbeat: u64) -> std::io::Result<bool> {
        if !self.enabled()
            || !watchdog_due(
                self.watchdog,
                self.last_feed,
                now,
                self.last_beat,
                heartbeat,
            )
        {
            return Ok(false);
        }
        self.last_feed = Some(now);
        self.last_beat = heartbeat;
        self.send("WATCHDOG=1\n").map(|()| true)
    }
}

/// The watchdog interval systemd asks for: `WATCHDOG_USEC`, if `WATCHDOG_PID` is unset or ours.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

/// The rule: a ping is due when the watchdog is on, half its interval has passed since the last
/// ping (or none was sent yet), and the heartbeat moved since the last ping.
pub fn watchdog_due(
    interval: Option<Duration>,
    last_feed: Option<Instant>,
    now: Instant,
    last_beat: u64,
    beat: u64,
) -> bool {
    let Some(interval) = interval else {
        return false;
    };
    let time = last_feed.is_none_or(|t| now.duration_since(t) >= interval / 2);
    time && beat != last_beat
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_fed_only_while_the_heartbeat_moves() {
        let t0 = Instant::now();
        let w = Some(Duration::from_secs(10));
        assert!(!watchdog_due(None, None, t0, 0, 5), "watchdog off");
        assert!(watchdog_due(w, None, t0, 0, 1), "first ping");
        assert!(
            !watchdog_due(w, Some(t0), t0 + Duration::from_secs(4), 1, 9),
            "too soon"
        );
        assert!(watchdog_due(w, Some(t0), t0 + Duration::from_secs(5), 1, 9));
        assert!(
            !watchdog_due(w, Some(t0), t0 + Duration::from_secs(60), 9, 9),
            "stuck worker"
        );
    }

    #[test]
    fn watchdog_interval_comes_from_systemd_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_arrive_on_a_real_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier::new(Some(path), Some(Duration::from_secs(2)));
        assert!(n.enabled());
        let recv = || {
            let mut b = [0u8; 512];
            let len = rx.recv(&mut b).unwrap();
            String::from_utf8(b[..len].to_vec()).unwrap()
        };
        n.ready("flows 0").unwrap();
        assert_eq!(recv(), "READY=1\nSTATUS=flows 0\n");
        n.reloading().unwrap();
        let r = recv();
        assert!(r.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{r}");
        let t = Instant::now();
        assert!(n.feed_watchdog(t, 1).unwrap());
        assert_eq!(recv(), "WATCHDOG=1\n");
        assert!(
            !n.feed_watchdog(t + Duration::from_secs(5), 1).unwrap(),
            "no heartbeat"
        );
        assert!(n.feed_watchdog(t + Duration::from_secs(5), 2).unwrap());
        assert_eq!(recv(), "WATCHDOG=1\n");
        n.stopping().unwrap();
        assert_eq!(recv(), "STOPPING=1\nSTATUS=stopping\n");
        // Not under systemd: nothing is sent, nothing fails.
        let mut off = Notifier::new(None, Some(Duration::from_secs(1)));
        assert!(!off.enabled());
        off.ready("x").unwrap();
        assert!(!off.feed_watchdog(t, 5).unwrap());
    }
}
