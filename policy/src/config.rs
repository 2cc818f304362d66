//! Loading `natfw.yaml`: YAML → spanned tree ([`crate::yaml`]) → [`Config`], with every
//! problem in the file reported at once as `file:line:col: message`.
//!
//! Decoding is strict: every key that is not part of the layout is an error naming the allowed
//! keys (the `deny_unknown_fields` of this hand-written decoder), values are type-checked, and
//! the cross-field rules of the gateway (EIP counts, SNAT coverage, DNAT vs firewall, rule
//! consistency) are checked. Shadowed rules, unused address books and bypass entries outside
//! every SNAT source are warnings. The layout is documented in `docs/CONFIG.md`.

mod shadow;

pub use shadow::covers;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::app::App;
use crate::countries::{self, Continent};
use crate::model::*;
use crate::yaml::{self, Node, Style, Value};

/// Largest config file accepted (bounded memory on a hostile or mistaken path).
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Gateway EIP limits (the appliance's).
const MAX_EIPS: usize = 10;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to the loader.
    pub file: String,
    /// Where; line 0 means the problem is with the file as a whole (unreadable, say).
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.pos)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem of a file that failed to load (errors and warnings), sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of errors (not warnings).
    pub fn error_count(&self) -> usize {
        self.0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A successfully loaded configuration and the warnings it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// Sorted by position.
    pub warnings: Vec<Diagnostic>,
}

/// Load and validate a config file. The file name in diagnostics is `path` as given.
pub fn load_file(path: &Path) -> Result<Loaded, Diagnostics> {
    let file = path.display().to_string();
    let whole = |message: String| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            pos: Pos::default(),
            severity: Severity::Error,
            message,
        }])
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(whole(format!(
            "file is {} bytes; a config is at most {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    load_str(&file, &text)
}

/// Load and validate config text; `file_name` is used in diagnostics.
pub fn load_str(file_name: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let mut d = Dec::default();
    let config = match yaml::parse(text) {
        Err(e) => {
            d.err(e.pos, e.message);
            None
        }
        Ok(parsed) => {
            for e in parsed.errors {
                d.err(e.pos, e.message);
            }
            d.config(&parsed.root)
        }
    };
    let mut diags: Vec<Diagnostic> = d
        .out
        .into_iter()
        .map(|(pos, severity, message)| Diagnostic {
            file: file_name.to_string(),
            pos,
            severity,
            message,
        })
        .collect();
    diags.sort_by_key(|d| (d.pos, d.severity));
    diags.dedup();
    match config {
        Some(config) if diags.iter().all(|d| d.severity == Severity::Warning) => Ok(Loaded {
            config,
            warnings: diags,
        }),
        _ => {
            if diags.is_empty() {
                // Unreachable in practice: a failed decode always records why.
                diags.push(Diagnostic {
                    file: file_name.to_string(),
                    pos: Pos::default(),
                    severity: Severity::Error,
                    message: "invalid configuration".into(),
                });
            }
            Err(Diagnostics(diags))
        }
    }
}

/// The configuration `natfw replay` uses without `--config`: every private source
/// (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) SNAT-bound to 192.0.2.1 or 2001:db8::1 by
/// family, firewall enabled, loose, default accept, no rules.
pub fn embedded_default() -> Config {
    let eip4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let eip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let v4 = |name: &str, a, b, c, d, len| SnatEntry {
        name: name.into(),
        source: IpNet::V4(Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).expect("valid prefix")),
        eips: vec![eip4],
    };
    Config {
        gateway: Gateway {
            name: "natfw".into(),
            inside: "inside0".into(),
            outside: "outside0".into(),
            eips: vec![eip4, eip6],
            snat: vec![
                v4("private-10", 10, 0, 0, 0, 8),
                v4("private-172", 172, 16, 0, 0, 12),
                v4("private-192", 192, 168, 0, 0, 16),
                v4("shared-100", 100, 64, 0, 0, 10),
                SnatEntry {
                    name: "ula".into(),
                    source: IpNet::V6(
                        Ipv6Net::new(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7)
                            .expect("valid prefix"),
                    ),
                    eips: vec![eip6],
                },
            ],
            dnat: Vec::new(),
            bypass: Vec::new(),
            allow_bypass_all: false,
            protected_bandwidth_mbps: None,
            fast_path: true,
            workers: 1,
        },
        firewall: Firewall {
            enabled: true,
            mode: Mode::Loose,
            on_unidentifiable: OnUnidentifiable::Accept,
            default_action: Action::Accept,
            rules: Vec::new(),
        },
        logging: Logging::default(),
        geo: GeoConfig::default(),
        admin: None,
        metrics: None,
        dns: DnsConfig::default(),
        fail_mode: FailMode::Closed,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Collects diagnostics; every decoding function records its problems here and returns `None`
/// on failure so that the caller can go on checking the rest of the file.
#[derive(Default)]
struct Dec {
    out: Vec<(Pos, Severity, String)>,
}

/// The keys of one mapping, checked against the allowed set.
struct Fields<'a> {
    pos: Pos,
    what: String,
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// The value of `key`; an explicit `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| *k == key && v.value != Value::Null)
            .map(|(_, _, v)| *v)
    }

    /// Where `key` itself is written.
    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| k.pos)
    }
}

/// `what` for messages about a list item.
fn item(what: &str, i: usize) -> String {
    format!("{what}[{i}]")
}

/// `what` for item `i` of `n`: indexed when `n` is a list, plain when it is a single value.
fn item_of(n: &Node, what: &str, i: usize) -> String {
    if matches!(n.value, Value::Seq(_)) {
        item(what, i)
    } else {
        what.to_string()
    }
}

/// Levenshtein distance, for "did you mean" hints (short strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ` (did you mean `x`?)` when one of `known` is close to `s`, else nothing.
fn did_you_mean<'k>(s: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    let s = s.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (distance(&s, &k.to_ascii_lowercase()), k))
        // Two edits on a short word is another word (`sctp` is not `icmp`).
        .filter(|(d, k)| *d <= if k.len() > 4 { 2 } else { 1 })
        .min()
        .map_or(String::new(), |(_, k)| format!(" (did you mean `{k}`?)"))
}

/// Iterate a value that may be one item or a list of items.
/// Is `ip` reachable only from a private network (loopback, RFC 1918, shared address space,
/// link-local, unique local)? `0.0.0.0`/`::` (every interface) is not.
fn private_listen(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn one_or_many(n: &Node) -> Vec<&Node> {
    match &n.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![n],
    }
}

impl Dec {
    fn err(&mut self, pos: Pos, msg: impl Into<String>) {
        self.out.push((pos, Severity::Error, msg.into()));
    }

    fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        self.out.push((pos, Severity::Warning, msg.into()));
    }

    fn has_errors(&self) -> bool {
        self.out.iter().any(|(_, s, _)| *s == Severity::Error)
    }

    fn wrong_type(&mut self, n: &Node, what: &str, expected: &str) {
        let found = match n.as_str() {
            Some(s) => format!("`{s}`"),
            None => n.kind().to_string(),
        };
        self.err(n.pos, format!("{what}: expected {expected}, found {found}"));
    }

    /// A mapping whose keys must all be in `allowed`.
    fn fields<'a>(&mut self, n: &'a Node, what: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Value::Map(entries) = &n.value else {
            self.wrong_type(n, what, "a mapping");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_str() else { continue }; // reported by the YAML layer
            if allowed.contains(&key) {
                out.push((key, k, v));
            } else {
                self.err(
                    k.pos,
                    format!(
                        "unknown key `{key}` in {what}{}; allowed keys: {}",
                        did_you_mean(key, allowed.iter().copied()),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Fields {
            pos: n.pos,
            what: what.to_string(),
            entries: out,
        })
    }

    fn required<'a>(&mut self, f: &Fields<'a>, key: &str) -> Option<&'a Node> {
        let v = f.get(key);
        if v.is_none() {
            self.err(f.pos, format!("{}: missing required key `{key}`", f.what));
        }
        v
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n.as_str() {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            Some(_) => {
                self.err(n.pos, format!("{what}: must not be empty"));
                None
            }
            None => {
                self.wrong_type(n, what, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, f: &Fields<'_>, key: &str) -> Option<Option<String>> {
        match f.get(key) {
            None => Some(None),
            Some(n) => self.string(n, &format!("{}.{key}", f.what)).map(Some),
        }
    }

    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        match &n.value {
            Value::Scalar(s, Style::Plain) if matches!(s.as_str(), "true" | "True" | "TRUE") => {
                Some(true)
            }
            Value::Scalar(s, Style::Plain) if matches!(s.as_str(), "false" | "False" | "FALSE") => {
                Some(false)
            }
            _ => {
                self.wrong_type(n, what, "true or false");
                None
            }
        }
    }

    fn opt_bool(&mut self, f: &Fields<'_>, key: &str, default: bool) -> Option<bool> {
        match f.get(key) {
            None => Some(default),
            Some(n) => self.boolean(n, &format!("{}.{key}", f.what)),
        }
    }

    fn uint(&mut self, n: &Node, what: &str) -> Option<u64> {
        match &n.value {
            Value::Scalar(s, Style::Plain) => match s.replace('_', "").parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.err(
                        n.pos,
                        format!("{what}: expected a non-negative integer, found `{s}`"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(n, what, "an integer");
                None
            }
        }
    }

    fn ip(&mut self, n: &Node, what: &str) -> Option<IpAddr> {
        let s = n.as_str().or_else(|| {
            self.wrong_type(n, what, "an IP address");
            None
        })?;
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(n.pos, format!("{what}: bad IP address `{s}`"));
                None
            }
        }
    }

    /// A CIDR or a single address (a host prefix). Host bits must be clear.
    fn net(&mut self, n: &Node, what: &str) -> Option<IpNet> {
        let s = n.as_str().or_else(|| {
            self.wrong_type(n, what, "an IP address or CIDR");
            None
        })?;
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        match s.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => Some(net),
            Ok(net) => {
                self.err(
                    n.pos,
                    format!(
                        "{what}: CIDR `{s}` has host bits set (the network is {})",
                        net.trunc()
                    ),
                );
                None
            }
            Err(_) => {
                self.err(n.pos, format!("{what}: bad IP address or CIDR `{s}`"));
                None
            }
        }
    }

    /// One item or a non-empty list of them, each decoded by `one`; every bad item is reported.
    fn list<T>(
        &mut self,
        n: &Node,
        what: &str,
        empty: &str,
        mut one: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = one_or_many(n);
        if items.is_empty() {
            self.err(n.pos, format!("{what}: {empty}"));
            return None;
        }
        let mut ok = true;
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.into_iter().enumerate() {
            match one(self, it, &item_of(n, what, i)) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One CIDR or a non-empty list of them.
    fn nets(&mut self, n: &Node, what: &str) -> Option<Vec<IpNet>> {
        self.list(n, what, "empty list (omit the key instead)", Self::net)
    }

    fn port(&mut self, s: &str, n: &Node, what: &str) -> Option<u16> {
        match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(
                    n.pos,
                    format!("{what}: bad port `{s}`: expected 1-65535 or a range `low-high`"),
                );
                None
            }
        }
    }

    /// `80`, `"8000-8080"` (one item).
    fn port_range(&mut self, n: &Node, what: &str) -> Option<RangeInclusive<u16>> {
        let Some(s) = n.as_str() else {
            self.wrong_type(n, what, "a port or a range `low-high`");
            return None;
        };
        match s.split_once('-') {
            None => self.port(s, n, what).map(|p| p..=p),
            Some((a, b)) => {
                let (a, b) = (self.port(a, n, what)?, self.port(b, n, what)?);
                if a > b {
                    self.err(
                        n.pos,
                        format!("{what}: reversed port range `{s}` (start is above end)"),
                    );
                    return None;
                }
                Some(a..=b)
            }
        }
    }

    fn port_ranges(&mut self, n: &Node, what: &str) -> Option<Vec<RangeInclusive<u16>>> {
        self.list(
            n,
            what,
            "empty list (omit the key instead)",
            Self::port_range,
        )
    }

    fn choice<T: Copy>(&mut self, n: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let Some(s) = n.as_str() else {
            self.wrong_type(n, what, "a string");
            return None;
        };
        if let Some((_, v)) = options.iter().find(|(k, _)| k.eq_ignore_ascii_case(s)) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
        self.err(
            n.pos,
            format!(
                "{what}: bad value `{s}`{}; expected one of: {}",
                did_you_mean(s, names.iter().copied()),
                names.join(", ")
            ),
        );
        None
    }

    fn domain(&mut self, n: &Node, what: &str) -> Option<DomainPattern> {
        let Some(s) = n.as_str() else {
            self.wrong_type(n, what, "a domain name");
            return None;
        };
        if s.parse::<IpAddr>().is_ok() || s.parse::<IpNet>().is_ok() {
            self.err(
                n.pos,
                format!("{what}: `{s}` is an address, not a domain; use destination.cidr"),
            );
            return None;
        }
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if name.contains('*') {
            self.err(
                n.pos,
                format!("{what}: bad domain pattern `{s}`: only a leading `*.` is allowed"),
            );
            return None;
        }
        match crate::domain::normalize(name) {
            Some(norm) if wild => Some(DomainPattern::Wildcard(norm)),
            Some(norm) => Some(DomainPattern::Exact(norm)),
            None => {
                self.err(n.pos, format!("{what}: bad domain name `{s}`"));
                None
            }
        }
    }

    fn domains(&mut self, n: &Node, what: &str) -> Option<Vec<DomainPattern>> {
        self.list(n, what, "empty list", Self::domain)
    }

    /// Country codes and continents, expanded, sorted and deduplicated.
    fn locations(&mut self, n: &Node, what: &str) -> Option<Vec<CountryCode>> {
        let items = one_or_many(n);
        if items.is_empty() {
            self.err(n.pos, format!("{what}: empty list"));
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            let what = item_of(n, what, i);
            let Some(s) = it.as_str() else {
                self.wrong_type(it, &what, "a country code or continent");
                ok = false;
                continue;
            };
            if let Some(cc) = CountryCode::new(s).filter(|cc| countries::is_country(*cc)) {
                if let Some(c) = Continent::from_code(s) {
                    self.warn(
                        it.pos,
                        format!(
                            "{what}: `{s}` is read as the country {cc}; write `{}` for the continent",
                            c.name()
                        ),
                    );
                }
                out.push(cc);
            } else if let Some(c) = Continent::from_name(s).or_else(|| Continent::from_code(s)) {
                out.extend(c.countries());
            } else {
                self.err(
                    it.pos,
                    format!(
                        "{what}: unknown country or continent `{s}`; use ISO 3166-1 alpha-2 \
                         codes (DE, US, ...) or a continent ({})",
                        Continent::ALL.map(Continent::name).join(", ")
                    ),
                );
                ok = false;
            }
        }
        out.sort();
        out.dedup();
        ok.then_some(out)
    }

    // -----------------------------------------------------------------------------------------
    // Sections

    fn config(&mut self, root: &Node) -> Option<Config> {
        if root.value == Value::Null {
            self.err(
                root.pos,
                "empty configuration: a `gateway` section is required",
            );
            return None;
        }
        let f = self.fields(
            root,
            "the top level",
            &[
                "gateway",
                "firewall",
                "logging",
                "geo",
                "admin",
                "metrics",
                "dns",
                "fail_mode",
            ],
        )?;
        let gw = self.required(&f, "gateway").and_then(|n| self.gateway(n));
        let fw = match f.get("firewall") {
            Some(n) => self.firewall(n),
            None => Some(Firewall {
                enabled: true,
                mode: Mode::Loose,
                on_unidentifiable: OnUnidentifiable::Accept,
                default_action: Action::Accept,
                rules: Vec::new(),
            }),
        };
        let logging = f
            .get("logging")
            .map_or(Some(Logging::default()), |n| self.logging(n));
        let geo = f
            .get("geo")
            .map_or(Some(GeoConfig::default()), |n| self.geo(n));
        let admin = f
            .get("admin")
            .map_or(Some(None), |n| self.admin(n).map(Some));
        let metrics = f.get("metrics").map_or(Some(None), |n| {
            let m = self.fields(n, "metrics", &["listen", "require_token"])?;
            let require_token = self.opt_bool(&m, "require_token", false);
            let listen = match m.get("listen") {
                // Port 9469: not 9100, node_exporter's.
                None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9469))),
                Some(listen) => self.socket(listen, "metrics.listen"),
            };
            Some(Some(MetricsConfig {
                listen: listen?,
                require_token: require_token?,
            }))
        });
        for (what, listen, node) in [
            (
                "admin.listen",
                admin.as_ref().and_then(|a| a.as_ref().map(|a| a.listen)),
                f.get("admin"),
            ),
            (
                "metrics.listen",
                metrics.as_ref().and_then(|m| m.as_ref().map(|m| m.listen)),
                f.get("metrics"),
            ),
        ] {
            if let (Some(l), Some(n)) = (listen, node) {
                if !private_listen(l.ip()) {
                    self.warn(
                        n.pos,
                        format!(
                            "{what}: {l} is not a private address: anyone who can reach it may try \
                             it (listen on a loopback or private address, and filter it)"
                        ),
                    );
                }
            }
        }
        if let (Some(None), Some(Some(m)), Some(mn)) = (&admin, &metrics, f.get("metrics")) {
            if m.require_token {
                self.err(
                    mn.pos,
                    "metrics.require_token: the token is admin.token_file; add an `admin` section",
                );
            }
        }
        let fail_mode = f.get("fail_mode").map_or(Some(FailMode::Closed), |n| {
            self.choice(
                n,
                "fail_mode",
                &[("closed", FailMode::Closed), ("open", FailMode::Open)],
            )
        });

        if let (Some(Some(a)), Some(Some(m)), Some(mn)) = (&admin, &metrics, f.get("metrics")) {
            if a.listen == m.listen {
                self.err(
                    mn.pos,
                    format!("metrics.listen: {} is also the admin listener", m.listen),
                );
            }
        }
        let dns = f
            .get("dns")
            .map_or(Some(DnsConfig::default()), |n| self.dns(n));
        let (gateway, dnat_pos) = gw?;
        let firewall = fw?;
        if firewall.enabled && !gateway.dnat.is_empty() {
            self.err(
                dnat_pos,
                "gateway.dnat: DNAT entries are not allowed while the firewall is enabled \
                 (remove them or set firewall.enabled: false)",
            );
        }
        let config = Config {
            gateway,
            firewall,
            logging: logging?,
            geo: geo?,
            admin: admin?,
            metrics: metrics?,
            dns: dns?,
            fail_mode: fail_mode?,
        };
        (!self.has_errors()).then_some(config)
    }

    fn socket(&mut self, n: &Node, what: &str) -> Option<SocketAddr> {
        let s = n.as_str().or_else(|| {
            self.wrong_type(n, what, "an address:port");
            None
        })?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    n.pos,
                    format!(
                        "{what}: bad listen address `{s}` (expected 127.0.0.1:9469 or [::1]:9469)"
                    ),
                );
                None
            }
        }
    }

    /// The gateway and where its `dnat` key is (for the firewall cross-check).
    fn gateway(&mut self, n: &Node) -> Option<(Gateway, Pos)> {
        let f = self.fields(
            n,
            "gateway",
            &[
                "name",
                "inside",
                "outside",
                "eips",
                "snat",
                "dnat",
                "bypass",
                "allow_bypass_all",
                "protected_bandwidth_mbps",
                "fast_path",
                "workers",
            ],
        )?;
        let allow_bypass_all = self.opt_bool(&f, "allow_bypass_all", false);
        let fast_path = self.opt_bool(&f, "fast_path", true);
        let workers = match f.get("workers") {
            None => Some(1),
            Some(n) => match self.uint(n, "gateway.workers") {
                Some(w @ 1..=8) => {
                    if w > 1 && fast_path == Some(false) {
                        self.err(
                            n.pos,
                            "gateway.workers: more than one packet worker needs the fast path \
                             (gateway.fast_path: true); classic mode runs one",
                        );
                        None
                    } else {
                        Some(w as u16)
                    }
                }
                Some(w) => {
                    self.err(n.pos, format!("gateway.workers: {w} is not in 1..8"));
                    None
                }
                None => None,
            },
        };
        let name = self
            .required(&f, "name")
            .and_then(|n| self.string(n, "gateway.name"));
        let inside = self
            .required(&f, "inside")
            .and_then(|n| self.interface(n, "gateway.inside"));
        let outside = self
            .required(&f, "outside")
            .and_then(|n| self.interface(n, "gateway.outside"));
        if let (Some(i), Some(o), Some(on)) = (&inside, &outside, f.get("outside")) {
            if i == o {
                self.err(
                    on.pos,
                    format!("gateway.outside: `{o}` is also the inside interface"),
                );
            }
        }
        let eips = self.required(&f, "eips").and_then(|n| self.eips(n));
        let snat = match (f.get("snat"), &eips) {
            (None, _) => {
                self.err(
                    f.pos,
                    "gateway: no SNAT entry: `snat` must list at least one source range",
                );
                None
            }
            (Some(n), Some(eips)) => self.snat(n, eips),
            (Some(n), None) => {
                // Still check the entries' own syntax.
                self.snat(n, &[]);
                None
            }
        };
        let dnat = match f.get("dnat") {
            None => Some(Vec::new()),
            Some(n) => self.dnat(n, eips.as_deref().unwrap_or(&[])),
        };
        let bypass = match f.get("bypass") {
            None => Some(Vec::new()),
            Some(n) => {
                let nodes = one_or_many(n);
                let nets = self.nets(n, "gateway.bypass");
                if let (Some(nets), Some(snat), Some(false)) = (&nets, &snat, allow_bypass_all) {
                    for (net, node) in nets.iter().zip(&nodes) {
                        if bypass_opens_everything(net, snat) {
                            self.err(
                                node.pos,
                                format!(
                                    "gateway.bypass: {net} covers every SNAT source: the \
                                     firewall would inspect nothing (set \
                                     gateway.allow_bypass_all: true if that is what you want)"
                                ),
                            );
                        }
                    }
                }
                if let (Some(nets), Some(snat)) = (&nets, &snat) {
                    for (net, node) in nets.iter().zip(nodes) {
                        let inside = snat.iter().any(|e: &SnatEntry| e.source.contains(net));
                        if !inside && !bypass_opens_everything(net, snat) {
                            self.warn(
                                node.pos,
                                format!(
                                    "gateway.bypass: {net} is not inside any SNAT source; \
                                     sources outside the SNAT entries never reach the firewall, \
                                     so this entry has no effect there"
                                ),
                            );
                        }
                    }
                }
                nets
            }
        };
        let bw = match f.get("protected_bandwidth_mbps") {
            None => Some(None),
            Some(n) => match self.uint(n, "gateway.protected_bandwidth_mbps") {
                Some(0) => {
                    self.err(n.pos, "gateway.protected_bandwidth_mbps: must be above 0");
                    None
                }
                v => v.map(Some),
            },
        };
        let dnat_pos = f.key_pos("dnat").unwrap_or(f.pos);
        Some((
            Gateway {
                name: name?,
                inside: inside?,
                outside: outside?,
                eips: eips?,
                snat: snat?,
                dnat: dnat?,
                bypass: bypass?,
                allow_bypass_all: allow_bypass_all?,
                protected_bandwidth_mbps: bw?,
                fast_path: fast_path?,
                workers: workers?,
            },
            dnat_pos,
        ))
    }

    fn eips(&mut self, n: &Node) -> Option<Vec<IpAddr>> {
        let Value::Seq(items) = &n.value else {
            self.wrong_type(n, "gateway.eips", "a list of IP addresses");
            return None;
        };
        if items.is_empty() || items.len() > MAX_EIPS {
            self.err(
                n.pos,
                format!(
                    "gateway.eips: a gateway has 1 to {MAX_EIPS} EIPs, found {}",
                    items.len()
                ),
            );
        }
        let mut out: Vec<IpAddr> = Vec::new();
        let mut ok = true;
        for (i, it) in items.iter().enumerate() {
            match self.ip(it, &item("gateway.eips", i)) {
                Some(ip) if out.contains(&ip) => {
                    self.err(it.pos, format!("gateway.eips: {ip} is listed twice"));
                    ok = false;
                }
                Some(ip) => out.push(ip),
                None => ok = false,
            }
        }
        (ok && !out.is_empty() && out.len() <= MAX_EIPS).then_some(out)
    }

    fn snat(&mut self, n: &Node, gw_eips: &[IpAddr]) -> Option<Vec<SnatEntry>> {
        let Value::Seq(items) = &n.value else {
            self.wrong_type(n, "gateway.snat", "a list of SNAT entries");
            return None;
        };
        if items.is_empty() {
            self.err(
                n.pos,
                "gateway.snat: no SNAT entry: at least one source range is required",
            );
            return None;
        }
        let mut ok = true;
        let mut out: Vec<(SnatEntry, Pos, Pos)> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let what = item("gateway.snat", i);
            let Some(f) = self.fields(it, &what, &["name", "source", "eips"]) else {
                ok = false;
                continue;
            };
            let name = self
                .required(&f, "name")
                .and_then(|n| self.string(n, &format!("{what}.name")));
            let src_node = self.required(&f, "source");
            let source = src_node.and_then(|n| self.net(n, &format!("{what}.source")));
            let eips = match (f.get("eips"), source) {
                (Some(en), _) => {
                    let mut v = Vec::new();
                    for (j, e) in one_or_many(en).into_iter().enumerate() {
                        let ewhat = item_of(en, &format!("{what}.eips"), j);
                        let Some(ip) = self.ip(e, &ewhat) else {
                            ok = false;
                            continue;
                        };
                        if !gw_eips.is_empty() && !gw_eips.contains(&ip) {
                            self.err(
                                e.pos,
                                format!("{ewhat}: EIP {ip} is not one of the gateway's eips"),
                            );
                            ok = false;
                        } else if let Some(src) = source {
                            if src.addr().is_ipv4() != ip.is_ipv4() {
                                self.err(
                                    e.pos,
                                    format!(
                                        "{ewhat}: source {src} is {} but EIP {ip} is {}",
                                        family(src.addr()),
                                        family(ip)
                                    ),
                                );
                                ok = false;
                            }
                        }
                        v.push(ip);
                    }
                    if v.is_empty() && ok {
                        self.err(en.pos, format!("{what}.eips: empty list"));
                        ok = false;
                    }
                    Some(v)
                }
                // Default: every gateway EIP of the source's family.
                (None, Some(src)) => {
                    let v: Vec<IpAddr> = gw_eips
                        .iter()
                        .copied()
                        .filter(|ip| ip.is_ipv4() == src.addr().is_ipv4())
                        .collect();
                    if v.is_empty() && !gw_eips.is_empty() {
                        self.err(
                            f.pos,
                            format!(
                                "{what}: source {src} is {} but the gateway has no {} EIP",
                                family(src.addr()),
                                family(src.addr())
                            ),
                        );
                        ok = false;
                    }
                    Some(v)
                }
                (None, None) => None,
            };
            match (name, source, eips) {
                (Some(name), Some(source), Some(eips)) => out.push((
                    SnatEntry { name, source, eips },
                    f.key_pos("name").unwrap_or(f.pos),
                    src_node.map_or(f.pos, |n| n.pos),
                )),
                _ => ok = false,
            }
        }
        for j in 0..out.len() {
            for i in 0..j {
                let (a, b) = (&out[i], &out[j]);
                if a.0.name == b.0.name {
                    self.err(
                        b.1,
                        format!(
                            "gateway.snat: duplicate SNAT entry name `{}` (first at line {})",
                            b.0.name, a.1.line
                        ),
                    );
                    ok = false;
                }
                if a.0.source.contains(&b.0.source) || b.0.source.contains(&a.0.source) {
                    self.err(
                        b.2,
                        format!(
                            "gateway.snat: source {} of `{}` overlaps source {} of `{}` (line {}); \
                             SNAT sources must be disjoint",
                            b.0.source, b.0.name, a.0.source, a.0.name, a.2.line
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then(|| out.into_iter().map(|(e, _, _)| e).collect())
    }

    fn dnat(&mut self, n: &Node, gw_eips: &[IpAddr]) -> Option<Vec<DnatEntry>> {
        let Value::Seq(items) = &n.value else {
            self.wrong_type(n, "gateway.dnat", "a list of DNAT entries");
            return None;
        };
        let mut ok = true;
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let what = item("gateway.dnat", i);
            let Some(f) = self.fields(
                it,
                &what,
                &["name", "eip", "protocol", "port", "to", "to_port"],
            ) else {
                ok = false;
                continue;
            };
            let name = self
                .required(&f, "name")
                .and_then(|n| self.string(n, &format!("{what}.name")));
            let eip = self.required(&f, "eip").and_then(|n| {
                let ip = self.ip(n, &format!("{what}.eip"))?;
                if !gw_eips.is_empty() && !gw_eips.contains(&ip) {
                    self.err(
                        n.pos,
                        format!("{what}.eip: {ip} is not one of the gateway's eips"),
                    );
                    return None;
                }
                Some(ip)
            });
            let protocol = self.required(&f, "protocol").and_then(|n| {
                self.choice(
                    n,
                    &format!("{what}.protocol"),
                    &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
                )
            });
            let port = self
                .required(&f, "port")
                .and_then(|n| self.single_port(n, &format!("{what}.port")));
            let to = self
                .required(&f, "to")
                .and_then(|n| self.ip(n, &format!("{what}.to")));
            let to_port = match f.get("to_port") {
                None => port,
                Some(n) => self.single_port(n, &format!("{what}.to_port")),
            };
            if let (Some(e), Some(t), Some(tn)) = (eip, to, f.get("to")) {
                if e.is_ipv4() != t.is_ipv4() {
                    self.err(
                        tn.pos,
                        format!(
                            "{what}.to: {t} is {} but the EIP {e} is {}",
                            family(t),
                            family(e)
                        ),
                    );
                    ok = false;
                }
            }
            match (name, eip, protocol, port, to, to_port) {
                (Some(name), Some(eip), Some(protocol), Some(port), Some(to), Some(to_port)) => out
                    .push(DnatEntry {
                        name,
                        eip,
                        protocol,
                        port,
                        to,
                        to_port,
                    }),
                _ => ok = false,
            }
        }
        for (j, b) in out.iter().enumerate() {
            for a in &out[..j] {
                if a.name == b.name {
                    self.err(
                        n.pos,
                        format!("gateway.dnat: duplicate DNAT entry name `{}`", b.name),
                    );
                    ok = false;
                } else if (a.eip, a.protocol, a.port) == (b.eip, b.protocol, b.port) {
                    self.err(
                        n.pos,
                        format!(
                            "gateway.dnat: `{}` and `{}` both forward {} {}:{}",
                            a.name,
                            b.name,
                            proto_name(b.protocol),
                            b.eip,
                            b.port
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A Linux interface name: 1 to 15 bytes, no `/`, no whitespace.
    fn interface(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.string(n, what)?;
        if s.len() > 15 || s.contains('/') || s.chars().any(char::is_whitespace) {
            self.err(
                n.pos,
                format!("{what}: `{s}` is not a valid interface name (at most 15 characters, no `/` or spaces)"),
            );
            return None;
        }
        Some(s)
    }

    fn single_port(&mut self, n: &Node, what: &str) -> Option<u16> {
        let s = n.as_str().or_else(|| {
            self.wrong_type(n, what, "a port");
            None
        })?;
        self.port(s, n, what)
    }

    fn logging(&mut self, n: &Node) -> Option<Logging> {
        let f = self.fields(
            n,
            "logging",
            &[
                "flow_log",
                "rotate_bytes",
                "keep",
                "format",
                "interim_interval",
                "syslog",
            ],
        )?;
        let interim = match f.get("interim_interval") {
            None => Some(Logging::default().interim_interval),
            Some(n) => match n.as_str() {
                Some(s) => match crate::model::parse_duration(s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.err(n.pos, format!("logging.interim_interval: {e}"));
                        None
                    }
                },
                None => {
                    self.wrong_type(
                        n,
                        "logging.interim_interval",
                        "a duration such as 60s or 1m",
                    );
                    None
                }
            },
        };
        let syslog = match f.get("syslog") {
            None => Some(None),
            Some(n) => self.syslog(n).map(Some),
        };
        let format = match f.get("format") {
            None => Some(RecordFormat::Json),
            Some(n) => self.choice(
                n,
                "logging.format",
                &[("json", RecordFormat::Json), ("ecs", RecordFormat::Ecs)],
            ),
        };
        let flow_log = self.opt_string(&f, "flow_log");
        let rotate = match f.get("rotate_bytes") {
            None => Some(None),
            Some(n) => match self.uint(n, "logging.rotate_bytes") {
                Some(0) => {
                    self.err(
                        n.pos,
                        "logging.rotate_bytes: must be above 0 (omit it to never rotate)",
                    );
                    None
                }
                v => v.map(Some),
            },
        };
        let keep = match f.get("keep") {
            None => Some(Logging::default().keep),
            Some(n) => self
                .uint(n, "logging.keep")
                .and_then(|v| match u32::try_from(v) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        self.err(n.pos, "logging.keep: too large");
                        None
                    }
                }),
        };
        Some(Logging {
            flow_log: flow_log?.unwrap_or_else(|| Logging::default().flow_log),
            rotate_bytes: rotate?,
            keep: keep?,
            format: format?,
            interim_interval: interim?,
            syslog: syslog?,
        })
    }

    /// `logging.syslog`.
    fn syslog(&mut self, n: &Node) -> Option<crate::model::Syslog> {
        let f = self.fields(
            n,
            "logging.syslog",
            &["address", "tls", "ca_file", "server_name", "queue"],
        )?;
        let address = match f.get("address") {
            Some(a) => {
                self.string(a, "logging.syslog.address")
                    .and_then(|s| match split_host_port(&s) {
                        Some((host, port)) => Some((s, host, port)),
                        None => {
                            self.err(
                                a.pos,
                                format!(
                                "logging.syslog.address: bad address `{s}` (expected host:port, \
                                 e.g. logs.example.internal:6514 or [2001:db8::5]:514)"
                            ),
                            );
                            None
                        }
                    })
            }
            None => {
                self.err(f.pos, "logging.syslog: `address` is required");
                None
            }
        };
        let tls = self.opt_bool(&f, "tls", false);
        let ca_file = self.opt_string(&f, "ca_file");
        let server_name = self.opt_string(&f, "server_name");
        let queue = match f.get("queue") {
            None => Some(crate::model::SYSLOG_DEFAULT_QUEUE),
            Some(q) => match self.uint(q, "logging.syslog.queue") {
                Some(0) => {
                    self.err(q.pos, "logging.syslog.queue: must be above 0");
                    None
                }
                Some(v) if v > 10_000_000 => {
                    self.err(q.pos, "logging.syslog.queue: at most 10000000 records");
                    None
                }
                v => v.map(|v| v as usize),
            },
        };
        let (tls, ca_file, server_name) = (tls?, ca_file?, server_name?);
        if tls && ca_file.is_none() {
            self.err(
                f.pos,
                "logging.syslog: `tls: true` needs `ca_file` (the CA the receiver's certificate \
                 chains to)",
            );
            return None;
        }
        if !tls {
            for key in ["ca_file", "server_name"] {
                if let Some(p) = f.key_pos(key).filter(|_| f.get(key).is_some()) {
                    self.err(p, format!("logging.syslog.{key}: only with `tls: true`"));
                    return None;
                }
            }
        }
        let (address, host, port) = address?;
        Some(crate::model::Syslog {
            address,
            host,
            port,
            tls,
            ca_file,
            server_name,
            queue: queue?,
        })
    }

    /// A resolver: `10.0.0.2` (port 53) or `10.0.0.2:5353` / `[fd00::2]:53`.
    fn resolver(&mut self, n: &Node, what: &str) -> Option<SocketAddr> {
        let Some(s) = n.as_str() else {
            self.wrong_type(n, what, "an address or address:port");
            return None;
        };
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, 53));
        }
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    n.pos,
                    format!("{what}: bad resolver `{s}` (expected 10.0.0.2 or 10.0.0.2:53)"),
                );
                None
            }
        }
    }

    fn bounded(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Option<u64> {
        let Some(n) = f.get(key) else {
            return Some(default);
        };
        let what = format!("{}.{key}", f.what);
        let v = self.uint(n, &what)?;
        if !(min..=max).contains(&v) {
            self.err(n.pos, format!("{what}: {v} is outside {min}..={max}"));
            return None;
        }
        Some(v)
    }

    fn dns(&mut self, n: &Node) -> Option<DnsConfig> {
        let f = self.fields(
            n,
            "dns",
            &[
                "resolvers",
                "refresh_min_secs",
                "refresh_max_secs",
                "max_names",
                "verify",
                "verify_timeout_ms",
                "verify_concurrency",
                "forwarder",
            ],
        )?;
        let d = DnsConfig::default();
        let resolvers = match f.get("resolvers") {
            None => Some(Vec::new()),
            Some(r) => self.list(
                r,
                "dns.resolvers",
                "empty list (omit the key to use the system's resolvers)",
                Self::resolver,
            ),
        };
        let min = self.bounded(
            &f,
            "refresh_min_secs",
            1,
            86_400,
            u64::from(d.refresh_min_secs),
        );
        let max = self.bounded(
            &f,
            "refresh_max_secs",
            1,
            604_800,
            u64::from(d.refresh_max_secs),
        );
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                self.err(
                    n.pos,
                    format!("dns: refresh_min_secs ({a}) is above refresh_max_secs ({b})"),
                );
            }
        }
        let max_names = self.bounded(&f, "max_names", 1, 1_000_000, d.max_names as u64);
        let verify = match f.get("verify") {
            None => Some(d.verify),
            Some(v) => self.boolean(v, "dns.verify"),
        };
        let timeout = self.bounded(&f, "verify_timeout_ms", 10, 30_000, d.verify_timeout_ms);
        let conc = self.bounded(
            &f,
            "verify_concurrency",
            1,
            10_000,
            d.verify_concurrency as u64,
        );
        let forwarder = match f.get("forwarder") {
            None => Some(None),
            Some(fw) => (|| {
                let g = self.fields(
                    fw,
                    "dns.forwarder",
                    &["listen", "refuse_denied", "max_inflight"],
                )?;
                let listen = self.required(&g, "listen")?;
                let listen = self.socket(listen, "dns.forwarder.listen")?;
                let refuse = match g.get("refuse_denied") {
                    None => Some(None),
                    Some(r) => self.choice(
                        r,
                        "dns.forwarder.refuse_denied",
                        &[
                            ("nxdomain", Some(Refusal::NxDomain)),
                            ("refused", Some(Refusal::Refused)),
                            ("none", None),
                        ],
                    ),
                };
                let inflight = self.bounded(&g, "max_inflight", 1, 100_000, 512);
                Some(Some(ForwarderConfig {
                    listen,
                    refuse_denied: refuse?,
                    max_inflight: inflight? as usize,
                }))
            })(),
        };
        Some(DnsConfig {
            resolvers: resolvers?,
            refresh_min_secs: min? as u32,
            refresh_max_secs: max? as u32,
            max_names: max_names? as usize,
            verify: verify?,
            verify_timeout_ms: timeout?,
            verify_concurrency: conc? as usize,
            forwarder: forwarder?,
        })
    }

    fn geo(&mut self, n: &Node) -> Option<GeoConfig> {
        let f = self.fields(n, "geo", &["database"])?;
        Some(GeoConfig {
            database: self.opt_string(&f, "database")?,
        })
    }

    fn admin(&mut self, n: &Node) -> Option<AdminConfig> {
        let f = self.fields(
            n,
            "admin",
            &["listen", "token_file", "tls_cert", "tls_key", "plain_http"],
        )?;
        let listen = self
            .required(&f, "listen")
            .and_then(|n| self.socket(n, "admin.listen"));
        let token_file = self
            .required(&f, "token_file")
            .and_then(|n| self.string(n, "admin.token_file"));
        let tls_cert = self.opt_string(&f, "tls_cert");
        let tls_key = self.opt_string(&f, "tls_key");
        let plain_http = self.opt_bool(&f, "plain_http", false);
        let (listen, token_file, tls_cert, tls_key, plain_http) =
            (listen?, token_file?, tls_cert?, tls_key?, plain_http?);
        let ph_pos = f.key_pos("plain_http").unwrap_or(f.pos);
        match (&tls_cert, &tls_key, plain_http) {
            (Some(_), None, _) | (None, Some(_), _) => {
                self.err(f.pos, "admin: tls_cert and tls_key go together");
                return None;
            }
            (Some(_), Some(_), true) => {
                self.err(
                    ph_pos,
                    "admin.plain_http: cannot be true together with tls_cert/tls_key",
                );
                return None;
            }
            (None, None, false) => {
                self.err(
                    f.pos,
                    "admin: set tls_cert and tls_key, or plain_http: true on a loopback listener",
                );
                return None;
            }
            (None, None, true) if !listen.ip().is_loopback() => {
                self.err(
                    ph_pos,
                    format!("admin.plain_http: only allowed on a loopback listener, not {listen}"),
                );
                return None;
            }
            _ => {}
        }
        Some(AdminConfig {
            listen,
            token_file,
            tls_cert,
            tls_key,
            plain_http,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Firewall

    fn firewall(&mut self, n: &Node) -> Option<Firewall> {
        let f = self.fields(
            n,
            "firewall",
            &[
                "enabled",
                "mode",
                "on_unidentifiable",
                "default_action",
                "address_books",
                "rules",
            ],
        )?;
        let enabled = self.opt_bool(&f, "enabled", true);
        let mode = f.get("mode").map_or(Some(Mode::Loose), |n| {
            self.choice(
                n,
                "firewall.mode",
                &[("loose", Mode::Loose), ("strict", Mode::Strict)],
            )
        });
        let on_unidentifiable =
            f.get("on_unidentifiable")
                .map_or(Some(OnUnidentifiable::Accept), |n| {
                    self.choice(
                        n,
                        "firewall.on_unidentifiable",
                        &[
                            ("accept", OnUnidentifiable::Accept),
                            ("drop", OnUnidentifiable::Drop),
                        ],
                    )
                });
        if let (Some(Mode::Strict), Some(OnUnidentifiable::Accept), Some(n)) =
            (mode, on_unidentifiable, f.get("on_unidentifiable"))
        {
            self.warn(
                n.pos,
                "firewall.on_unidentifiable: accept has no effect in strict mode (unidentifiable flows are dropped)",
            );
        }
        let default_action = f.get("default_action").map_or(Some(Action::Accept), |n| {
            self.choice(
                n,
                "firewall.default_action",
                &[("accept", Action::Accept), ("drop", Action::Drop)],
            )
        });
        let mut books = match f.get("address_books") {
            None => Books::default(),
            Some(n) => self.books(n),
        };
        let rules = match f.get("rules") {
            None => Some(Vec::new()),
            Some(n) => self.rules(n, &mut books),
        };
        // With errors, a rule that failed early may not have marked its books used yet.
        if !self.has_errors() {
            for (kind, name, pos) in books.unused() {
                self.warn(pos, format!("{kind} address book `{name}` is never used"));
            }
        }
        let rules = rules?;
        if !self.has_errors() {
            for (pos, msg) in shadow::shadowed(&rules) {
                self.warn(pos, msg);
            }
        }
        Some(Firewall {
            enabled: enabled?,
            mode: mode?,
            on_unidentifiable: on_unidentifiable?,
            default_action: default_action?,
            rules,
        })
    }

    fn books(&mut self, n: &Node) -> Books {
        let mut books = Books::default();
        let Some(f) = self.fields(n, "firewall.address_books", &["ip", "port", "domain"]) else {
            return books;
        };
        for (kind, node) in ["ip", "port", "domain"]
            .into_iter()
            .filter_map(|k| f.get(k).map(|n| (k, n)))
        {
            let Value::Map(entries) = &node.value else {
                self.wrong_type(
                    node,
                    &format!("firewall.address_books.{kind}"),
                    "a mapping of book name to entries",
                );
                continue;
            };
            for (k, v) in entries {
                let Some(name) = k.as_str() else { continue };
                let what = format!("{kind} address book `{name}`");
                match kind {
                    "ip" => {
                        let vals = self.nets(v, &what);
                        books.ip.insert(name.to_string(), Book::new(k.pos, vals));
                    }
                    "port" => {
                        let vals = self.port_ranges(v, &what);
                        books.port.insert(name.to_string(), Book::new(k.pos, vals));
                    }
                    _ => {
                        let vals = self.domains(v, &what);
                        books
                            .domain
                            .insert(name.to_string(), Book::new(k.pos, vals));
                    }
                }
            }
        }
        books
    }

    fn rules(&mut self, n: &Node, books: &mut Books) -> Option<Vec<Rule>> {
        let Value::Seq(items) = &n.value else {
            self.wrong_type(n, "firewall.rules", "a list of rules");
            return None;
        };
        let mut ok = true;
        let mut out = Vec::new();
        let mut names: HashMap<String, Pos> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            match self.rule(it, i, books, &mut names) {
                Some(r) => out.push(r),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn rule(
        &mut self,
        n: &Node,
        index: usize,
        books: &mut Books,
        names: &mut HashMap<String, Pos>,
    ) -> Option<Rule> {
        let f = self.fields(
            n,
            &format!("firewall.rules[{index}]"),
            &[
                "name",
                "description",
                "source",
                "source_book",
                "destination",
                "domain_mode",
                "protocol",
                "ports",
                "port_book",
                "applications",
                "action",
                "enabled",
            ],
        )?;
        let name = self.required(&f, "name").and_then(|n| {
            let s = self.string(n, &format!("firewall.rules[{index}].name"))?;
            if let Some(first) = names.get(&s) {
                self.err(
                    n.pos,
                    format!("duplicate rule name `{s}` (first at line {})", first.line),
                );
                return None;
            }
            names.insert(s.clone(), n.pos);
            Some(s)
        });
        let what = match f.get("name").and_then(Node::as_str) {
            Some(s) => format!("rule `{s}`"),
            None => format!("firewall.rules[{index}]"),
        };
        let description = self.opt_string(&f, "description");

        let source = match (f.get("source"), f.get("source_book")) {
            (Some(_), Some(b)) => {
                self.err(
                    b.pos,
                    format!("{what}: use either `source` or `source_book`, not both"),
                );
                None
            }
            (Some(s), None) => self.nets(s, &format!("{what} source")).map(Some),
            (None, Some(b)) => self.book_ref(b, &what, &mut books.ip, "ip").map(Some),
            (None, None) => Some(None),
        };

        let protocol = f.get("protocol").map_or(Some(Protocol::Any), |n| {
            self.choice(
                n,
                &format!("{what} protocol"),
                &[
                    ("any", Protocol::Any),
                    ("tcp", Protocol::Tcp),
                    ("udp", Protocol::Udp),
                    ("icmp", Protocol::Icmp),
                ],
            )
        });

        let (destination, dest_pos) = match f.get("destination") {
            None => (Some(Destination::Any), f.pos),
            Some(d) => (self.destination(d, &what, books), d.pos),
        };

        let domain_mode = match f.get("domain_mode") {
            None => Some(DomainMode::Fqdn),
            Some(m) => {
                let mode = self.choice(
                    m,
                    &format!("{what} domain_mode"),
                    &[
                        ("fqdn", DomainMode::Fqdn),
                        ("dns", DomainMode::Dns),
                        ("fqdn_or_dns", DomainMode::FqdnOrDns),
                        ("fqdn_and_dns", DomainMode::FqdnAndDns),
                    ],
                );
                match &destination {
                    Some(Destination::Domains(pats)) if mode == Some(DomainMode::Dns) => {
                        for p in pats
                            .iter()
                            .filter(|p| matches!(p, DomainPattern::Wildcard(_)))
                        {
                            self.err(
                                m.pos,
                                format!(
                                    "{what}: domain_mode dns cannot use the wildcard `{p}`: \
                                     only exact names can be resolved (use fqdn_or_dns, or \
                                     list the names)"
                                ),
                            );
                        }
                    }
                    Some(Destination::Domains(_)) => {}
                    Some(_) => self.err(
                        m.pos,
                        format!("{what}: domain_mode applies only to a domain destination"),
                    ),
                    None => {}
                }
                mode
            }
        };

        let ports = match (f.get("ports"), f.get("port_book")) {
            (Some(_), Some(b)) => {
                self.err(
                    b.pos,
                    format!("{what}: use either `ports` or `port_book`, not both"),
                );
                None
            }
            (Some(p), None) => self.port_ranges(p, &format!("{what} ports")).map(Some),
            (None, Some(b)) => self.book_ref(b, &what, &mut books.port, "port").map(Some),
            (None, None) => Some(None),
        };
        let ports_pos = f
            .key_pos("ports")
            .or_else(|| f.key_pos("port_book"))
            .unwrap_or(f.pos);

        let applications = match f.get("applications") {
            None => Some(None),
            Some(a) => self.applications(a, &what, protocol),
        };

        let action = self.required(&f, "action").and_then(|n| {
            self.choice(
                n,
                &format!("{what} action"),
                &[
                    ("accept", RuleAction::Accept),
                    ("drop", RuleAction::Drop),
                    ("log", RuleAction::Log),
                ],
            )
        });
        let enabled = self.opt_bool(&f, "enabled", true);

        if protocol == Some(Protocol::Icmp) {
            if matches!(destination, Some(Destination::Domains(_))) {
                self.err(
                    dest_pos,
                    format!(
                        "{what}: a domain destination cannot match protocol icmp (names come from \
                         TLS, HTTP, QUIC or DNS)"
                    ),
                );
            }
            if matches!(ports, Some(Some(_))) {
                self.err(ports_pos, format!("{what}: protocol icmp has no ports"));
            }
        }

        Some(Rule {
            name: name?,
            description: description?.unwrap_or_default(),
            source: source?,
            destination: destination?,
            domain_mode: domain_mode?,
            protocol: protocol?,
            ports: ports?,
            applications: applications?,
            action: action?,
            enabled: enabled?,
            pos: f.pos,
        })
    }

    /// `name` or a list of names of books of one kind; the union of their entries.
    fn book_ref<T: Clone>(
        &mut self,
        n: &Node,
        what: &str,
        books: &mut HashMap<String, Book<T>>,
        kind: &str,
    ) -> Option<Vec<T>> {
        let mut ok = true;
        let mut out = Vec::new();
        for it in one_or_many(n) {
            let Some(name) = it.as_str() else {
                self.wrong_type(it, &format!("{what}: {kind} book"), "a book name");
                ok = false;
                continue;
            };
            match books.get_mut(name) {
                Some(b) => {
                    b.used = true;
                    match &b.values {
                        Some(v) => out.extend(v.iter().cloned()),
                        None => ok = false, // its own error was reported
                    }
                }
                None => {
                    let mut known: Vec<&str> = books.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    self.err(
                        it.pos,
                        format!(
                            "{what}: unknown {kind} address book `{name}`{} (defined: {})",
                            did_you_mean(name, known.iter().copied()),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    ok = false;
                }
            }
        }
        if out.is_empty() && ok {
            self.err(n.pos, format!("{what}: empty {kind} book reference"));
            ok = false;
        }
        ok.then_some(out)
    }

    fn destination(&mut self, n: &Node, what: &str, books: &mut Books) -> Option<Destination> {
        const KINDS: [&str; 5] = ["cidr", "ip_book", "domain", "domain_book", "location"];
        let f = self.fields(n, &format!("{what} destination"), &KINDS)?;
        let given: Vec<(&str, &Node, &Node)> = f
            .entries
            .iter()
            .copied()
            .filter(|(_, _, v)| v.value != Value::Null)
            .collect();
        let (kind, _, v) = match given.as_slice() {
            // Only unknown keys (already reported) or explicit nulls.
            [] if matches!(&n.value, Value::Map(m) if m.iter().any(|(_, v)| v.value != Value::Null)) => {
                return None
            }
            [] => {
                self.err(
                    n.pos,
                    format!(
                        "{what} destination: needs one of {} (omit `destination` for any)",
                        KINDS.join(", ")
                    ),
                );
                return None;
            }
            [one] => *one,
            [first, second, ..] => {
                self.err(
                    second.1.pos,
                    format!(
                        "{what} destination: only one kind per rule; found both `{}` and `{}`",
                        first.0, second.0
                    ),
                );
                return None;
            }
        };
        let what = format!("{what} destination.{kind}");
        match kind {
            "cidr" => self.nets(v, &what).map(Destination::Cidrs),
            "ip_book" => self
                .book_ref(v, &what, &mut books.ip, "ip")
                .map(Destination::Cidrs),
            "domain" => self.domains(v, &what).map(Destination::Domains),
            "domain_book" => self
                .book_ref(v, &what, &mut books.domain, "domain")
                .map(Destination::Domains),
            _ => self.locations(v, &what).map(Destination::Location),
        }
    }

    fn applications(
        &mut self,
        n: &Node,
        what: &str,
        protocol: Option<Protocol>,
    ) -> Option<Option<Vec<App>>> {
        let items = one_or_many(n);
        let is_any = |it: &Node| it.as_str().is_some_and(|s| s.eq_ignore_ascii_case("any"));
        if items.len() == 1 && is_any(items[0]) {
            return Some(None);
        }
        if items.is_empty() {
            self.err(
                n.pos,
                format!("{what} applications: empty list (omit it for ANY)"),
            );
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        for it in items {
            let Some(s) = it.as_str() else {
                self.wrong_type(it, &format!("{what} applications"), "an application label");
                ok = false;
                continue;
            };
            if is_any(it) {
                self.err(
                    it.pos,
                    format!("{what} applications: ANY cannot be combined with other labels"),
                );
                ok = false;
                continue;
            }
            match App::from_str(s) {
                Ok(app) => {
                    if let Some(p) = protocol.filter(|p| *p != Protocol::Any) {
                        if !app.carried_by().contains(&p) {
                            self.err(
                                it.pos,
                                format!(
                                    "{what}: application {app} cannot be carried over {}",
                                    proto_name(p)
                                ),
                            );
                            ok = false;
                        }
                    }
                    if !out.contains(&app) {
                        out.push(app);
                    }
                }
                Err(e) => {
                    self.err(
                        it.pos,
                        format!(
                            "{what}: {e}; known: ANY, {}",
                            App::ALL.map(App::as_str).join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(Some(out))
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "any",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    }
}

/// A named address book, its entries (`None` if they had errors) and whether a rule uses it.
struct Book<T> {
    pos: Pos,
    values: Option<Vec<T>>,
    used: bool,
}

impl<T> Book<T> {
    fn new(pos: Pos, values: Option<Vec<T>>) -> Self {
        Book {
            pos,
            values,
            used: false,
        }
    }
}

#[derive(Default)]
struct Books {
    ip: HashMap<String, Book<IpNet>>,
    port: HashMap<String, Book<RangeInclusive<u16>>>,
    domain: HashMap<String, Book<DomainPattern>>,
}

impl Books {
    fn unused(&self) -> Vec<(&'static str, String, Pos)> {
        fn of<T>(
            kind: &'static str,
            m: &HashMap<String, Book<T>>,
        ) -> Vec<(&'static str, String, Pos)> {
            m.iter()
                .filter(|(_, b)| !b.used)
                .map(|(n, b)| (kind, n.clone(), b.pos))
                .collect()
        }
        let mut v = of("ip", &self.ip);
        v.extend(of("port", &self.port));
        v.extend(of("domain", &self.domain));
        v
    }
}

/// `host:port` / `[v6]:port` → (host, port); the host is not empty, the port not 0.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    host_ok.then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The embedded default, written out as YAML: it must pass validation and decode to exactly
    /// `embedded_default()`.
    const DEFAULT_YAML: &str = "\
gateway:
  name: natfw
  inside: inside0
  outside: outside0
  eips: [192.0.2.1, 2001:db8::1]
  snat:
    - {name: private-10, source: 10.0.0.0/8}
    - {name: private-172, source: 172.16.0.0/12}
    - {name: private-192, source: 192.168.0.0/16}
    - {name: shared-100, source: 100.64.0.0/10}
    - {name: ula, source: \"fc00::/7\"}
firewall: {enabled: true, mode: loose, default_action: accept, rules: []}
";

    #[test]
    fn embedded_default_is_a_valid_config() {
        let loaded = load_str("default.yaml", DEFAULT_YAML).unwrap();
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.config, embedded_default());
        let d = embedded_default();
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for e in &d.gateway.snat {
            let want = if e.source.addr().is_ipv4() { v4 } else { v6 };
            assert_eq!(e.eips, vec![want], "{}", e.name);
        }
        let covered = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            d.gateway.snat.iter().any(|e| e.source.contains(&ip))
        };
        for ip in [
            "10.1.2.3",
            "172.31.255.1",
            "192.168.0.7",
            "100.127.0.1",
            "fd12::5",
        ] {
            assert!(covered(ip), "{ip} should be SNAT-bound");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::5"] {
            assert!(!covered(ip), "{ip} should not be SNAT-bound");
        }
        assert!(d.firewall.enabled && d.firewall.rules.is_empty());
        assert_eq!(d.firewall.default_action, Action::Accept);
    }

    #[test]
    fn decodes_a_full_rule() {
        let text = "\
gateway:
  name: gw
  inside: eth1
  outside: eth2
  eips: [203.0.113.10]
  snat: [{name: a, source: 10.0.0.0/16}]
  bypass: [10.0.1.5]
  protected_bandwidth_mbps: 1000
firewall:
  mode: strict
  default_action: drop
  address_books:
    ip: {vpc: [10.0.0.0/16, \"fd00::/8\"]}
    port: {web: [80, 443, \"8000-8080\"]}
    domain: {mirrors: [Deb.Debian.ORG., \"*.ubuntu.com\"]}
  rules:
    - name: mirrors
      description: package mirrors
      source_book: vpc
      destination: {domain_book: mirrors}
      domain_mode: fqdn_or_dns
      protocol: tcp
      port_book: web
      applications: [http, HTTPS]
      action: accept
    - {name: off, action: log, enabled: false, destination: {location: [de, europe]}}
logging: {flow_log: /var/log/f.jsonl, rotate_bytes: 1_000_000, keep: 3}
geo: {database: /x.mmdb}
admin: {listen: \"127.0.0.1:9443\", token_file: /t, tls_cert: /c, tls_key: /k}
";
        let c = load_str("t.yaml", text).unwrap().config;
        let r = &c.firewall.rules[0];
        assert_eq!(r.pos, Pos { line: 17, col: 7 });
        assert_eq!(r.source.as_ref().unwrap().len(), 2);
        assert_eq!(
            r.destination,
            Destination::Domains(vec![
                DomainPattern::Exact("deb.debian.org".into()),
                DomainPattern::Wildcard("ubuntu.com".into()),
            ])
        );
        assert_eq!(r.domain_mode, DomainMode::FqdnOrDns);
        assert_eq!(r.ports, Some(vec![80..=80, 443..=443, 8000..=8080]));
        assert_eq!(r.applications, Some(vec![App::Http, App::Https]));
        assert_eq!(c.firewall.mode, Mode::Strict);
        assert_eq!(c.firewall.default_action, Action::Drop);
        assert!(!c.firewall.rules[1].enabled);
        assert_eq!(
            c.gateway.bypass,
            vec!["10.0.1.5/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(c.gateway.protected_bandwidth_mbps, Some(1000));
        assert_eq!(c.logging.rotate_bytes, Some(1_000_000));
        assert_eq!(c.geo.database.as_deref(), Some("/x.mmdb"));
        assert_eq!(c.admin.unwrap().tls_key.as_deref(), Some("/k"));
    }

    #[test]
    fn on_unidentifiable_is_decoded_and_checked() {
        let base = "gateway: {name: gw, inside: a, outside: b, eips: [203.0.113.10], snat: [{name: a, source: 10.0.0.0/16}]}\n";
        let c = load_str("t.yaml", base).unwrap().config;
        assert_eq!(
            c.firewall.on_unidentifiable,
            OnUnidentifiable::Accept,
            "default"
        );
        let text = format!("{base}firewall: {{mode: loose, on_unidentifiable: drop}}\n");
        let l = load_str("t.yaml", &text).unwrap();
        assert_eq!(l.config.firewall.on_unidentifiable, OnUnidentifiable::Drop);
        assert!(l.warnings.is_empty());
        let text = format!("{base}firewall: {{on_unidentifiable: reject}}\n");
        let e = load_str("t.yaml", &text).unwrap_err().to_string();
        assert!(
            e.contains("t.yaml:2:") && e.contains("firewall.on_unidentifiable"),
            "{e}"
        );
        // Strict mode drops unidentifiable flows anyway: an explicit accept is a mistake.
        let text = format!("{base}firewall: {{mode: strict, on_unidentifiable: accept}}\n");
        let l = load_str("t.yaml", &text).unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0]
            .to_string()
            .contains("no effect in strict mode"));
    }

    #[test]
    fn interim_interval_and_syslog_are_decoded_and_checked() {
        let base = "gateway: {name: gw, inside: a, outside: b, eips: [203.0.113.10], snat: [{name: a, source: 10.0.0.0/16}]}\n";
        let c = load_str("t.yaml", base).unwrap().config;
        assert_eq!(
            c.logging.interim_interval,
            Duration::from_secs(60),
            "default"
        );
        assert_eq!(c.logging.syslog, None);
        for (v, secs) in [("30s", 30), ("1m", 60), ("90", 90), ("2h", 7200)] {
            let text = format!("{base}logging: {{interim_interval: {v}}}\n");
            let c = load_str("t.yaml", &text).unwrap().config;
            assert_eq!(c.logging.interim_interval, Duration::from_secs(secs), "{v}");
        }
        for bad in ["0s", "1x", "soon", "[1]"] {
            let text = format!("{base}logging:\n  interim_interval: {bad}\n");
            let e = load_str("t.yaml", &text).unwrap_err().to_string();
            assert!(
                e.contains("t.yaml:3:21") && e.contains("logging.interim_interval"),
                "{bad}: {e}"
            );
        }
        let text = format!(
            "{base}logging:\n  syslog: {{address: \"logs.example.internal:6514\", tls: true, ca_file: /etc/ca.pem, queue: 50}}\n"
        );
        let s = load_str("t.yaml", &text)
            .unwrap()
            .config
            .logging
            .syslog
            .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.queue),
            ("logs.example.internal", 6514, true, 50)
        );
        assert_eq!(s.ca_file.as_deref(), Some("/etc/ca.pem"));
        let text = format!("{base}logging: {{syslog: {{address: \"[2001:db8::5]:514\"}}}}\n");
        let s = load_str("t.yaml", &text)
            .unwrap()
            .config
            .logging
            .syslog
            .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("2001:db8::5", 514, false)
        );
        assert_eq!(s.queue, crate::model::SYSLOG_DEFAULT_QUEUE);
        for (bad, at, what) in [
            ("{address: nohost}", "t.yaml:4:15", "bad address"),
            ("{address: \"h:0\"}", "t.yaml:4:15", "bad address"),
            (
                "{address: \"2001:db8::5:514\"}",
                "t.yaml:4:15",
                "bad address",
            ),
            ("{tls: true}", "t.yaml:4:", "`address` is required"),
            (
                "{address: \"h:514\", tls: true}",
                "t.yaml:4:",
                "needs `ca_file`",
            ),
            (
                "{address: \"h:514\", ca_file: x.pem}",
                "t.yaml:4:",
                "only with `tls: true`",
            ),
            (
                "{address: \"h:514\", queue: 0}",
                "t.yaml:4:",
                "queue: must be above 0",
            ),
            ("{address: \"h:514\", port: 5}", "t.yaml:4:", "port"),
        ] {
            let text = format!("{base}logging:\n  syslog:\n    {bad}\n");
            let e = load_str("t.yaml", &text).unwrap_err().to_string();
            assert!(e.contains(at) && e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn hints_for_near_misses() {
        assert_eq!(distance("enabeld", "enabled"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("strickt", ["loose", "strict"]),
            " (did you mean `strict`?)"
        );
        assert_eq!(did_you_mean("zzz", ["loose", "strict"]), "");
        assert_eq!(
            did_you_mean("ab", ["xy"]),
            "",
            "a hint must share something"
        );
        assert_eq!(
            did_you_mean("sctp", ["tcp", "udp", "icmp"]),
            "",
            "two edits on a short word"
        );
        assert_eq!(
            did_you_mean("tpc", ["tcp", "udp"]),
            "",
            "a swap is two edits"
        );
        assert_eq!(
            did_you_mean("udpp", ["tcp", "udp"]),
            " (did you mean `udp`?)"
        );
    }

    #[test]
    fn unreadable_file_and_display_forms() {
        let e = load_file(Path::new("/nonexistent/natfw.yaml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/natfw.yaml: cannot read:"),
            "{e}"
        );
        let d = Diagnostic {
            file: "f".into(),
            pos: Pos { line: 3, col: 4 },
            severity: Severity::Warning,
            message: "m".into(),
        };
        assert_eq!(d.to_string(), "f:3:4: warning: m");
        let e = load_str("e.yaml", "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "e.yaml:1:1: empty configuration: a `gateway` section is required\n"
        );
    }

    #[test]
    fn decodes_the_dns_section() {
        let gw = "gateway: {name: gw, inside: eth1, outside: eth2, eips: [203.0.113.10], \
                  snat: [{name: a, source: 10.0.0.0/16}]}\n";
        let text = format!(
            "{gw}dns:\n  resolvers: [10.0.0.2, \"10.0.0.3:5353\"]\n  refresh_min_secs: 10\n  \
             refresh_max_secs: 600\n  max_names: 50\n  verify_timeout_ms: 500\n  \
             forwarder: {{listen: \"10.0.0.1:53\", refuse_denied: nxdomain}}\n"
        );
        let d = load_str("d.yaml", &text).unwrap().config.dns;
        assert_eq!(
            d.resolvers,
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:5353".parse().unwrap()
            ]
        );
        assert_eq!(
            (d.refresh_min_secs, d.refresh_max_secs, d.max_names),
            (10, 600, 50)
        );
        assert!(d.verify);
        assert_eq!(d.verify_timeout_ms, 500);
        let f = d.forwarder.unwrap();
        assert_eq!(f.listen, "10.0.0.1:53".parse().unwrap());
        assert_eq!(f.refuse_denied, Some(Refusal::NxDomain));
        // Defaults.
        let d = load_str("d.yaml", gw).unwrap().config.dns;
        assert_eq!(d, DnsConfig::default());
        // Errors name the key.
        let bad = format!(
            "{gw}dns: {{resolvers: [nope], refresh_min_secs: 900, refresh_max_secs: 60}}\n"
        );
        let e = load_str("d.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("dns.resolvers[0]: bad resolver `nope`"), "{e}");
        assert!(
            e.contains("refresh_min_secs (900) is above refresh_max_secs (60)"),
            "{e}"
        );
    }

    #[test]
    fn fail_mode_bypass_all_and_listener_checks() {
        let base = "gateway:
  name: gw
  inside: eth1
  outside: eth2
  eips: [203.0.113.10]
  snat: [{name: a, source: 10.0.0.0/16}]
";
        let c = load_str("f.yaml", base).unwrap().config;
        assert_eq!(c.fail_mode, FailMode::Closed, "closed by default");
        let c = load_str("f.yaml", &format!("{base}fail_mode: open\n"))
            .unwrap()
            .config;
        assert_eq!(c.fail_mode, FailMode::Open);
        let e = load_str("f.yaml", &format!("{base}fail_mode: ajar\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("f.yaml:7:12: fail_mode: bad value `ajar`"),
            "{e}"
        );

        // A bypass that covers every SNAT source is an error unless explicitly allowed.
        for all in ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16"] {
            let text = format!("{base}  bypass: [{all}]\n");
            let e = load_str("f.yaml", &text).unwrap_err().to_string();
            assert!(e.contains("f.yaml:7:12: gateway.bypass:"), "{all}: {e}");
            assert!(e.contains("allow_bypass_all"), "{e}");
            let ok = format!("{base}  bypass: [{all}]\n  allow_bypass_all: true\n");
            let c = load_str("f.yaml", &ok).unwrap().config;
            assert!(c.gateway.allow_bypass_all);
        }
        load_str("f.yaml", &format!("{base}  bypass: [10.0.1.0/24]\n")).unwrap();

        // Listeners on non-private addresses: warnings with positions.
        let text = format!(
            "{base}admin: {{listen: \"0.0.0.0:9443\", token_file: /t, tls_cert: /c, tls_key: /k}}\n\
             metrics: {{listen: \"198.51.100.7:9100\"}}\n"
        );
        let w: Vec<String> = load_str("f.yaml", &text)
            .unwrap()
            .warnings
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            w.iter().any(|w| w
                .starts_with("f.yaml:7:8: warning: admin.listen: 0.0.0.0:9443 is not a private")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("metrics.listen: 198.51.100.7:9100 is not a private")),
            "{w:?}"
        );
        let text = format!(
            "{base}admin: {{listen: \"10.1.0.1:9443\", token_file: /t, tls_cert: /c, tls_key: /k}}\n\
             metrics: {{listen: \"127.0.0.1:9100\", require_token: true}}\n"
        );
        let l = load_str("f.yaml", &text).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(l.config.metrics.unwrap().require_token);
        let e = load_str(
            "f.yaml",
            &format!("{base}metrics: {{listen: \"127.0.0.1:9100\", require_token: true}}\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("metrics.require_token"), "{e}");
    }
}
