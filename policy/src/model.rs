//! The validated configuration of one gateway. Address books are already resolved into the
//! rules that use them; every value here has passed validation.
//!
//! The YAML layout that produces it is documented in README.md ("Configuration reference").

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use crate::app::App;

/// Where a value came from in the config file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A whole natfw configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: Gateway,
    pub firewall: Firewall,
    pub logging: Logging,
    pub geo: GeoConfig,
    /// Admin API listener; `None` = no admin API.
    pub admin: Option<AdminConfig>,
    /// Prometheus metrics listener; `None` = no exporter.
    pub metrics: Option<MetricsConfig>,
    /// What the gateway forwards while `natfw run` is not forwarding (not started, crashed,
    /// stopping, restarting).
    pub fail_mode: FailMode,
    /// The gateway's own DNS: resolution of rule names, on-demand verification, forwarder.
    pub dns: DnsConfig,
}

/// `dns`: how the gateway resolves names itself and (optionally) forwards the VPC's queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Upstream resolvers; empty = the system's (`/etc/resolv.conf`).
    pub resolvers: Vec<std::net::SocketAddr>,
    /// Shortest interval between two resolutions of a rule name (TTL floor), seconds.
    pub refresh_min_secs: u32,
    /// Longest interval between two resolutions of a rule name (TTL ceiling), seconds.
    pub refresh_max_secs: u32,
    /// Most names the gateway keeps resolved for rules (the rest are left unresolved, with a
    /// warning).
    pub max_names: usize,
    /// Resolve the name a flow presents when an `fqdn_and_dns` rule needs its addresses.
    pub verify: bool,
    /// How long such a flow waits for that resolution, ms.
    pub verify_timeout_ms: u64,
    /// Names resolved on demand at once.
    pub verify_concurrency: usize,
    /// The DNS forwarder; `None` = none.
    pub forwarder: Option<ForwarderConfig>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            resolvers: Vec::new(),
            refresh_min_secs: 30,
            refresh_max_secs: 3600,
            max_names: 4096,
            verify: true,
            verify_timeout_ms: 2000,
            verify_concurrency: 64,
            forwarder: None,
        }
    }
}

/// `dns.forwarder`: answer the VPC's queries by forwarding them upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Inside address (UDP and TCP) the forwarder answers on.
    pub listen: std::net::SocketAddr,
    /// Refuse queries for names a rule denies; `None` = answer every query.
    pub refuse_denied: Option<Refusal>,
    /// Queries being forwarded at once; more are answered SERVFAIL.
    pub max_inflight: usize,
}

/// How the forwarder refuses a denied name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NxDomain,
    Refused,
}

/// `fail_mode`: what happens to SNAT-bound traffic while natfw is not forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailMode {
    /// Nothing SNAT-bound is forwarded (an nftables guard that outlives the process drops it);
    /// bypassed sources keep their kernel NAT.
    #[default]
    Closed,
    /// The kernel forwards and SNATs it, uninspected and unlogged, until natfw forwards again.
    Open,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}

/// The NAT gateway: interfaces, EIPs and how private sources map onto them.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub name: String,
    /// Interface facing the VPC hosts.
    pub inside: String,
    /// Interface facing the internet (the EIPs live here).
    pub outside: String,
    /// 1 to 10 elastic IPs.
    pub eips: Vec<IpAddr>,
    /// SNAT entries, sources disjoint.
    pub snat: Vec<SnatEntry>,
    /// DNAT entries; only allowed while the firewall is disabled.
    pub dnat: Vec<DnatEntry>,
    /// Sources that are SNATed but not inspected by the firewall.
    pub bypass: Vec<IpNet>,
    /// `allow_bypass_all: true`: a bypass entry may cover every SNAT source (`0.0.0.0/0`,
    /// `::/0`, or a prefix containing all SNAT entries of its family), i.e. switch the
    /// firewall off for everything.
    pub allow_bypass_all: bool,
    /// The bandwidth the firewall is sized for, in Mbit/s (traffic trend views flag excess).
    pub protected_bandwidth_mbps: Option<u64>,
    /// `fast_path` (default true): flows the engine has decided and finished inspecting are
    /// forwarded in the kernel (tc-BPF) instead of crossing the engine packet by packet, and
    /// the engine's packets reach it through a veth pair per side (split mode); false =
    /// classic mode, XDP on the real interfaces and every packet through the engine.
    pub fast_path: bool,
    /// `workers` (1..8, default 1): packet workers, one engine and one pinned thread each
    /// (CPU 0, 1, ...); flows are partitioned by port so both directions meet the same
    /// worker. More than one needs `fast_path`.
    pub workers: u16,
}

