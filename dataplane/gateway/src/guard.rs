//! What protects the gateway when natfw is not forwarding, and what keeps two `natfw run`s
//! apart.
//!
//! Two nftables tables, installed by `natfw run` (and `natfw guard`) and **left in place when it
//! exits or crashes**, removed only by `natfw uninstall`:
//!
//! - `inet natfw_guard`, a filter chain on the forward hook (priority `raw`, before any other
//!   filter chain). It drops what the kernel would otherwise forward for the VPC: packets from
//!   the inside interface whose source is in an SNAT entry (`fail_mode: closed`; while natfw
//!   runs XDP steers these to the engine, so the kernel only sees them when natfw is not
//!   forwarding), packets from the inside whose source is in no SNAT entry (spoofed or foreign
//!   sources, always), and packets from the outside to the inside that belong to no connection
//!   the kernel knows. Bypassed sources are accepted (their kernel NAT keeps working). Each drop
//!   is counted in a named counter ([`GuardCounters`]).
//! - `inet natfw`, the source NAT the kernel applies: bypassed sources to the outside
//!   interface's own address, and with `fail_mode: open` every SNAT entry to its first EIP (used
//!   only while natfw is not forwarding; while it runs, XDP hands those packets to the engine
//!   before the kernel sees them).
//!
//! The kernel fast path for offloaded flows (tc-BPF redirect) runs before netfilter, so flows
//! it carries are neither affected by nor dependent on these tables.
//!
//! The instance lock ([`InstanceLock`]) is an exclusive `flock` on
//! `/run/natfw/<network namespace>.lock`, taken before anything on the system is touched.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::IpNet;
use natfw_policy::{Config, FailMode, SnatEntry};

/// The forward-filter table (fail-closed guard, foreign-source drops).
pub const GUARD_TABLE: &str = "natfw_guard";
/// The kernel NAT table (bypassed sources; SNAT entries with `fail_mode: open`).
pub const NAT_TABLE: &str = "natfw";
/// Directory of the instance locks.
pub const LOCK_DIR: &str = "/run/natfw";

/// Names of the guard's counters, in [`GuardCounters`] order.
pub const COUNTERS: [&str; 3] = ["snat_unsteered", "not_snat", "inbound_unsolicited"];

/// What the guard and NAT tables are built from.
#[derive(Debug, Clone)]
pub struct Spec {
    pub inside: String,
    pub outside: String,
    pub snat: Vec<SnatEntry>,
    pub bypass: Vec<IpNet>,
    /// Addresses of the outside interface that are not EIPs (bypassed sources are SNATed to
    /// them).
    pub kernel_addrs: Vec<IpAddr>,
    pub fail_mode: FailMode,
}

impl Spec {
    pub fn from_config(cfg: &Config, kernel_addrs: &[IpAddr]) -> Spec {
        Spec {
            inside: cfg.gateway.inside.clone(),
            outside: cfg.gateway.outside.clone(),
            snat: cfg.gateway.snat.clone(),
            bypass: cfg.gateway.bypass.clone(),
            kernel_addrs: kernel_addrs.to_vec(),
            fail_mode: cfg.fail_mode,
        }
    }
}

fn fam(net: &IpNet) -> &'static str {
    if net.addr().is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

/// Rules of the guard's forward chain.
fn guard_rules(s: &Spec) -> String {
    let (i, o) = (&s.inside, &s.outside);
    let mut r = String::new();
    // Split mode's slow-path veth pairs (`nfw-in-k`, ...) carry natfw's own frames between its
    // programs; nothing arriving on them may be forwarded by the kernel.
    let _ = writeln!(r, "  iifname \"nfw-*\" drop");
    for b in &s.bypass {
        let _ = writeln!(r, "  iifname \"{i}\" {} saddr {} accept", fam(b), b.trunc());
    }
    for e in &s.snat {
        let net = e.source.trunc();
        match s.fail_mode {
            FailMode::Closed => {
                let _ = writeln!(
                    r,
                    "  iifname \"{i}\" {} saddr {net} counter name snat_unsteered drop",
                    fam(&net)
                );
            }
            FailMode::Open => {
                let _ = writeln!(r, "  iifname \"{i}\" {} saddr {net} accept", fam(&net));
            }
        }
    }
    let _ = writeln!(r, "  iifname \"{i}\" counter name not_snat drop");
    let _ = writeln!(
        r,
        "  iifname \"{o}\" oifname \"{i}\" ct state established,related accept"
    );
    let _ = writeln!(
        r,
        "  iifname \"{o}\" oifname \"{i}\" counter name inbound_unsolicited drop"
    );
    r
}

