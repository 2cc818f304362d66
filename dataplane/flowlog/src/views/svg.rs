//! A small hand-written SVG line chart: time on x, Mbit/s on y, one polyline per series, the
//! protected bandwidth as a dashed line and the intervals above it shaded and marked.

use std::fmt::Write as _;
use std::time::Duration;

use super::overview::Overview;
use crate::format_rfc3339_millis;
use natfw_engine::time::Timestamp;

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// One value per interval.
    pub values: Vec<f64>,
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    /// Start of the first interval.
    pub start: Timestamp,
    pub interval: Duration,
    pub series: Vec<Series>,
    /// The protected bandwidth, drawn as a dashed line.
    pub threshold: Option<f64>,
    /// Intervals to shade (same length as the series).
    pub flagged: Vec<bool>,
}

const W: f64 = 960.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 70.0;

/// Escapes text for an XML text node or attribute.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let f = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

/// `HH:MM` (`HH:MM:SS` for sub-minute intervals), with the date when the chart spans days.
fn time_label(ts: Timestamp, with_date: bool, with_secs: bool) -> String {
    let full = format_rfc3339_millis(ts); // 2026-11-28T17:11:22.123Z
    let (date, time) = (
        &full[5..10],
        if with_secs {
            &full[11..19]
        } else {
            &full[11..16]
        },
    );
    if with_date {
        format!("{date} {time}")
    } else {
        time.to_string()
    }
}

/// Renders the chart as a standalone SVG document.
pub fn render(c: &Chart) -> String {
    let n = c.series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let data_max = c
        .series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top_value = data_max.max(c.threshold.unwrap_or(0.0)).max(1e-6) * 1.1;
    let step = nice_step(top_value, 5.0);
    let y_max = (top_value / step).ceil() * step;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    // Each interval is a slot; a point sits in the middle of its slot.
    let slot = pw / n.max(1) as f64;
    let x = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let y = |v: f64| TOP + ph - (v.clamp(0.0, y_max) / y_max) * ph;

    let mut s = String::with_capacity(8192);
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
        W / 2.0,
        esc(&c.title)
    );

    // Shaded intervals first, so the lines stay on top.
    let _ = writeln!(s, r#"<g class="exceeded">"#);
    for (i, _) in c.flagged.iter().enumerate().filter(|(_, f)| **f) {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="#d62728" fill-opacity="0.12"/>"##,
            LEFT + slot * i as f64,
            slot
        );
    }
    let _ = writeln!(s, "</g>");

    // Y grid and labels.
    let _ = writeln!(s, r#"<g class="y-axis">"#);
    // Steps are 1, 2 or 5 × 10^k: k decimals below 1 label every tick distinctly.
    let decimals = (-step.log10().floor()).clamp(0.0, 9.0) as usize;
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            yy + 4.0,
            if v == 0.0 {
                "0".to_string()
            } else {
                format!("{v:.decimals$}")
            }
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(&c.y_label)
    );
    let _ = writeln!(s, "</g>");

    // X axis: at most ~8 labels.
    let _ = writeln!(s, r#"<g class="x-axis">"#);
    let span = c.interval.saturating_mul(n as u32);
    let with_date = span > Duration::from_secs(86_400);
    let with_secs = !c.interval.as_secs().is_multiple_of(60);
    let every = n.div_ceil(8).max(1);
    for i in (0..n).step_by(every) {
        let ts = c.start.add(c.interval.saturating_mul(i as u32));
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#333333"/>"##,
            x(i),
            TOP + ph,
            TOP + ph + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(i),
            TOP + ph + 20.0,
            esc(&time_label(ts, with_date, with_secs))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (UTC), {}s intervals</text>"#,
        LEFT + pw / 2.0,
        H - 18.0,
        c.interval.as_secs()
    );
    let _ = writeln!(
        s,
        r##"<polyline points="{LEFT},{TOP} {LEFT},{0} {1},{0}" fill="none" stroke="#333333"/>"##,
        TOP + ph,
        W - RIGHT
    );
    let _ = writeln!(s, "</g>");

    if let Some(t) = c.threshold {
        let _ = writeln!(
            s,
            r##"<g class="bandwidth"><line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#d62728">protected bandwidth {4} Mbit/s</text></g>"##,
            y(t),
            W - RIGHT,
            W - RIGHT - 4.0,
            y(t) - 6.0,
            t
        );
    }

    for (k, ser) in c.series.iter().enumerate() {
        let pts: Vec<String> = ser
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(if v.is_finite() { *v } else { 0.0 })))
            .collect();
        let _ = writeln!(
            s,
            r#"<g class="series" id="series-{k}"><title>{}</title><polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            esc(&ser.name),
            pts.join(" "),
            ser.color
        );
        for (i, v) in ser.values.iter().enumerate() {
            let over = c.threshold.is_some_and(|t| *v > t);
            if over || n <= 60 {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{}"/>"##,
                    x(i),
                    y(*v),
                    if over { 4 } else { 2 },
                    if over { "#d62728" } else { ser.color }
                );
            }
        }
        let _ = writeln!(s, "</g>");
        // Legend entry.
        let ly = TOP - 14.0;
        let lx = LEFT + 150.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<g class="legend"><line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            lx + 20.0,
            ser.color,
            lx + 26.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The overview's chart: outbound and inbound Mbit/s per interval.
pub fn overview_chart(o: &Overview, title: &str) -> String {
    render(&Chart {
        title: title.to_string(),
        y_label: "Mbit/s".into(),
        start: o.buckets.first().map_or(Timestamp(0), |b| b.start),
        interval: o.interval,
        series: vec![
            Series {
                name: "outbound".into(),
                color: "#1f77b4",
                values: o.buckets.iter().map(|b| b.mbps_out).collect(),
            },
            Series {
                name: "inbound".into(),
                color: "#2ca02c",
                values: o.buckets.iter().map(|b| b.mbps_in).collect(),
            },
        ],
        threshold: o.bandwidth_mbps,
        flagged: o.buckets.iter().map(|b| b.exceeded).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.33, 5.0), 0.1);
        assert_eq!(nice_step(1100.0, 5.0), 500.0);
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }
}
