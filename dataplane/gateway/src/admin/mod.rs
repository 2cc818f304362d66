//! The control plane of `natfw run`: hot policy reload (SIGHUP and `PUT /v1/policy`), the
//! admin API and the Prometheus listener.
//!
//! Hot reload swaps the engine's `Arc<ArcSwap<CompiledPolicy>>`: the engine evaluates a flow
//! only while its verdict is pending, so flows already decided keep their verdict and new (or
//! still pending) flows see the new policy. Only the `firewall:` section is applied live;
//! changes elsewhere (interfaces, EIPs, SNAT, bypass, logging, listeners) are reported and
//! take effect at the next restart.

pub mod client;
pub mod http;
pub mod ui;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::Config;
use serde_json::json;

use crate::metrics::{rule_stats, Metrics, Snapshot};
use http::{Handler, Request, Response};

/// A bypass change for the thread that owns the XDP maps and the nftables table.
#[derive(Debug)]
pub struct BypassCmd {
    pub net: ipnet::IpNet,
    /// Add (`true`) or remove.
    pub add: bool,
    /// The bypass list after the change, or why it failed.
    pub reply: std::sync::mpsc::Sender<Result<Vec<ipnet::IpNet>, String>>,
}

/// Outcome of a successful reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Rules in the policy now running.
    pub rules: usize,
    /// Config warnings (`file:line:col: warning: ...`).
    pub warnings: Vec<String>,
    /// Changed sections that need a restart (ignored until then).
    pub ignored: Vec<String>,
}

/// Validate `text` (named `file_name` in diagnostics) as a full config for `natfw run`.
/// Errors are `file:line:col: message` lines.
pub fn load(file_name: &str, text: &str) -> Result<(Config, Vec<String>), Vec<String>> {
    let loaded = natfw_policy::config::load_str(file_name, text)
        .map_err(|d| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    if !loaded.config.gateway.dnat.is_empty() {
        return Err(vec![format!(
            "{file_name}: DNAT entries are not supported by `natfw run`: remove gateway.dnat"
        )]);
    }
    Ok((
        loaded.config,
        loaded.warnings.iter().map(|w| w.to_string()).collect(),
    ))
}

/// Sections of `new` that differ from `running` and cannot be applied live.
pub fn not_live(running: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&running.gateway, &new.gateway);
    let mut out = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            out.push(format!("{what} changed: ignored until restart"));
        }
    };
    check(a.name != b.name, "gateway.name");
    check(a.inside != b.inside, "gateway.inside");
    check(a.outside != b.outside, "gateway.outside");
    check(a.eips != b.eips, "gateway.eips");
    check(a.snat != b.snat, "gateway.snat");
    check(a.bypass != b.bypass, "gateway.bypass");
    check(running.logging != new.logging, "logging");
    check(running.geo != new.geo, "geo");
    check(running.admin != new.admin, "admin");
    check(running.metrics != new.metrics, "metrics");
    // The rule names the gateway resolves follow the firewall live; the DNS settings do not.
    check(running.dns != new.dns, "dns");
    out
}

/// Does this firewall let everything through (off, or nothing that can drop: default accept
/// and no enabled `drop` rule)?
pub fn opens_everything(fw: &natfw_policy::Firewall) -> bool {
    !fw.enabled
        || (fw.default_action == natfw_policy::Action::Accept
            && !fw
                .rules
                .iter()
                .any(|r| r.enabled && r.action == natfw_policy::RuleAction::Drop))
}

/// `allow_open=true` in the query or `"allow_open": true` in a JSON body: the operator's
/// explicit consent to a change that opens everything.
fn allow_open(req: &Request) -> bool {
    req.param("allow_open")
        .is_some_and(|v| v == "true" || v == "1")
        || serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v.get("allow_open")?.as_bool())
            .unwrap_or(false)
}

fn needs_allow_open(what: String) -> Response {
    Response::json(
        400,
        &json!({"error": format!("{what}: this opens the firewall for everything; repeat with allow_open (CLI: --allow-open) if that is intended")}),
    )
}