/// Rules of the NAT table's postrouting chain.
fn nat_rules(s: &Spec) -> Result<String, String> {
    let o = &s.outside;
    let mut r = String::new();
    for net in &s.bypass {
        let v4 = net.addr().is_ipv4();
        // Not an EIP: replies to an EIP are steered to the engine, which does not know the
        // kernel's connections.
        let to = s.kernel_addrs.iter().find(|a| a.is_ipv4() == v4).ok_or_else(|| {
            format!(
                "bypass {net}: {o} has no IPv{} address besides the EIPs for the kernel to SNAT bypassed sources to (ip addr add ADDR dev {o})",
                if v4 { 4 } else { 6 },
            )
        })?;
        let f = fam(net);
        let _ = writeln!(
            r,
            "  oifname \"{o}\" {f} saddr {} snat {f} to {to}",
            net.trunc()
        );
    }
    if s.fail_mode == FailMode::Open {
        for e in &s.snat {
            let net = e.source.trunc();
            let v4 = net.addr().is_ipv4();
            if let Some(eip) = e.eips.iter().find(|a| a.is_ipv4() == v4) {
                let f = fam(&net);
                let _ = writeln!(r, "  oifname \"{o}\" {f} saddr {net} snat {f} to {eip}");
            }
        }
    }
    Ok(r)
}

const GUARD_CHAIN: &str =
    "chain forward {\n  type filter hook forward priority raw; policy accept;\n";
const NAT_CHAIN: &str =
    "chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n";

/// The nft script that (re)creates both tables from scratch in one transaction: no moment
/// without a guard, also when an earlier run's tables are being replaced.
pub fn install_script(s: &Spec) -> Result<String, String> {
    let mut out = String::new();
    // `table X {}` creates the table if missing, so the delete cannot fail.
    for t in [GUARD_TABLE, NAT_TABLE] {
        let _ = writeln!(out, "table inet {t} {{}}\ndelete table inet {t}");
    }
    let _ = writeln!(out, "table inet {GUARD_TABLE} {{");
    for c in COUNTERS {
        let _ = writeln!(out, " counter {c} {{}}");
    }
    let _ = write!(out, " {GUARD_CHAIN}{} }}\n}}\n", guard_rules(s));
    let _ = write!(
        out,
        "table inet {NAT_TABLE} {{\n {NAT_CHAIN}{} }}\n}}\n",
        nat_rules(s)?
    );
    Ok(out)
}

/// The nft script that replaces the rules of both chains (bypass changes) and keeps the
/// counters.
pub fn update_script(s: &Spec) -> Result<String, String> {
    let nat = nat_rules(s)?;
    Ok(format!(
        "flush chain inet {GUARD_TABLE} forward\nflush chain inet {NAT_TABLE} postrouting\n\
         table inet {GUARD_TABLE} {{\n {GUARD_CHAIN}{} }}\n}}\n\
         table inet {NAT_TABLE} {{\n {NAT_CHAIN}{nat} }}\n}}\n",
        guard_rules(s)
    ))
}

/// The nft script that removes both tables (missing ones are not an error).
pub fn uninstall_script() -> String {
    let mut out = String::new();
    for t in [GUARD_TABLE, NAT_TABLE] {
        let _ = writeln!(out, "table inet {t} {{}}\ndelete table inet {t}");
    }
    out
}

/// Install (or replace) both tables.
pub fn install(s: &Spec) -> Result<(), String> {
    nft_script(&install_script(s)?)
        .map_err(|e| format!("installing the nftables tables {GUARD_TABLE} and {NAT_TABLE}: {e}"))
}

/// Replace the chains' rules (counters kept).
pub fn update(s: &Spec) -> Result<(), String> {
    nft_script(&update_script(s)?).map_err(|e| format!("updating the nftables tables: {e}"))
}

/// Remove both tables.
pub fn uninstall() -> Result<(), String> {
    nft_script(&uninstall_script()).map_err(|e| format!("removing the nftables tables: {e}"))
}

/// Packets the guard dropped, by reason (packets, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardCounters {
    /// From an SNAT source, reaching the kernel's forward path (natfw not forwarding).
    pub snat_unsteered: (u64, u64),
    /// From the inside with a source in no SNAT entry (spoofed, foreign).
    pub not_snat: (u64, u64),
    /// From the outside to the inside, of no connection the kernel knows.
    pub inbound_unsolicited: (u64, u64),
}

