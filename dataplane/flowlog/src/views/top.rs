//! `natfw top`: outbound ranking per private source IP (top talkers).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use super::{for_each_record, human_bytes, InputStats, ViewError};

/// Distinct domains remembered per source; the rest are summed under "other" so that a host
/// contacting millions of names cannot exhaust memory.
pub const MAX_DOMAINS_PER_SOURCE: usize = 256;

/// Ranking key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    /// Bytes out + in.
    #[default]
    Bytes,
    /// Number of flows.
    Flows,
}

/// One private source's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Talker {
    pub src_ip: String,
    pub flows: u64,
    /// Flows whose action was `drop`.
    pub dropped: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Top domains by bytes (out + in), at most three, largest first.
    pub top_domains: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
struct Acc {
    flows: u64,
    dropped: u64,
    bytes_out: u64,
    bytes_in: u64,
    domains: HashMap<String, u64>,
}

/// Aggregates `files`: every source, ranked by `by` (ties: the other key, then the address).
pub fn top(files: &[PathBuf], by: TopBy) -> Result<(Vec<Talker>, InputStats), ViewError> {
    top_where(files, by, &mut |_| true)
}

/// [`top`] over the records for which `keep` is true (the console's time range).
pub fn top_where(
    files: &[PathBuf],
    by: TopBy,
    keep: &mut dyn FnMut(&crate::FlowRecord) -> bool,
) -> Result<(Vec<Talker>, InputStats), ViewError> {
    let mut acc: HashMap<String, Acc> = HashMap::new();
    let stats = for_each_record(files, |r| {
        if !keep(&r) {
            return Ok(());
        }
        let a = acc.entry(r.src_ip.clone()).or_default();
        a.flows += 1;
        a.dropped += u64::from(r.action == "drop");
        a.bytes_out = a.bytes_out.saturating_add(r.out_packet_bytes);
        a.bytes_in = a.bytes_in.saturating_add(r.in_packet_bytes);
        if let Some(d) = r.domain {
            let bytes = r.out_packet_bytes.saturating_add(r.in_packet_bytes);
            if let Some(v) = a.domains.get_mut(&d) {
                *v = v.saturating_add(bytes);
            } else if a.domains.len() < MAX_DOMAINS_PER_SOURCE {
                a.domains.insert(d, bytes);
            }
        }
        Ok(())
    })?;
    let mut talkers: Vec<Talker> = acc
        .into_iter()
        .map(|(src_ip, a)| {
            let mut domains: Vec<(String, u64)> = a.domains.into_iter().collect();
            domains.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            domains.truncate(3);
            Talker {
                src_ip,
                flows: a.flows,
                dropped: a.dropped,
                bytes_out: a.bytes_out,
                bytes_in: a.bytes_in,
                top_domains: domains,
            }
        })
        .collect();
    let bytes = |t: &Talker| t.bytes_out.saturating_add(t.bytes_in);
    talkers.sort_by(|a, b| {
        let (ka, kb) = match by {
            TopBy::Bytes => ((bytes(a), a.flows), (bytes(b), b.flows)),
            TopBy::Flows => ((a.flows, bytes(a)), (b.flows, bytes(b))),
        };
        kb.cmp(&ka).then_with(|| {
            // Numeric address order for ties, text order if a field is not an address.
            match (
                a.src_ip.parse::<std::net::IpAddr>(),
                b.src_ip.parse::<std::net::IpAddr>(),
            ) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.src_ip.cmp(&b.src_ip),
            }
        })
    });
    Ok((talkers, stats))
}

/// Prints the first `limit` talkers as a table.
pub fn print_top(talkers: &[Talker], limit: usize, out: &mut dyn Write) -> std::io::Result<()> {
    let w = talkers
        .iter()
        .take(limit)
        .map(|t| t.src_ip.len())
        .max()
        .unwrap_or(0)
        .max(15);
    writeln!(
        out,
        "{:<4} {:<w$} {:>7} {:>7} {:>10} {:>10}  TOP DOMAINS",
        "#", "SOURCE", "FLOWS", "DROPPED", "BYTES OUT", "BYTES IN"
    )?;
    for (i, t) in talkers.iter().take(limit).enumerate() {
        let domains: Vec<String> = t
            .top_domains
            .iter()
            .map(|(d, b)| format!("{d} ({})", human_bytes(*b)))
            .collect();
        let domains = if domains.is_empty() {
            "-".to_string()
        } else {
            domains.join(", ")
        };
        writeln!(
            out,
            "{:<4} {:<w$} {:>7} {:>7} {:>10} {:>10}  {domains}",
            i + 1,
            t.src_ip,
            t.flows,
            t.dropped,
            human_bytes(t.bytes_out),
            human_bytes(t.bytes_in),
        )?;
    }
    if talkers.len() > limit {
        writeln!(out, "({} more sources)", talkers.len() - limit)?;
    }
    Ok(())
}