/// One SNAT entry: a private source range and the EIPs its flows are translated to.
#[derive(Debug, Clone, PartialEq)]
pub struct SnatEntry {
    pub name: String,
    pub source: IpNet,
    pub eips: Vec<IpAddr>,
}

/// One DNAT (port forwarding) entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DnatEntry {
    pub name: String,
    pub eip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub to: IpAddr,
    pub to_port: u16,
}

/// Loose or strict handling of flows whose domain/application cannot be identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// The unknown condition is treated as not matching and evaluation goes on.
    #[default]
    Loose,
    /// A rule that cannot be evaluated because of an unknown fact drops the flow.
    Strict,
}

/// Loose mode's handling of a flow whose name the client made impossible to read (its
/// ClientHello or request head is over the hold/reassembly limits, or stops before the name
/// until identification times out) while the verdict depends on that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnUnidentifiable {
    /// Like any unknown fact in loose mode: not matching, evaluation goes on (the appliance).
    #[default]
    Accept,
    /// Drop the flow (RST both ways).
    Drop,
}

/// The firewall: on/off, mode, default action and the ordered rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Firewall {
    /// `false` = SNAT only, nothing inspected or denied.
    pub enabled: bool,
    pub mode: Mode,
    /// Loose mode: a flow whose name the client made unreadable (see [`OnUnidentifiable`]).
    pub on_unidentifiable: OnUnidentifiable,
    /// Applied when no rule decides.
    pub default_action: Action,
    /// The ordered rules, address books already resolved. Index = [`RuleId`].
    pub rules: Vec<Rule>,
}

/// Final action of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    #[default]
    Accept,
    Drop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
        }
    }
}

/// Action of a rule: deciding (`accept`/`drop`) or monitoring (`log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Accept,
    Drop,
    /// Record the rule name on the flow and continue evaluating.
    Log,
}

/// Rule protocol condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

/// How a domain condition is checked (docs/CONTRACT.md, "Verdict semantics").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DomainMode {
    /// The name the client sent (TLS SNI, HTTP Host, QUIC SNI).
    #[default]
    Fqdn,
    /// The destination IP is one the domain resolved to.
    Dns,
    /// Either of the above.
    FqdnOrDns,
    /// Both: the sent name matches and the destination IP is one that name resolved to.
    FqdnAndDns,
}

/// A normalised domain pattern: `example.com` (exact) or `*.example.com` (any name below).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainPattern {
    Exact(String),
    /// The suffix without the `*.`: matches names that end in `.` + suffix.
    Wildcard(String),
}

