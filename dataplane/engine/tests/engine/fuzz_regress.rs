//! Inputs the engine fuzz target once failed on, replayed with the same driver
//! (`fuzz/fuzz_targets/engine.rs`): every flow must time out, nothing may panic.

use natfw_engine::engine::{Emit, Engine, EngineOptions, FlowEnd, GeoDb, Side};

use natfw_engine::time::Timestamp;
use natfw_policy::{
    Action, Destination, DomainMode, DomainPattern, Mode, Protocol, Rule, RuleAction,
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

fn drive(data: &[u8]) -> usize {
    let mut c = natfw_policy::config::embedded_default();
    c.firewall.rules = vec![
        rule("deny", "api.vendor.test", RuleAction::Drop),
        rule("allow", "www.pq.example.test", RuleAction::Accept),
    ];
    c.firewall.default_action = Action::Accept;
    c.firewall.mode = Mode::Strict;
    let opts = EngineOptions {
        max_flows: 64,
        per_flow_hold_bytes: 4096,
        global_hold_bytes: 64 * 1024,
        ..EngineOptions::default()
    };
    let records: Vec<FlowEnd> = Vec::new();
    let mut e = Engine::with_options(&c, GeoDb::embedded(), Box::new(records), opts).unwrap();
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
    }
    e.poll(now.add(std::time::Duration::from_secs(4000)));
    e.poll(now.add(std::time::Duration::from_secs(4020)));
    let left = e.flow_count();
    e.shutdown(now);
    left
}

/// A ClientHello held until the identification deadline, denied in strict mode at a poll long
/// after: the tombstone lives on 10 s past that poll (the driver polls once more).
#[test]
fn held_hello_denied_at_a_late_poll() {
    let data = include_bytes!("../data/engine_fuzz_stuck_flow.bin");
    assert_eq!(drive(data), 0, "every flow times out");
}
