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

/// Sum of every sample of `series` whose line contains all of `labels`.
pub fn metric_sum(text: &str, series: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|name| name == series)
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A scenario-1 lab (`tag`) in natfw mode and the config of the `host`'s gateway with the fast
/// path said explicitly and a metrics listener on `metrics`; `None` (SKIP printed for `what`)
/// without the lab's prerequisites. natfw is not started.
pub struct FastPathLab {
    pub lab: natfw_lab::LabGuard,
    /// The gateway's index in the plan and the gateway.
    pub gi: usize,
    pub g: natfw_lab::GatewaySpec,
    pub cfg_text: String,
}

pub fn fast_path_lab(what: &str, tag: &str, host: &str, metrics: &str) -> Option<FastPathLab> {
    use natfw_lab::{gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab {what} test {tag}: {why}");
        return None;
    }
    let mut o = Options::new(std::path::PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    let lab = LabGuard(Lab::up(plan(Scenario::ProdTest, tag), o).expect("lab up"));
    let gi = lab.plan.host(host).expect("host").gateway;
    let g = lab.plan.gateways[gi].clone();
    let base = gateway_config_text(&g).expect("embedded config");
    // The fast path is the default (`gateway.fast_path`); said explicitly all the same.
    assert!(!base.contains("fast_path"), "{base}");
    let base = base.replacen("gateway:\n", "gateway:\n  fast_path: true\n", 1);
    assert!(base.contains("fast_path: true"), "{base}");
    let cfg_text = format!("{base}metrics:\n  listen: \"{metrics}\"\n");
    Some(FastPathLab {
        lab,
        gi,
        g,
        cfg_text,
    })
}
