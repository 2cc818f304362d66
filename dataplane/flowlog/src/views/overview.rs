//! `natfw overview`: traffic per interval against the protected bandwidth.
//!
//! A flow record only has totals and its start and end, so its bytes are spread over the
//! intervals it spans in proportion to the overlap (a constant-rate estimate; exact for flows
//! shorter than an interval). Flows are counted in the interval where they started.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{for_each_record, human_bytes, InputStats, ViewError};
use crate::{format_rfc3339_millis, parse_rfc3339};
use natfw_engine::time::Timestamp;

/// Most intervals one overview may cover (dense series for the table and chart).
pub const MAX_INTERVALS: u64 = 100_000;

/// One interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Start of the interval.
    pub start: Timestamp,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Flows that started in this interval.
    pub flows: u64,
    pub mbps_out: f64,
    pub mbps_in: f64,
    /// Either direction above the protected bandwidth.
    pub exceeded: bool,
}

/// The trend: every interval from the first to the last with traffic, gaps filled with zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub interval: Duration,
    /// Protected bandwidth in Mbit/s, if known.
    pub bandwidth_mbps: Option<f64>,
    pub buckets: Vec<Bucket>,
}

impl Overview {
    /// Number of intervals above the protected bandwidth.
    pub fn exceeded(&self) -> usize {
        self.buckets.iter().filter(|b| b.exceeded).count()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    out: u64,
    inb: u64,
    flows: u64,
}

/// Adds `bytes` spread over `[start, end)` to the buckets (remainder to the last one so that
/// the totals stay exact).
fn spread(
    acc: &mut BTreeMap<u64, Acc>,
    iv: u64,
    start: u64,
    end: u64,
    out: u64,
    inb: u64,
) -> Result<(), ViewError> {
    let (first, last) = (start / iv, end.saturating_sub(1).max(start) / iv);
    if last - first >= MAX_INTERVALS {
        return Err(too_many());
    }
    let dur = u128::from(end.saturating_sub(start));
    if dur == 0 || first == last {
        let a = acc.entry(first).or_default();
        a.out = a.out.saturating_add(out);
        a.inb = a.inb.saturating_add(inb);
        return Ok(());
    }
    let (mut given_out, mut given_in) = (0u64, 0u64);
    for b in first..=last {
        let lo = start.max(b * iv);
        let hi = end.min((b + 1) * iv);
        let (o, i) = if b == last {
            (out - given_out, inb - given_in)
        } else {
            let part = u128::from(hi - lo);
            (
                (u128::from(out) * part / dur) as u64,
                (u128::from(inb) * part / dur) as u64,
            )
        };
        given_out += o;
        given_in += i;
        let a = acc.entry(b).or_default();
        a.out = a.out.saturating_add(o);
        a.inb = a.inb.saturating_add(i);
    }
    Ok(())
}

fn too_many() -> ViewError {
    ViewError::Usage(format!(
        "the logs span more than {MAX_INTERVALS} intervals; use a larger --interval"
    ))
}

/// Mbit/s of `bytes` over `secs`.
fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e6
}

/// Intervals [`overview_auto`] chooses from, finest first; each is a multiple of the one
/// before, so buckets merge exactly when the span grows.
pub const AUTO_INTERVALS: [Duration; 7] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(86_400),
    Duration::from_secs(7 * 86_400),
];

/// Most intervals [`overview_auto`] shows before it moves to the next coarser interval.
pub const AUTO_MAX_POINTS: u64 = 1_440;

/// Builds the trend of `files` with a fixed `interval`.
pub fn overview(
    files: &[PathBuf],
    interval: Duration,
    bandwidth_mbps: Option<f64>,
) -> Result<(Overview, InputStats), ViewError> {
    build(files, Some(interval), bandwidth_mbps, &mut |_| true)
}

/// [`overview`] of the records for which `keep` is true (the console's time range; `keep`
/// sees every record, so it can count them too).
pub fn overview_where(
    files: &[PathBuf],
    interval: Duration,
    bandwidth_mbps: Option<f64>,
    keep: &mut dyn FnMut(&crate::FlowRecord) -> bool,
) -> Result<(Overview, InputStats), ViewError> {
    build(files, Some(interval), bandwidth_mbps, keep)
}

