//! The whole engine on arbitrary frames from both sides, with time moving, timers, emits and
//! shutdown: it must never panic, and flows must stay bounded.
//!
//! Input: a sequence of records `[ctl, len_hi, len_lo, frame...]`. `ctl` bit 0: side (0 inside,
//! 1 outside); bit 1: first pass the frame through `to_outside_view` (a captured reply); bits
//! 2..=7: milliseconds × 64 to advance the clock before the frame (then `poll`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use natfw_engine::engine::{Emit, Engine, EngineOptions, FlowEnd, GeoDb, Side};

use natfw_engine::time::Timestamp;
use natfw_policy::{
    Action, Config, Destination, DomainMode, DomainPattern, Mode, Protocol, Rule, RuleAction,
};

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

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut c = natfw_policy::config::embedded_default();
        // Domain rules keep verdicts pending, so holding, release and RSTs are exercised.
        c.firewall.rules = vec![
            rule("deny", "api.vendor.test", RuleAction::Drop),
            rule("allow", "www.pq.example.test", RuleAction::Accept),
        ];
        c.firewall.default_action = Action::Accept;
        c.firewall.mode = Mode::Strict;
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let records: Vec<FlowEnd> = Vec::new();
    let opts = EngineOptions {
        max_flows: 64,
        per_flow_hold_bytes: 4096,
        global_hold_bytes: 64 * 1024,
        ..EngineOptions::default()
    };
    let Ok(mut e) = Engine::with_options(config(), GeoDb::embedded(), Box::new(records), opts)
    else {
        return;
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
            now = now.add(std::time::Duration::from_millis(advance));
            e.poll(now);
        }
        let mut f = frame.to_vec();
        let side = if ctl & 1 == 0 { Side::Inside } else { Side::Outside };
        if ctl & 2 != 0 {
            e.to_outside_view(&mut f);
        }
        e.process(now, side, &mut f);
        e.drain_emits(&mut emits);
        assert!(e.flow_count() <= 64);
    }
    // Identification deadlines first (a denied flow then lingers 10 s as a tombstone), then
    // every idle timeout.
    e.poll(now.add(std::time::Duration::from_secs(4000)));
    e.poll(now.add(std::time::Duration::from_secs(4020)));
    assert_eq!(e.flow_count(), 0, "every flow times out");
    e.shutdown(now);
    e.drain_emits(&mut emits);
});
