//! Helpers shared by the lab test modules.

/// The value of one exposition line of `series` (name plus labels, exactly as exported) in
/// Prometheus text `text`; 0 when absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.starts_with(' ')
                .then(|| rest.trim().parse::<f64>().ok())
                .flatten()
        })
        .map_or(0, |v| v as u64)
}