impl GuardCounters {
    /// Parse `nft -j list counters table inet natfw_guard`.
    pub fn parse(json: &str) -> Result<GuardCounters, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut c = GuardCounters::default();
        let items = v
            .get("nftables")
            .and_then(|n| n.as_array())
            .ok_or("no `nftables` array")?;
        for it in items {
            let Some(ctr) = it.get("counter") else {
                continue;
            };
            let get = |k: &str| ctr.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
            let pb = (get("packets"), get("bytes"));
            match ctr.get("name").and_then(|n| n.as_str()) {
                Some("snat_unsteered") => c.snat_unsteered = pb,
                Some("not_snat") => c.not_snat = pb,
                Some("inbound_unsolicited") => c.inbound_unsolicited = pb,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Read the live counters.
    pub fn read() -> Result<GuardCounters, String> {
        let out = Command::new("nft")
            .args(["-j", "list", "counters", "table", "inet", GUARD_TABLE])
            .output()
            .map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        GuardCounters::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Run an nft script (`nft -f -`): one transaction, all or nothing.
pub fn nft_script(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (install nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// One `natfw run` per network namespace: an exclusive `flock`, released by the kernel when the
/// process ends however it ends.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of the calling process's network namespace.
pub fn lock_path(dir: &Path) -> PathBuf {
    // "net:[4026531840]": the namespace's inode identifies it.
    let id = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            let inner = s.strip_prefix("net:[")?.strip_suffix(']')?.to_string();
            inner.chars().all(|c| c.is_ascii_digit()).then_some(inner)
        })
        .unwrap_or_else(|| "default".into());
    dir.join(format!("netns-{id}.lock"))
}

impl InstanceLock {
    /// Take the lock in `dir` (created if missing) or say who holds it.
    pub fn acquire(dir: &Path) -> Result<InstanceLock, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = lock_path(dir);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns (`file` stays open until return
        // or inside the InstanceLock); no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(format!(
                    "another natfw run is active in this network namespace (pid {}, lock {}): not touching anything",
                    holder.trim(),
                    path.display()
                ));
            }
            return Err(format!("{}: {e}", path.display()));
        }
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(InstanceLock { _file: file, path })
    }

    /// Is the lock in `dir` held by a running natfw?
    pub fn held(dir: &Path) -> bool {
        let Ok(file) = File::open(lock_path(dir)) else {
            return false;
        };
        // SAFETY: as in `acquire`; a shared non-blocking probe released right after.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            // SAFETY: unlock the descriptor locked just above.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            false
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: FailMode) -> Spec {
        Spec {
            inside: "in0".into(),
            outside: "out0".into(),
            snat: vec![SnatEntry {
                name: "vpc".into(),
                source: "10.1.0.0/16".parse().unwrap(),
                eips: vec!["192.0.2.10".parse().unwrap()],
            }],
            bypass: vec!["10.1.2.3/32".parse().unwrap()],
            kernel_addrs: vec!["192.0.2.2".parse().unwrap()],
            fail_mode: mode,
        }
    }

    #[test]
    fn closed_guard_drops_snat_and_foreign_sources_after_the_bypass() {
        let s = install_script(&spec(FailMode::Closed)).unwrap();
        let bypass = s
            .find("ip saddr 10.1.2.3/32 accept")
            .expect("bypass accept");
        let snat = s
            .find("ip saddr 10.1.0.0/16 counter name snat_unsteered drop")
            .expect("snat drop");
        let foreign = s
            .find("iifname \"in0\" counter name not_snat drop")
            .unwrap();
        assert!(bypass < snat && snat < foreign, "{s}");
        assert!(s.contains("snat ip to 192.0.2.2"), "{s}");
        assert!(!s.contains("snat ip to 192.0.2.10"), "{s}");
        assert!(s.contains("priority raw"), "{s}");
    }

    #[test]
    fn open_mode_lets_the_kernel_nat_snat_sources() {
        let s = install_script(&spec(FailMode::Open)).unwrap();
        assert!(s.contains("ip saddr 10.1.0.0/16 accept"), "{s}");
        assert!(!s.contains("snat_unsteered drop"), "{s}");
        assert!(
            s.contains("ip saddr 10.1.0.0/16 snat ip to 192.0.2.10"),
            "{s}"
        );
        assert!(s.contains("counter name not_snat drop"), "{s}");
    }

    #[test]
    fn bypass_without_a_kernel_address_is_an_error() {
        let mut sp = spec(FailMode::Closed);
        sp.kernel_addrs.clear();
        assert!(install_script(&sp).unwrap_err().contains("no IPv4 address"));
    }

    #[test]
    fn counters_parse_from_nft_json() {
        let j = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"counter": {"family": "inet", "name": "not_snat", "table": "natfw_guard", "handle": 2, "packets": 7, "bytes": 588}},
          {"counter": {"family": "inet", "name": "snat_unsteered", "table": "natfw_guard", "handle": 1, "packets": 3, "bytes": 180}}]}"#;
        let c = GuardCounters::parse(j).unwrap();
        assert_eq!(c.not_snat, (7, 588));
        assert_eq!(c.snat_unsteered, (3, 180));
        assert_eq!(c.inbound_unsolicited, (0, 0));
        assert!(GuardCounters::parse("{}").is_err());
    }

    #[test]
    fn a_second_lock_in_the_same_namespace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = InstanceLock::acquire(dir.path()).unwrap();
        assert!(InstanceLock::held(dir.path()));
        let e = InstanceLock::acquire(dir.path()).unwrap_err();
        assert!(e.contains("another natfw run"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(a);
        assert!(!InstanceLock::held(dir.path()));
        InstanceLock::acquire(dir.path()).unwrap();
    }
}