/// Shared state between the data path's owner (`run`), the signal handler loop and the API.
pub struct Control {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    /// The config whose `firewall` is live; its other sections are what was started.
    running: Mutex<Config>,
    config_path: PathBuf,
    snapshot: Mutex<Snapshot>,
    metrics: Metrics,
    started: Instant,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// To `run`'s main thread, which owns the XDP maps and the nftables table.
    bypass_tx: Mutex<Option<std::sync::mpsc::Sender<BypassCmd>>>,
    /// Serialises reloads (SIGHUP vs API) so one cannot undo the other's diff halfway.
    reload_lock: Mutex<()>,
    /// What `GET /healthz` judges: the last publication and whether the worker moved.
    health: Mutex<HealthState>,
    /// The bypass list after the last change through the API (`None`: the config's).
    bypass_now: Mutex<Option<Vec<String>>>,
}

/// When the control loop last published and whether the packet worker's loop had turned since
/// the publication before.
#[derive(Debug, Default, Clone, Copy)]
struct HealthState {
    last_publish: Option<Instant>,
    heartbeats: u64,
    worker_moved: bool,
}

/// A publication older than this means the control loop is stuck.
pub const HEALTH_STALE: std::time::Duration = std::time::Duration::from_secs(3);

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// `policy` is the engine's handle ([`natfw_engine::engine::Engine::policy_handle`]); its
    /// per-rule counters are carried over to every policy this swaps in.
    pub fn new(
        running: Config,
        config_path: PathBuf,
        policy: Arc<ArcSwap<CompiledPolicy>>,
    ) -> Control {
        Control {
            policy,
            running: Mutex::new(running),
            config_path,
            snapshot: Mutex::new(Snapshot::default()),
            metrics: Metrics::new(),
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
            bypass_tx: Mutex::new(None),
            health: Mutex::new(HealthState::default()),
            bypass_now: Mutex::new(None),
        }
    }

    /// `GET /healthz`: is this gateway forwarding? The policy is compiled before any listener
    /// starts (a listener that answers has one; the body gives its rule count). Healthy when the
    /// control loop published within [`HEALTH_STALE`], the packet worker's loop turned since the
    /// publication before, and every family with EIPs has its default route. Before the first
    /// publication the answer is `starting` (not healthy). 200 when healthy, else 503; the body
    /// says which check failed. keepalived tracks it through `natfw health`.
    pub fn health(&self) -> (bool, serde_json::Value) {
        let h = *self.health.lock().unwrap_or_else(|e| e.into_inner());
        let policy = self.policy.load();
        let s = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let route = s.default_route.iter().all(|(_, ok)| *ok);
        let Some(last) = h.last_publish else {
            return (false, json!({"healthy": false, "starting": true}));
        };
        let fresh = last.elapsed() < HEALTH_STALE;
        let ok = fresh && h.worker_moved && route;
        (
            ok,
            json!({
                "healthy": ok,
                "starting": false,
                "policy_rules": policy.rules().len(),
                "control_loop_fresh": fresh,
                "workers_alive": h.worker_moved,
                "default_route_up": route,
                "firewall_enabled": policy.enabled(),
            }),
        )
    }

    fn healthz(&self) -> Response {
        let (ok, body) = self.health();
        Response::json(if ok { 200 } else { 503 }, &body)
    }

    fn running(&self) -> Config {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Validate, compile and swap in the policy of `text`. On error the running policy stays.
    pub fn apply(&self, file_name: &str, text: &str) -> Result<ReloadReport, Vec<String>> {
        self.apply_checked(file_name, text, true)
    }

    /// [`Control::apply`]; with `allow_open == false`, a policy that opens everything
    /// ([`opens_everything`]) is refused unless the running one already does.
    pub fn apply_checked(
        &self,
        file_name: &str,
        text: &str,
        allow_open: bool,
    ) -> Result<ReloadReport, Vec<String>> {
        let _g = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (new, warnings) = match load(file_name, text) {
            Ok(x) => x,
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if !allow_open
            && opens_everything(&new.firewall)
            && !opens_everything(&self.running().firewall)
        {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return Err(vec![format!(
                "{file_name}: this policy lets everything through (firewall off, or default accept without any drop rule); repeat with allow_open=true (CLI: --allow-open) if that is intended"
            )]);
        }
        let compiled = CompiledPolicy::new(&new.firewall).inherit_counters(&self.policy.load());
        let rules = compiled.rules().len();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ignored = not_live(&running, &new);
        // Swap first: from here on, every new evaluation uses it.
        self.policy.store(Arc::new(compiled));
        running.firewall = new.firewall;
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        Ok(ReloadReport {
            rules,
            warnings,
            ignored,
        })
    }

    /// Re-read the config file (SIGHUP).
    pub fn reload_file(&self) -> Result<ReloadReport, Vec<String>> {
        let name = self.config_path.display().to_string();
        match std::fs::read_to_string(&self.config_path) {
            Ok(text) => self.apply(&name, &text),
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(vec![format!("{name}: {e}")])
            }
        }
    }

    /// The receiving end of `POST/DELETE /v1/bypass` requests (for the thread that owns the
    /// XDP maps); without it those requests answer 503.
    pub fn bypass_channel(&self) -> std::sync::mpsc::Receiver<BypassCmd> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut g) = self.bypass_tx.lock() {
            *g = Some(tx);
        }
        rx
    }

    fn bypass(&self, req: &Request, add: bool) -> Response {
        let src = req.param("source").or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&req.body)
                .ok()?
                .get("source")?
                .as_str()
                .map(str::to_string)
        });
        let Some(src) = src else {
            return Response::json(
                400,
                &json!({"error": "expected {\"source\": \"IP or CIDR\"}"}),
            );
        };
        let net = match natfw_flowlog::views::logs::parse_net(&src) {
            Ok(n) => n,
            Err(e) => return Response::json(400, &json!({"error": e.to_string()})),
        };
        if add
            && natfw_policy::bypass_opens_everything(&net, &self.running().gateway.snat)
            && !allow_open(req)
        {
            return needs_allow_open(format!("bypass {net} covers every SNAT source"));
        }
        let tx = self.bypass_tx.lock().ok().and_then(|g| g.clone());
        let Some(tx) = tx else {
            return Response::json(503, &json!({"error": "bypass changes need `natfw run`"}));
        };
        let (reply, rx) = std::sync::mpsc::channel();
        if tx.send(BypassCmd { net, add, reply }).is_err() {
            return Response::json(503, &json!({"error": "the gateway is stopping"}));
        }
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(Ok(list)) => {
                let list: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                if let Ok(mut g) = self.bypass_now.lock() {
                    *g = Some(list.clone());
                }
                Response::json(200, &json!({ "bypass": list }))
            }
            Ok(Err(e)) => Response::json(500, &json!({"error": e})),
            Err(_) => Response::json(503, &json!({"error": "no answer from the gateway"})),
        }
    }

    /// Turn inspection on or off (off = SNAT only) for new flows, keeping the rules.
    pub fn set_firewall(&self, enabled: bool) {
        let _g = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.firewall.enabled = enabled;
        let compiled = CompiledPolicy::new(&running.firewall).inherit_counters(&self.policy.load());
        self.policy.store(Arc::new(compiled));
    }

    /// Store the latest counters and publish them to the metrics recorder.
    pub fn publish(&self, mut s: Snapshot) {
        if let Ok(mut h) = self.health.lock() {
            h.worker_moved = h.last_publish.is_none() || s.heartbeats != h.heartbeats;
            h.heartbeats = s.heartbeats;
            h.last_publish = Some(Instant::now());
        }
        s.rules = rule_stats(&self.policy.load());
        s.reloads_ok = self.reloads_ok.load(Ordering::Relaxed);
        s.reloads_failed = self.reloads_failed.load(Ordering::Relaxed);
        self.metrics.publish(&s);
        if let Ok(mut g) = self.snapshot.lock() {
            *g = s;
        }
    }

    /// Prometheus text of the last published snapshot.
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    fn flow_log(&self) -> Result<PathBuf, Response> {
        let p = self.running().logging.flow_log;
        if p == "-" || p.is_empty() || p == "stdout" {
            return Err(Response::json(
                404,
                &json!({"error": "the flow log goes to stdout; nothing to search"}),
            ));
        }
        Ok(PathBuf::from(p))
    }

    /// Routes one authenticated API request.
    pub fn route(&self, req: &Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/status") => self.status(),
            ("GET", "/healthz") => self.healthz(),
            ("GET", "/v1/policy") => self.get_policy(),
            ("PUT", "/v1/policy") => {
                let Ok(text) = std::str::from_utf8(&req.body) else {
                    return Response::json(400, &json!({"errors": ["body is not UTF-8"]}));
                };
                match self.apply_checked("<request>", text, allow_open(req)) {
                    Ok(r) => Response::json(
                        200,
                        &json!({"applied": true, "rules": r.rules, "warnings": r.warnings, "ignored": r.ignored}),
                    ),
                    Err(errors) => {
                        Response::json(400, &json!({"applied": false, "errors": errors}))
                    }
                }
            }
            ("POST", "/v1/firewall") => {
                let v: serde_json::Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => return Response::json(400, &json!({"error": e.to_string()})),
                };
                let Some(on) = v.get("enabled").and_then(|v| v.as_bool()) else {
                    return Response::json(400, &json!({"error": "expected {\"enabled\": bool}"}));
                };
                if !on && !allow_open(req) && !opens_everything(&self.running().firewall) {
                    return needs_allow_open("turning the firewall off".into());
                }
                self.set_firewall(on);
                Response::json(200, &json!({"enabled": on}))
            }
            ("GET", "/v1/top") => self.top(req),
            ("GET", "/v1/trend") => self.trend(req),
            ("GET", "/v1/logs") => self.logs(req),
            ("POST", "/v1/bypass") => self.bypass(req, true),
            ("DELETE", "/v1/bypass") => self.bypass(req, false),
            (
                _,
                "/v1/status" | "/v1/policy" | "/v1/firewall" | "/v1/top" | "/v1/trend" | "/v1/logs"
                | "/v1/bypass",
            ) => Response::json(405, &json!({"error": "method not allowed"})),
            _ => Response::json(404, &json!({"error": "no such endpoint"})),
        }
    }

    fn status(&self) -> Response {
        let p = self.policy.load();
        let s = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let cfg = self.running();
        Response::json(
            200,
            &json!({
                "gateway": cfg.gateway.name,
                "uptime_secs": self.started.elapsed().as_secs(),
                "firewall_enabled": p.enabled(),
                "mode": format!("{:?}", p.mode()).to_lowercase(),
                "default_action": format!("{:?}", p.default_action()).to_lowercase(),
                "rules": p.rules().len(),
                "flows_active": s.engine.flows_active,
                "flows_created": s.engine.flows_created,
                "packets_out": s.engine.fwd_out.packets,
                "packets_in": s.engine.fwd_in.packets,
                "policy_drops": s.engine.drop_policy.packets,
                "flowlog_records": s.flowlog_records,
                "flowlog_dropped": s.flowlog_dropped,
                "flowlog_write_errors": s.flowlog_write_failed,
                "flowlog_space_freed": s.flowlog_space_freed,
                "flowlog_last_error": s.flowlog_last_error,
                "guard_dropped_not_snat": s.guard.not_snat.0,
                "guard_dropped_snat_unsteered": s.guard.snat_unsteered.0,
                "guard_dropped_inbound_unsolicited": s.guard.inbound_unsolicited.0,
                "afxdp_rx_dropped": s.xsk.iter().map(|(_, x)| x.rx_dropped).sum::<u64>(),
                "afxdp_rx_ring_full": s.xsk.iter().map(|(_, x)| x.rx_ring_full).sum::<u64>(),
                "default_route_up": s.default_route.iter().all(|(_, ok)| *ok),
                "resets_no_flow": s.engine.resets_no_flow,
                "reloads_ok": self.reloads_ok.load(Ordering::Relaxed),
                "reloads_failed": self.reloads_failed.load(Ordering::Relaxed),
            }),
        )
    }

    fn get_policy(&self) -> Response {
        let p = self.policy.load();
        let stats = rule_stats(&p);
        let rules: Vec<_> = p
            .rules()
            .iter()
            .map(|r| {
                let s = stats.get(&r.name).cloned().unwrap_or_default();
                json!({
                    "name": r.name,
                    "description": r.description,
                    "enabled": r.enabled,
                    "action": format!("{:?}", r.action).to_lowercase(),
                    "line": r.pos.line,
                    "hits": s.hits,
                    "bytes": s.bytes,
                    "last_hit": s.last_hit,
                })
            })
            .collect();
        let d = stats
            .get(crate::metrics::DEFAULT_RULE)
            .cloned()
            .unwrap_or_default();
        Response::json(
            200,
            &json!({
                "enabled": p.enabled(),
                "mode": format!("{:?}", p.mode()).to_lowercase(),
                "default_action": format!("{:?}", p.default_action()).to_lowercase(),
                "default_hits": d.hits,
                "default_bytes": d.bytes,
                "rules": rules,
            }),
        )
    }

    fn top(&self, req: &Request) -> Response {
        let by = match req.param("by").as_deref() {
            None | Some("bytes") => natfw_flowlog::views::top::TopBy::Bytes,
            Some("flows") => natfw_flowlog::views::top::TopBy::Flows,
            Some(o) => {
                return Response::json(400, &json!({"error": format!("by={o}: bytes or flows")}))
            }
        };
        let limit = req
            .param("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(20usize)
            .min(1000);
        let file = match self.flow_log() {
            Ok(f) => f,
            Err(r) => return r,
        };
        match natfw_flowlog::views::top::top(&[file], by) {
            Ok((talkers, _)) => {
                let t: Vec<_> = talkers
                    .iter()
                    .take(limit)
                    .map(|t| {
                        json!({"src_ip": t.src_ip, "flows": t.flows, "dropped": t.dropped,
                               "bytes_out": t.bytes_out, "bytes_in": t.bytes_in,
                               "top_domains": t.top_domains})
                    })
                    .collect();
                Response::json(200, &json!({ "talkers": t }))
            }
            Err(e) => Response::json(500, &json!({"error": e.to_string()})),
        }
    }

    fn trend(&self, req: &Request) -> Response {
        let iv = req.param("interval").unwrap_or_else(|| "1m".into());
        let iv = match natfw_flowlog::views::parse_interval(&iv) {
            Ok(d) => d,
            Err(e) => return Response::json(400, &json!({"error": e.to_string()})),
        };
        let file = match self.flow_log() {
            Ok(f) => f,
            Err(r) => return r,
        };
        match natfw_flowlog::views::overview::overview(&[file], iv, None) {
            Ok((o, _)) => {
                let b: Vec<_> = o
                    .buckets
                    .iter()
                    .map(|b| {
                        json!({"start": natfw_flowlog::format_rfc3339_millis(b.start),
                               "bytes_out": b.bytes_out, "bytes_in": b.bytes_in,
                               "flows": b.flows, "mbps_out": b.mbps_out, "mbps_in": b.mbps_in})
                    })
                    .collect();
                Response::json(
                    200,
                    &json!({"interval_secs": o.interval.as_secs_f64(), "buckets": b}),
                )
            }
            Err(e) => Response::json(500, &json!({"error": e.to_string()})),
        }
    }

    fn logs(&self, req: &Request) -> Response {
        use natfw_flowlog::views::logs::{logs, parse_net, DomainQuery, LogFilter, LogFormat};
        let mut f = LogFilter::default();
        let bad = |e: natfw_flowlog::views::ViewError| {
            Response::json(400, &json!({"error": e.to_string()}))
        };
        if let Some(s) = req.param("src") {
            f.src = Some(match parse_net(&s) {
                Ok(n) => n,
                Err(e) => return bad(e),
            });
        }
        if let Some(s) = req.param("dst") {
            f.dst = Some(match parse_net(&s) {
                Ok(n) => n,
                Err(e) => return bad(e),
            });
        }
        if let Some(s) = req.param("domain") {
            f.domain = Some(match DomainQuery::parse(&s) {
                Ok(n) => n,
                Err(e) => return bad(e),
            });
        }
        f.action = req.param("action");
        let file = match self.flow_log() {
            Ok(f) => f,
            Err(r) => return r,
        };
        let mut out = Capped::default();
        match logs(&[file], &f, LogFormat::Json, &mut out) {
            Ok(_) => Response {
                status: 200,
                content_type: "application/x-ndjson",
                body: out.buf,
                headers: Vec::new(),
            },
            Err(e) => Response::json(500, &json!({"error": e.to_string()})),
        }
    }
}