impl DomainPattern {
    /// Does `name` (already normalised) match this pattern?
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DomainPattern::Exact(p) => p == name,
            DomainPattern::Wildcard(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(p) => f.write_str(p),
            DomainPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// ISO 3166-1 alpha-2 code, upper case ASCII (`CN`, `DE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(pub [u8; 2]);

impl CountryCode {
    /// From two ASCII letters, any case.
    pub fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
            .then(|| CountryCode([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule's destination is.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Destination {
    #[default]
    Any,
    /// IP prefixes (from CIDRs or an IP address book).
    Cidrs(Vec<IpNet>),
    /// Domain patterns (from names or a domain address book), checked per `domain_mode`.
    Domains(Vec<DomainPattern>),
    /// Countries (continents are expanded into their countries at load time).
    Location(Vec<CountryCode>),
}

/// One ACL rule, address books resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: String,
    /// `None` = any source.
    pub source: Option<Vec<IpNet>>,
    pub destination: Destination,
    pub domain_mode: DomainMode,
    pub protocol: Protocol,
    /// Destination port ranges; `None` = any port.
    pub ports: Option<Vec<RangeInclusive<u16>>>,
    /// `None` = ANY application.
    pub applications: Option<Vec<App>>,
    pub action: RuleAction,
    pub enabled: bool,
    /// Where the rule starts in the config file.
    pub pos: Pos,
}

/// Flow-log output.
#[derive(Debug, Clone, PartialEq)]
pub struct Logging {
    /// Path of the JSON-lines flow log; `-` = stdout.
    pub flow_log: String,
    /// Rotate when the file reaches this many bytes; `None` = never.
    pub rotate_bytes: Option<u64>,
    /// How many rotated files to keep.
    pub keep: u32,
    /// Layout of each record: natfw's own fields (default) or Elastic Common Schema.
    pub format: RecordFormat,
    /// A live flow gets a `flow_interim` record per this interval (`interim_interval`).
    pub interim_interval: std::time::Duration,
    /// The remote syslog sink (`logging.syslog`), if any.
    pub syslog: Option<Syslog>,
}

/// `logging.syslog`: every flow-log line also goes, as the MSG of an RFC 5424 message, to a
/// syslog receiver over TCP (octet-counting framing, RFC 6587), optionally in TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syslog {
    /// `host:port` (a name, an IPv4 address or `[IPv6]`), resolved at each connection.
    pub address: String,
    /// The host part of `address` (brackets removed).
    pub host: String,
    pub port: u16,
    /// TLS to the receiver, verified against `ca_file`.
    pub tls: bool,
    /// PEM CA certificate(s) the receiver's certificate must chain to (required with `tls`).
    pub ca_file: Option<String>,
    /// Name the receiver's certificate must carry; default: the host of `address`.
    pub server_name: Option<String>,
    /// Records queued for the receiver before new ones are dropped (counted).
    pub queue: usize,
}

/// Default `logging.syslog.queue`.
pub const SYSLOG_DEFAULT_QUEUE: usize = 10_000;

/// Default `logging.interim_interval`.
pub const DEFAULT_INTERIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Parses a duration like `30s`, `1m`, `5m`, `1h`, `1d` (a bare number is seconds), at least
/// one second: the syntax of `logging.interim_interval` and `natfw overview --interval`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad interval `{s}`: want e.g. 30s, 1m, 1h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad interval unit in `{s}`: use s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(secs) if secs > 0 => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!("bad interval `{s}`: must be at least 1s")),
    }
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// The flow-log record of the contract (`src_ip`, `acl_rule_id`, ...).
    #[default]
    Json,
    /// The same facts as Elastic Common Schema fields (`source.ip`, `rule.name`, ...).
    Ecs,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            flow_log: "-".into(),
            rotate_bytes: None,
            keep: 5,
            format: RecordFormat::Json,
            interim_interval: DEFAULT_INTERIM_INTERVAL,
            syslog: None,
        }
    }
}

/// Country database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeoConfig {
    /// Path to an MMDB file; `None` = the embedded default database.
    pub database: Option<String>,
}

/// Admin API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token.
    pub token_file: String,
    /// TLS certificate and key (PEM); both `None` only allowed on loopback with `plain_http`.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Explicitly allow plain HTTP (loopback listeners only).
    pub plain_http: bool,
}

/// Prometheus exporter listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
    /// `GET /metrics` needs the admin API's bearer token (`admin.token_file`).
    pub require_token: bool,
}

/// Does bypassing `net` switch the firewall off for every source (a `/0`, or a prefix that
/// contains every SNAT entry of its family)?
pub fn bypass_opens_everything(net: &IpNet, snat: &[SnatEntry]) -> bool {
    if net.prefix_len() == 0 {
        return true;
    }
    let same: Vec<&SnatEntry> = snat
        .iter()
        .filter(|e| e.source.addr().is_ipv4() == net.addr().is_ipv4())
        .collect();
    !same.is_empty() && same.iter().all(|e| net.contains(&e.source))
}

/// Index of a rule in [`Firewall::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u32);
