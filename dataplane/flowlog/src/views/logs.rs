//! `natfw logs`: search flow logs by source, destination, domain, action and time.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{for_each_record, human_bytes, InputStats, ViewError};
use crate::{parse_rfc3339, FlowRecord};
use natfw_engine::time::Timestamp;

/// A domain query: `api.example.com` (exactly) or `*.example.com` (any name under it, not
/// example.com itself — the same rule as the ACL's wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainQuery {
    Exact(String),
    Suffix(String),
}

impl DomainQuery {
    /// Parses and normalises (lower case, no trailing dot, IDNA) like the engine does.
    pub fn parse(s: &str) -> Result<DomainQuery, ViewError> {
        let bad = || ViewError::Usage(format!("bad domain `{s}`: want name or *.name"));
        match s.strip_prefix("*.") {
            Some(rest) => natfw_policy::domain::normalize(rest)
                .map(DomainQuery::Suffix)
                .ok_or_else(bad),
            None => natfw_policy::domain::normalize(s)
                .map(DomainQuery::Exact)
                .ok_or_else(bad),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            DomainQuery::Exact(d) => name == d,
            DomainQuery::Suffix(d) => name
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// Which records `natfw logs` prints. Empty = every record.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Source address or CIDR.
    pub src: Option<IpNet>,
    /// Destination address or CIDR.
    pub dst: Option<IpNet>,
    pub domain: Option<DomainQuery>,
    /// `accept` or `drop`.
    pub action: Option<String>,
    /// Flows still active at or after this time (end_time >= since).
    pub since: Option<Timestamp>,
    /// Flows that started at or before this time (start_time <= until).
    pub until: Option<Timestamp>,
}

/// `10.0.1.10` or `10.0.1.0/24`.
pub fn parse_net(s: &str) -> Result<IpNet, ViewError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    s.parse::<IpNet>()
        .map_err(|_| ViewError::Usage(format!("bad address `{s}`: want an IP or a CIDR")))
}

impl LogFilter {
    /// Whether `r` passes every condition. Records whose fields do not parse never match a
    /// condition on that field.
    pub fn matches(&self, r: &FlowRecord) -> bool {
        let in_net = |net: &Option<IpNet>, ip: &str| match net {
            None => true,
            Some(n) => ip.parse::<IpAddr>().is_ok_and(|ip| n.contains(&ip)),
        };
        if !in_net(&self.src, &r.src_ip) || !in_net(&self.dst, &r.dst_ip) {
            return false;
        }
        if let Some(q) = &self.domain {
            if !r.domain.as_deref().is_some_and(|d| q.matches(d)) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            if !r.action.eq_ignore_ascii_case(a) {
                return false;
            }
        }
        if let Some(since) = self.since {
            if parse_rfc3339(&r.end_time).is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(until) = self.until {
            if parse_rfc3339(&r.start_time).is_none_or(|t| t > until) {
                return false;
            }
        }
        true
    }
}

/// Output format of [`logs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Aligned columns: time, src, dst:port, proto, app, domain, action, rule, bytes.
    Table,
    /// The matching records as JSON lines, unchanged.
    Json,
}

fn endpoint(ip: &str, port: Option<u16>) -> String {
    match (port, ip.contains(':')) {
        (None, _) => ip.to_string(),
        (Some(p), false) => format!("{ip}:{p}"),
        (Some(p), true) => format!("[{ip}]:{p}"),
    }
}

const HEADER: [&str; 9] = [
    "TIME",
    "SOURCE",
    "DESTINATION",
    "PROTO",
    "APP",
    "DOMAIN",
    "ACTION",
    "RULE",
    "BYTES",
];
const WIDTHS: [usize; 8] = [24, 21, 21, 5, 7, 28, 7, 16];

fn table_row(out: &mut dyn Write, cells: &[&str; 9]) -> std::io::Result<()> {
    let mut line = String::with_capacity(160);
    for (cell, w) in cells.iter().zip(WIDTHS) {
        line.push_str(cell);
        // At least one space, even when a cell overflows its column.
        let pad = w.saturating_sub(cell.chars().count()).max(1);
        line.extend(std::iter::repeat_n(' ', pad));
    }
    line.push_str(cells[8]);
    writeln!(out, "{}", line.trim_end())
}

/// Prints the records of `files` that pass `filter`; returns (input stats, records printed).
pub fn logs(
    files: &[PathBuf],
    filter: &LogFilter,
    format: LogFormat,
    out: &mut dyn Write,
) -> Result<(InputStats, u64), ViewError> {
    let mut shown = 0u64;
    if format == LogFormat::Table {
        table_row(out, &HEADER)?;
    }
    let stats = for_each_record(files, |r| {
        if !filter.matches(&r) {
            return Ok(());
        }
        shown += 1;
        match format {
            LogFormat::Json => {
                serde_json::to_writer(&mut *out, &r).map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            LogFormat::Table => {
                let src = endpoint(&r.src_ip, r.src_port);
                let dst = endpoint(&r.dst_ip, r.dst_port);
                let mut bytes = human_bytes(r.out_packet_bytes.saturating_add(r.in_packet_bytes));
                if r.is_interim() {
                    // A live flow's record: its bytes so far.
                    bytes.push_str(" (live)");
                }
                table_row(
                    out,
                    &[
                        &r.start_time,
                        &src,
                        &dst,
                        &r.ip_protocol,
                        r.app_name.as_deref().unwrap_or("-"),
                        r.domain.as_deref().unwrap_or("-"),
                        &r.action,
                        r.acl_rule_id.as_deref().unwrap_or("-"),
                        &bytes,
                    ],
                )?;
            }
        }
        Ok(())
    })?;
    Ok((stats, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_queries() {
        let q = DomainQuery::parse("*.Example.COM.").unwrap();
        assert_eq!(q, DomainQuery::Suffix("example.com".into()));
        assert!(q.matches("api.example.com") && q.matches("a.b.example.com"));
        assert!(!q.matches("example.com") && !q.matches("badexample.com"));
        let q = DomainQuery::parse("api.example.com").unwrap();
        assert!(q.matches("api.example.com") && !q.matches("x.api.example.com"));
        assert!(DomainQuery::parse("*.").is_err());
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("10.0.1.10").unwrap().to_string(), "10.0.1.10/32");
        assert_eq!(parse_net("10.0.1.0/24").unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(parse_net("10.0.1").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("10.0.0.1", Some(80)), "10.0.0.1:80");
        assert_eq!(endpoint("2001:db8::1", Some(443)), "[2001:db8::1]:443");
        assert_eq!(endpoint("10.0.0.1", None), "10.0.0.1");
    }
}
