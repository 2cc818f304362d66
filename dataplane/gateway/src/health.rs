//! `natfw health`: the check a VRRP daemon (keepalived's `track_script`) runs on each gateway of
//! a pair. It asks the running natfw's `GET /healthz` (metrics listener, else a plain-HTTP
//! admin listener on loopback) and exits 0 when this gateway forwards.
//!
//! With `--standby-ok` it also answers for a gateway that is not active: no natfw runs here (the
//! instance lock is free), none of the config's EIPs is on the outside interface and the
//! fail-closed guard (`inet natfw_guard`) is installed — a standby that forwards nothing and is
//! ready to start natfw when it takes the EIPs. A gateway that holds an EIP without a running,
//! healthy natfw fails, so keepalived gives the addresses up. While natfw starts (lock held,
//! listener not answering yet or `starting`) it passes, so a new active gateway is not failed
//! during its own start.

use std::net::IpAddr;
use std::path::Path;

use natfw_policy::config;

use crate::admin::http::call;
use crate::guard::{GuardCounters, InstanceLock, LOCK_DIR};

/// Why the check passed or failed (printed on stdout, one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy(String),
    Starting,
    Standby,
    Unhealthy(String),
}

impl Verdict {
    /// Process exit code.
    pub fn code(&self) -> i32 {
        i32::from(matches!(self, Verdict::Unhealthy(_)))
    }
}

/// Where natfw's `/healthz` is, and the token it needs, from the config.
fn endpoint(cfg: &natfw_policy::Config) -> Result<(String, Option<String>), String> {
    let token = |c: &natfw_policy::Config| -> Result<Option<String>, String> {
        let Some(a) = &c.admin else { return Ok(None) };
        std::fs::read_to_string(&a.token_file)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| format!("{}: {e}", a.token_file))
    };
    if let Some(m) = &cfg.metrics {
        let t = if m.require_token { token(cfg)? } else { None };
        return Ok((format!("http://{}", m.listen), t));
    }
    if let Some(a) = cfg.admin.as_ref().filter(|a| a.plain_http) {
        return Ok((format!("http://{}", a.listen), token(cfg)?));
    }
    Err("natfw health needs a metrics listener or a plain-HTTP admin listener".into())
}

/// The check (see the module documentation).
pub fn check(config_path: &Path, standby_ok: bool) -> Verdict {
    let cfg = match config::load_file(config_path) {
        Ok(l) => l.config,
        Err(e) => return Verdict::Unhealthy(format!("config: {e:?}")),
    };
    let running = InstanceLock::held(Path::new(LOCK_DIR));
    if !running {
        if !standby_ok {
            return Verdict::Unhealthy("natfw is not running here".into());
        }
        let held = held_eips(&cfg);
        if let Some(e) = held.first() {
            return Verdict::Unhealthy(format!(
                "natfw is not running but this gateway holds EIP {e}"
            ));
        }
        return match GuardCounters::read() {
            Ok(_) => Verdict::Standby,
            Err(e) => Verdict::Unhealthy(format!("standby without the guard: {e}")),
        };
    }
    let (url, token) = match endpoint(&cfg) {
        Ok(x) => x,
        Err(e) => return Verdict::Unhealthy(e),
    };
    match call(&url, "GET", "/healthz", token.as_deref(), None, None) {
        Ok((200, body)) => Verdict::Healthy(String::from_utf8_lossy(&body).trim().to_owned()),
        Ok((_, body)) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if standby_ok && v.get("starting").and_then(serde_json::Value::as_bool) == Some(true) {
                Verdict::Starting
            } else {
                Verdict::Unhealthy(String::from_utf8_lossy(&body).trim().to_owned())
            }
        }
        // The lock is taken before the listeners start.
        Err(_) if standby_ok => Verdict::Starting,
        Err(e) => Verdict::Unhealthy(e),
    }
}

/// The config's EIPs that are on its outside interface now.
fn held_eips(cfg: &natfw_policy::Config) -> Vec<IpAddr> {
    let Ok(idx) = crate::netlink::if_index(&cfg.gateway.outside) else {
        return Vec::new();
    };
    let addrs = crate::netlink::addresses().unwrap_or_default();
    cfg.gateway
        .eips
        .iter()
        .filter(|e| addrs.iter().any(|(i, a)| *i == idx && a == *e))
        .copied()
        .collect()
}

/// `natfw health`: prints the verdict, returns the exit code.
pub fn main(config_path: &Path, standby_ok: bool) -> i32 {
    let v = check(config_path, standby_ok);
    match &v {
        Verdict::Healthy(b) => println!("healthy {b}"),
        Verdict::Starting => println!("starting (natfw runs here, not forwarding yet)"),
        Verdict::Standby => {
            println!("standby (no natfw, no EIP here, guard installed: nothing is forwarded)")
        }
        Verdict::Unhealthy(why) => println!("unhealthy: {why}"),
    }
    v.code()
}