/// Builds the trend of `files` with the finest of [`AUTO_INTERVALS`] that shows the whole time
/// span in at most [`AUTO_MAX_POINTS`] intervals (the coarsest if none does), in one pass:
/// buckets are merged into coarser ones as the span grows.
pub fn overview_auto(
    files: &[PathBuf],
    bandwidth_mbps: Option<f64>,
) -> Result<(Overview, InputStats), ViewError> {
    build(files, None, bandwidth_mbps, &mut |_| true)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Merge `acc`'s buckets of width `from` into buckets of width `to` (a multiple of `from`).
fn coarsen(acc: &mut BTreeMap<u64, Acc>, from: u64, to: u64) {
    let old = std::mem::take(acc);
    let k = to / from;
    for (b, a) in old {
        let n = acc.entry(b / k).or_default();
        n.out = n.out.saturating_add(a.out);
        n.inb = n.inb.saturating_add(a.inb);
        n.flows += a.flows;
    }
}

fn build(
    files: &[PathBuf],
    fixed: Option<Duration>,
    bandwidth_mbps: Option<f64>,
    keep: &mut dyn FnMut(&crate::FlowRecord) -> bool,
) -> Result<(Overview, InputStats), ViewError> {
    let mut level = 0usize;
    let mut iv = match fixed {
        Some(d) => nanos(d),
        None => nanos(AUTO_INTERVALS[0]),
    };
    if iv == 0 {
        return Err(ViewError::Usage("interval must be positive".into()));
    }
    let mut acc: BTreeMap<u64, Acc> = BTreeMap::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut bad_times = 0u64;
    let stats = for_each_record(files, |r| {
        if !keep(&r) {
            return Ok(());
        }
        let (Some(s), Some(e)) = (parse_rfc3339(&r.start_time), parse_rfc3339(&r.end_time)) else {
            bad_times += 1;
            return Ok(());
        };
        let (s, e) = (s.as_nanos(), e.as_nanos().max(s.as_nanos()));
        if fixed.is_none() {
            (lo, hi) = (lo.min(s), hi.max(e));
            while level + 1 < AUTO_INTERVALS.len()
                && hi.saturating_sub(1).max(lo) / iv - lo / iv >= AUTO_MAX_POINTS
            {
                level += 1;
                let next = nanos(AUTO_INTERVALS[level]);
                coarsen(&mut acc, iv, next);
                iv = next;
            }
        }
        spread(&mut acc, iv, s, e, r.out_packet_bytes, r.in_packet_bytes)?;
        acc.entry(s / iv).or_default().flows += 1;
        Ok(())
    })?;
    let interval = Duration::from_nanos(iv);
    let mut stats = stats;
    if bad_times > 0 {
        stats.bad_lines += bad_times;
        stats
            .first_bad
            .get_or_insert_with(|| "a record with an unreadable time".into());
    }
    let mut buckets = Vec::new();
    if let (Some((&first, _)), Some((&last, _))) = (acc.first_key_value(), acc.last_key_value()) {
        if last - first >= MAX_INTERVALS {
            return Err(too_many());
        }
        let secs = interval.as_secs_f64();
        for b in first..=last {
            let a = acc.get(&b).copied().unwrap_or_default();
            let (mo, mi) = (mbps(a.out, secs), mbps(a.inb, secs));
            buckets.push(Bucket {
                start: Timestamp(b * iv),
                bytes_out: a.out,
                bytes_in: a.inb,
                flows: a.flows,
                mbps_out: mo,
                mbps_in: mi,
                exceeded: bandwidth_mbps.is_some_and(|bw| mo > bw || mi > bw),
            });
        }
    }
    Ok((
        Overview {
            interval,
            bandwidth_mbps,
            buckets,
        },
        stats,
    ))
}

/// Mbit/s with three significant digits (`1234` → `1234`, `12.345` → `12.3`, `0.01094` →
/// `0.0109`), so that a value just above a small threshold never prints as equal to it.
pub fn fmt_mbps(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{v:.decimals$}")
}

/// Prints the overview as a table with a header line.
pub fn print_overview(o: &Overview, out: &mut dyn Write) -> std::io::Result<()> {
    let bw = match o.bandwidth_mbps {
        Some(b) => format!(
            "protected bandwidth {b} Mbit/s, {} of {} intervals above it",
            o.exceeded(),
            o.buckets.len()
        ),
        None => "protected bandwidth unknown (--bandwidth-mbps or --config)".into(),
    };
    writeln!(out, "interval {}s; {bw}", o.interval.as_secs())?;
    writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>12} {:>12} {:>6}",
        "INTERVAL START", "BYTES OUT", "BYTES IN", "OUT Mbit/s", "IN Mbit/s", "FLOWS"
    )?;
    for b in &o.buckets {
        writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>12} {:>12} {:>6}{}",
            format_rfc3339_millis(b.start),
            human_bytes(b.bytes_out),
            human_bytes(b.bytes_in),
            fmt_mbps(b.mbps_out),
            fmt_mbps(b.mbps_in),
            b.flows,
            if b.exceeded { "  EXCEEDED" } else { "" }
        )?;
    }
    let (out_total, in_total, flows) = o.buckets.iter().fold((0u64, 0u64, 0u64), |a, b| {
        (
            a.0.saturating_add(b.bytes_out),
            a.1.saturating_add(b.bytes_in),
            a.2 + b.flows,
        )
    });
    writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>12} {:>12} {:>6}",
        "TOTAL",
        human_bytes(out_total),
        human_bytes(in_total),
        "",
        "",
        flows
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbps_format() {
        assert_eq!(fmt_mbps(0.0), "0");
        assert_eq!(fmt_mbps(0.010_94), "0.0109");
        assert_eq!(fmt_mbps(0.5), "0.500");
        assert_eq!(fmt_mbps(12.345), "12.3");
        assert_eq!(fmt_mbps(1234.5), "1234");
        assert_eq!(fmt_mbps(1.0), "1.00");
    }

    #[test]
    fn spreading_keeps_totals_and_proportions() {
        let mut acc = BTreeMap::new();
        // 0.5 s .. 3.5 s over 1 s buckets: 0.5 / 1 / 1 / 0.5 of 3 s.
        spread(&mut acc, 1_000, 500, 3_500, 600, 7).unwrap();
        let outs: Vec<u64> = acc.values().map(|a| a.out).collect();
        assert_eq!(outs, vec![100, 200, 200, 100]);
        assert_eq!(acc.values().map(|a| a.inb).sum::<u64>(), 7);
        // A flow ending exactly on a boundary does not touch the next bucket.
        let mut acc = BTreeMap::new();
        spread(&mut acc, 1_000, 0, 2_000, 10, 0).unwrap();
        assert_eq!(acc.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        // Zero duration: all in the start bucket.
        let mut acc = BTreeMap::new();
        spread(&mut acc, 1_000, 1_500, 1_500, 10, 3).unwrap();
        assert_eq!(acc[&1].out, 10);
        // Absurd spans are refused, not iterated.
        let mut acc = BTreeMap::new();
        assert!(spread(&mut acc, 1, 0, u64::MAX, 1, 1).is_err());
    }
}
