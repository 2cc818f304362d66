//! The engine fuzz driver, shared by the fuzz target (`fuzz/fuzz_targets/engine.rs`) and the
//! regression test that replays the inputs it once failed on
//! (`dataplane/engine/tests/engine/fuzz_regress.rs`), so both run exactly the same steps.
//! Compiled only with the `fuzzing` feature.

use std::sync::OnceLock;
use std::time::Duration;

use natfw_policy::{
    Action, Config, Destination, DomainMode, DomainPattern, Mode, Protocol, Rule, RuleAction,
};

use crate::engine::{Emit, Engine, EngineOptions, FlowEnd, GeoDb, Side};
use crate::time::Timestamp;

/// Most flows the driven engine keeps.
pub const MAX_FLOWS: usize = 64;

fn rule(name: &str, domain: &str, action: RuleAction) -> Rule {
    Rule {
        name: name.into(),
        description: String::new(),
        source: None,
        destination: Destination::Domains(vec![DomainPattern::Exact(domain.into())]),
        domain_mode: DomainMode::FqdnOrDns,
        protocol: Protocol::Any,
        ports: None,
        applications: None,
        action,
        enabled: true,
        pos: Default::default(),
    }
}

/// The configuration the driver uses: domain rules keep verdicts pending, so holding, release
/// and RSTs are exercised; strict mode.
pub fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut c = natfw_policy::config::embedded_default();
        c.firewall.rules = vec![
            rule("deny", "api.vendor.test", RuleAction::Drop),
            rule("allow", "www.pq.example.test", RuleAction::Accept),
        ];
        c.firewall.default_action = Action::Accept;
        c.firewall.mode = Mode::Strict;
        c
    })
}

/// Drive the whole engine with `data`: arbitrary frames from both sides, time moving, timers,
/// emits and shutdown. Panics (the fuzzer's finding) if the flow table ever exceeds
/// [`MAX_FLOWS`]; returns how many flows are left after every timeout has passed (should be 0).
///
/// Input: a sequence of records `[ctl, len_hi, len_lo, frame...]`. `ctl` bit 0: side (0 inside,
/// 1 outside); bit 1: first pass the frame through `to_outside_view` (a captured reply); bits
/// 2..=7: milliseconds × 64 to advance the clock before the frame (then `poll`).
pub fn drive_engine(data: &[u8]) -> usize {
    let records: Vec<FlowEnd> = Vec::new();
    let opts = EngineOptions {
        max_flows: MAX_FLOWS,
        per_flow_hold_bytes: 4096,
        global_hold_bytes: 64 * 1024,
        ..EngineOptions::default()
    };
    let Ok(mut e) = Engine::with_options(config(), GeoDb::embedded(), Box::new(records), opts)
    else {
        return 0;
    };
    let mut now = Timestamp::from_secs(1_000);
    let mut emits: Vec<Emit> = Vec::new();
    let mut rest = data;
    while let [ctl, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let advance = u64::from(ctl >> 2) * 64;
        if advance > 0 {
            now = now.add(Duration::from_millis(advance));
            e.poll(now);
        }
        let mut f = frame.to_vec();
        let side = if ctl & 1 == 0 {
            Side::Inside
        } else {
            Side::Outside
        };
        if ctl & 2 != 0 {
            e.to_outside_view(&mut f);
        }
        e.process(now, side, &mut f);
        e.drain_emits(&mut emits);
        assert!(e.flow_count() <= MAX_FLOWS, "flow table over its bound");
    }
    // Identification deadlines first (a denied flow then lingers 10 s as a tombstone), then
    // every idle timeout.
    e.poll(now.add(Duration::from_secs(4000)));
    e.poll(now.add(Duration::from_secs(4020)));
    let left = e.flow_count();
    e.shutdown(now);
    e.drain_emits(&mut emits);
    left
}