/// Response buffer for `/v1/logs`: keeps whole lines up to [`http::MAX_BODY`], drops the rest.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if !self.full && self.buf.len() + b.len() <= http::MAX_BODY {
            self.buf.extend_from_slice(b);
        } else {
            self.full = true;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bearer-token check with a constant-time comparison (of SHA-256 digests, so neither the
/// content nor the length of the token leaks through timing).
#[derive(Clone)]
pub struct Token(ring::digest::Digest);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn new(token: &str) -> Token {
        Token(ring::digest::digest(
            &ring::digest::SHA256,
            token.as_bytes(),
        ))
    }

    /// Read the token from `path` (surrounding whitespace ignored; must not be empty).
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let t = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(format!("{}: empty token", path.display()));
        }
        Ok(Token::new(t))
    }

    /// Does `Authorization: Bearer <token>` carry this token?
    pub fn check(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        let d = ring::digest::digest(&ring::digest::SHA256, given.trim().as_bytes());
        let diff = d
            .as_ref()
            .iter()
            .zip(self.0.as_ref())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// Handler of the admin API: the console under `/ui/` ([`ui::Console`]); elsewhere 401
/// without the right bearer token, else [`Control::route`].
pub fn api_handler(control: Arc<Control>, token: Token) -> Handler {
    admin_service(control, token).0
}

/// The admin listener's handler and gate, sharing one console (and its session table): the
/// gate is [`token_gate`] outside `/ui/`, [`ui::Console::gate`] inside.
pub fn admin_service(control: Arc<Control>, token: Token) -> (Handler, http::Gate) {
    let console = Arc::new(ui::Console::new(Arc::clone(&control), token.clone()));
    let c = Arc::clone(&console);
    let t = token.clone();
    let handler: Handler = Arc::new(move |req: &Request| {
        if ui::is_ui(&req.path) {
            return c.handle(req);
        }
        if !t.check(req.header("authorization")) {
            return Response::json(401, &json!({"error": "missing or wrong bearer token"}));
        }
        control.route(req)
    });
    let api_gate = token_gate(token);
    let gate: http::Gate = Arc::new(move |req: &Request| {
        if ui::is_ui(&req.path) {
            console.gate(req)
        } else {
            api_gate(req)
        }
    });
    (handler, gate)
}

/// The admin API's gate: the bearer token is checked on the request head, before any body
/// byte is read, and a connection without it never holds a slot beyond the head deadline.
pub fn token_gate(token: Token) -> http::Gate {
    Arc::new(move |req: &Request| {
        (!token.check(req.header("authorization")))
            .then(|| Response::json(401, &json!({"error": "missing or wrong bearer token"})))
    })
}

/// Handler of the metrics listener: `GET /metrics` (authentication, if required, by
/// [`token_gate`]).
pub fn metrics_handler(control: Arc<Control>) -> Handler {
    Arc::new(
        move |req: &Request| match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: control.render_metrics().into_bytes(),
                headers: Vec::new(),
            },
            ("GET", "/healthz") => control.healthz(),
            _ => Response::text(404, "GET /metrics, GET /healthz\n"),
        },
    )
}

/// Start the listeners configured in `cfg` (`admin:` and `metrics:`).
pub fn start_listeners(cfg: &Config, control: &Arc<Control>) -> Result<Vec<http::Server>, String> {
    let mut servers = Vec::new();
    if let Some(a) = &cfg.admin {
        let token = Token::from_file(Path::new(&a.token_file))?;
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => Some(http::server_tls(Path::new(c), Path::new(k))?),
            _ if a.plain_http && a.listen.ip().is_loopback() => None,
            _ => {
                return Err(
                    "admin: TLS certificate and key required (plain_http only on loopback)".into(),
                )
            }
        };
        let (h, gate) = admin_service(Arc::clone(control), token);
        let gate = Some(gate);
        servers.push(
            http::Server::start_with(a.listen, tls, h, gate, http::Limits::default())
                .map_err(|e| format!("admin {}: {e}", a.listen))?,
        );
    }
    if let Some(m) = &cfg.metrics {
        let h = metrics_handler(Arc::clone(control));
        let gate = match (&cfg.admin, m.require_token) {
            (Some(a), true) => Some(token_gate(Token::from_file(Path::new(&a.token_file))?)),
            (None, true) => return Err("metrics.require_token needs an admin section".into()),
            (_, false) => None,
        };
        servers.push(
            http::Server::start_with(m.listen, None, h, gate, http::Limits::default())
                .map_err(|e| format!("metrics {}: {e}", m.listen))?,
        );
    }
    Ok(servers)
}
