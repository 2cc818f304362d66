//! Restart without dropping connections: a stopping engine hands its offloaded flows over
//! ([`Engine::handover`]) instead of ending them, and the next engine adopts them
//! ([`Engine::adopt`]): they stay decided and offloaded, and their records are written when
//! they end, with counters covering the whole flow.
//!
//! The engine does no I/O here either: [`HandoverFlow`] is plain data, with a one-line text
//! form ([`HandoverFlow::encode`], [`HandoverFlow::decode`]) the caller stores where it likes.
//! The caller also says how the policy relates to the one the flows were decided under
//! ([`AdoptPolicy`]): under the same one, rule indices name the right rules and the verdicts
//! stand; under a changed firewall section every flow is decided again from the facts it was
//! handed over with, and only those the new policy still accepts are adopted.

use std::net::SocketAddr;

use natfw_policy::RuleId;

use super::flow::DnsWait;
use super::*;
use crate::stats::Counter;

/// One offloaded flow, as a stopping engine hands it to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverFlow {
    /// The tuple and translation (the kernel's entries are keyed by it).
    pub flow: OffloadFlow,
    pub start: Timestamp,
    /// Everything counted so far, the kernel's packets included.
    pub out: Counter,
    pub inb: Counter,
    /// What the kernel's entries had counted at the handover (included in `out`/`inb`): the
    /// next engine credits only what they count beyond it.
    pub kernel: OffloadCounts,
    pub decided_by: Option<DecidedBy>,
    /// The deciding rule's index in the policy the flow was decided under.
    pub rule: Option<u32>,
    pub monitors: Vec<u32>,
    pub domain: Option<String>,
    pub domain_src: DomainSrc,
    pub domain_fact: FactState,
    pub app: Option<natfw_policy::App>,
    pub app_fact: FactState,
    pub why: Option<&'static str>,
    pub country: Option<natfw_policy::CountryCode>,
    pub dns_verified: Option<DnsVerified>,
    pub ech: bool,
    pub client_payload: bool,
    pub fw_off: bool,
    pub isn_c: u32,
    pub isn_s: u32,
}

/// How the adopting engine's policy relates to the one the handed-over flows were decided
/// under ([`Engine::adopt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptPolicy {
    /// The same configuration: the flows keep their verdicts and rule attributions.
    Same,
    /// Another firewall section on the same gateway (EIPs, SNAT, workers unchanged): each flow
    /// is evaluated again, from its handed-over facts (destination, port, domain, application,
    /// country; facts that were pending count as unidentifiable, and the new process has not
    /// seen the DNS answers the old one had), and adopted only if the new policy accepts it.
    Reevaluate,
    /// Another gateway: nothing is adopted, every record is written at once.
    Other,
}

/// What [`Engine::adopt`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdoptStats {
    /// Flows now tracked and offloaded again.
    pub adopted: usize,
    /// Flows ended at once (their record written): the new policy denies them, the gateway
    /// changed, their kernel entries were gone, or the flow could not be tracked (tuple in use,
    /// table full, not an EIP).
    pub ended: usize,
    /// Of `adopted`: flows decided again under a changed policy ([`AdoptPolicy::Reevaluate`]).
    pub reevaluated: usize,
    /// Of `ended`: flows the changed policy denies.
    pub denied: usize,
}

/// Reasons a flow may carry (`why`), so a decoded one is the engine's own string.
const WHYS: [&str; 9] = [
    super::event::WHY_NO_NAME_PROTO,
    super::event::WHY_DNS_QUERY,
    super::event::WHY_UDP_NO_NAME,
    super::event::WHY_NOT_TLS_HTTP,
    super::event::WHY_ENDED_PENDING,
    super::event::WHY_HOLD_LIMIT,
    super::event::WHY_REASM_LIMIT,
    super::event::WHY_TIMEOUT,
    super::event::WHY_HELLO_TOO_LARGE,
];

fn fact_code(f: FactState) -> &'static str {
    match f {
        FactState::Pending => "p",
        FactState::Known => "k",
        FactState::Unidentifiable => "u",
    }
}

fn fact_of(s: &str) -> Option<FactState> {
    Some(match s {
        "p" => FactState::Pending,
        "k" => FactState::Known,
        "u" => FactState::Unidentifiable,
        _ => return None,
    })
}

const DOMAIN_SRCS: [(DomainSrc, &str); 5] = [
    (DomainSrc::None, "none"),
    (DomainSrc::Sni, "sni"),
    (DomainSrc::Host, "host"),
    (DomainSrc::QuicSni, "quic_sni"),
    (DomainSrc::Dns, "dns"),
];

const DECIDED_BY: [(DecidedBy, &str); 3] = [
    (DecidedBy::Match, "match"),
    (DecidedBy::UnknownStrict, "unknown_strict"),
    (DecidedBy::Default, "default"),
];

const DNS_VERIFIED: [(DnsVerified, &str); 3] = [
    (DnsVerified::ClientAnswer, "client_answer"),
    (DnsVerified::GatewayResolution, "gateway_resolution"),
    (DnsVerified::Forwarder, "forwarder"),
];

fn label<T: PartialEq + Copy>(table: &[(T, &'static str)], v: T) -> &'static str {
    table.iter().find(|(t, _)| *t == v).map_or("-", |(_, s)| s)
}

fn of_label<T: Copy>(table: &[(T, &'static str)], s: &str) -> Option<T> {
    table.iter().find(|(_, l)| *l == s).map(|(t, _)| *t)
}

/// Percent-escape everything but unreserved printable ASCII (a field never holds a space).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

impl HandoverFlow {
    /// One line of `key=value` fields separated by spaces (no newline).
    pub fn encode(&self) -> String {
        let f = &self.flow;
        let monitors: Vec<String> = self.monitors.iter().map(u32::to_string).collect();
        [
            format!("proto={}", f.proto),
            format!("client={}", f.client),
            format!("server={}", f.server),
            format!("eip={}", f.eip),
            format!("eport={}", f.eport),
            format!("start={}", self.start.as_nanos()),
            format!("out={},{}", self.out.packets, self.out.bytes),
            format!("in={},{}", self.inb.packets, self.inb.bytes),
            format!("kout={},{}", self.kernel.out.packets, self.kernel.out.bytes),
            format!("kin={},{}", self.kernel.inb.packets, self.kernel.inb.bytes),
            format!(
                "by={}",
                self.decided_by.map_or("-", |b| label(&DECIDED_BY, b))
            ),
            format!("rule={}", opt(self.rule)),
            format!(
                "monitors={}",
                if monitors.is_empty() {
                    "-".into()
                } else {
                    monitors.join(",")
                }
            ),
            format!("domain={}", opt(self.domain.as_deref().map(escape))),
            format!("dsrc={}", label(&DOMAIN_SRCS, self.domain_src)),
            format!("dfact={}", fact_code(self.domain_fact)),
            format!("app={}", opt(self.app.map(|a| a.as_str()))),
            format!("afact={}", fact_code(self.app_fact)),
            format!("why={}", opt(self.why.map(escape))),
            format!("country={}", opt(self.country.as_ref().map(|c| c.as_str()))),
            format!(
                "dnsv={}",
                self.dns_verified.map_or("-", |v| label(&DNS_VERIFIED, v))
            ),
            format!("ech={}", u8::from(self.ech)),
            format!("payload={}", u8::from(self.client_payload)),
            format!("fwoff={}", u8::from(self.fw_off)),
            format!("isn={},{}", self.isn_c, self.isn_s),
        ]
        .join(" ")
    }

    /// Parse a line written by [`HandoverFlow::encode`]; `None` when any field is missing or
    /// malformed (the caller drops such a flow).
    pub fn decode(line: &str) -> Option<HandoverFlow> {
        let mut m = std::collections::HashMap::new();
        for field in line.split_ascii_whitespace() {
            let (k, v) = field.split_once('=')?;
            m.insert(k, v);
        }
        let get = |k: &str| m.get(k).copied();
        let pair = |k: &str| -> Option<(u64, u64)> {
            let (a, b) = get(k)?.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let counter = |k: &str| pair(k).map(|(packets, bytes)| Counter { packets, bytes });
        let dash = |k: &str| -> Option<Option<&str>> {
            let v = get(k)?;
            Some((v != "-").then_some(v))
        };
        let flag = |k: &str| -> Option<bool> {
            match get(k)? {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            }
        };
        let proto: u8 = get("proto")?.parse().ok()?;
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return None;
        }
        // IPv4 `a.b.c.d:port`, IPv6 `[addr]:port` (a line of a version that knew only IPv4
        // reads the same); one family for all three addresses.
        let flow = OffloadFlow {
            client: get("client")?.parse::<SocketAddr>().ok()?,
            server: get("server")?.parse::<SocketAddr>().ok()?,
            eip: get("eip")?.parse::<IpAddr>().ok()?,
            eport: get("eport")?.parse().ok()?,
            proto,
        };
        if !flow.one_family() {
            return None;
        }
        let (isn_c, isn_s) = pair("isn")?;
        let monitors = match dash("monitors")? {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|s| s.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
        };
        Some(HandoverFlow {
            flow,
            start: Timestamp(get("start")?.parse().ok()?),
            out: counter("out")?,
            inb: counter("in")?,
            kernel: OffloadCounts {
                out: counter("kout")?,
                inb: counter("kin")?,
            },
            decided_by: match dash("by")? {
                None => None,
                Some(v) => Some(of_label(&DECIDED_BY, v)?),
            },
            rule: match dash("rule")? {
                None => None,
                Some(v) => Some(v.parse().ok()?),
            },
            monitors,
            domain: match dash("domain")? {
                None => None,
                Some(v) => Some(unescape(v)?),
            },
            domain_src: of_label(&DOMAIN_SRCS, get("dsrc")?)?,
            domain_fact: fact_of(get("dfact")?)?,
            app: match dash("app")? {
                None => None,
                Some(v) => Some(v.parse().ok()?),
            },
            app_fact: fact_of(get("afact")?)?,
            // A reason this engine does not know is left out of the record.
            why: match dash("why")? {
                None => None,
                Some(v) => {
                    let v = unescape(v)?;
                    WHYS.iter().find(|w| **w == v).copied()
                }
            },
            country: match dash("country")? {
                None => None,
                Some(v) => Some(natfw_policy::CountryCode::new(v)?),
            },
            dns_verified: match dash("dnsv")? {
                None => None,
                Some(v) => Some(of_label(&DNS_VERIFIED, v)?),
            },
            ech: flag("ech")?,
            client_payload: flag("payload")?,
            fw_off: flag("fwoff")?,
            isn_c: u32::try_from(isn_c).ok()?,
            isn_s: u32::try_from(isn_s).ok()?,
        })
    }
}

impl Engine {
    /// Stop without ending the offloaded flows: each leaves the engine (no record, its kernel
    /// entries left in place, its counters read one last time) and is returned for the next
    /// engine to [`Engine::adopt`]. Call before [`Engine::shutdown`], which ends the rest.
    pub fn handover(&mut self) -> Vec<HandoverFlow> {
        let refs: Vec<FlowRef> = self.offload.flows.keys().copied().collect();
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let Some((flow, before)) = self.offload.flows.remove(&r) else {
                continue;
            };
            let now_counts = self
                .offload
                .table
                .as_mut()
                .and_then(|t| t.read(&flow))
                .unwrap_or(before);
            let Some(mut e) = self.table.remove(r) else {
                continue;
            };
            super::offload::credit(&mut self.stats, &mut e.data, now_counts, before);
            self.watch.remove(r);
            self.interim.forget(r);
            if let Some(id) = e.data.ident {
                let _ = self.idents.remove(id);
            }
            let d = &e.data;
            let decided = d.decided();
            out.push(HandoverFlow {
                flow,
                start: d.start,
                out: d.out,
                inb: d.inb,
                kernel: now_counts,
                decided_by: decided.and_then(|x| x.decided_by),
                rule: decided.and_then(|x| x.rule).map(|r| r.0),
                monitors: decided
                    .and_then(|x| x.monitors.as_deref())
                    .map(|m| m.iter().map(|r| r.0).collect())
                    .unwrap_or_default(),
                domain: d.domain.as_deref().map(str::to_string),
                domain_src: d.domain_src,
                domain_fact: d.domain_fact,
                app: d.app,
                app_fact: d.app_fact,
                why: d.why,
                country: d.country,
                dns_verified: match d.dns_wait {
                    DnsWait::Verified(v) => Some(v),
                    _ => None,
                },
                ech: d.ech,
                client_payload: d.client_payload,
                fw_off: d.fw_off,
                isn_c: d.isn_c.0,
                isn_s: d.isn_s.0,
            });
            self.stats.offload_handed_over += 1;
        }
        self.stats.offload_active = 0;
        self.stats.flows_active = self.table.len() as u64;
        out
    }

    /// Take over flows an earlier engine handed over ([`Engine::handover`]), whose kernel
    /// entries are still in the table given to [`Engine::set_offload`]. `same_policy`: the
    /// live policy is the one they were decided under (same configuration). Then each flow is
    /// tracked again as decided and offloaded, its idle timer starting now; what its kernel
    /// entries counted since the handover is credited at the next sync. Otherwise (a changed
    /// policy, as a reload would flush them) and for a flow that cannot be tracked, its
    /// entries are removed and its record written now (end reason `shutdown`): its next packet
    /// reaches the engine as a mid-stream segment of no flow and is answered as one.
    pub fn adopt(
        &mut self,
        now: Timestamp,
        flows: Vec<HandoverFlow>,
        how: AdoptPolicy,
    ) -> AdoptStats {
        let mut st = AdoptStats::default();
        let policy = self.policy.load_full();
        for h in flows {
            let counts = self.offload.table.as_mut().and_then(|t| t.read(&h.flow));
            let rules = policy.rules().len();
            let rule_ok = h.rule.is_none_or(|r| (r as usize) < rules)
                && h.monitors.iter().all(|&r| (r as usize) < rules);
            let same = how == AdoptPolicy::Same && rule_ok;
            let data = match (how, counts) {
                (_, None) | (AdoptPolicy::Other, _) => None,
                (AdoptPolicy::Same, Some(_)) => {
                    rule_ok.then(|| self.flow_data_of(&h, true, &policy))
                }
                (AdoptPolicy::Reevaluate, Some(_)) => {
                    let d = self.reevaluate(now, &h, &policy);
                    if d.is_none() {
                        st.denied += 1;
                    }
                    d
                }
            };
            let tracked = match (data, counts) {
                (Some(d), Some(c)) => self.adopt_one(now, &h, d, c),
                _ => false,
            };
            if tracked {
                st.adopted += 1;
                if how == AdoptPolicy::Reevaluate {
                    st.reevaluated += 1;
                }
                self.stats.offload_adopted += 1;
                continue;
            }
            st.ended += 1;
            let last = self.offload.table.as_mut().and_then(|t| t.remove(&h.flow));
            self.end_handed_over(now, &h, last, same, &policy);
        }
        self.stats.offload_active = self.offload.flows.len() as u64;
        self.stats.flows_active = self.table.len() as u64;
        st
    }

    fn flow_data_of(
        &self,
        h: &HandoverFlow,
        with_rules: bool,
        policy: &Arc<CompiledPolicy>,
    ) -> FlowData {
        let mut d = FlowData::new(h.start, h.flow.proto, h.country);
        d.out = h.out;
        d.inb = h.inb;
        let mut decided = Decided::unattributed(Settled::Accept);
        decided.decided_by = h.decided_by;
        if with_rules {
            decided.rule = h.rule.map(RuleId);
            if !h.monitors.is_empty() {
                let m: Box<[RuleId]> = h.monitors.iter().map(|&r| RuleId(r)).collect();
                decided.monitors = Some(Box::new(m));
            }
            decided.decided_under = Some(Arc::clone(policy));
        }
        d.settle(decided);
        d.domain = h.domain.as_deref().map(Into::into);
        d.domain_src = h.domain_src;
        d.domain_fact = h.domain_fact;
        d.app = h.app;
        d.app_fact = h.app_fact;
        d.why = h.why;
        d.dns_wait = h.dns_verified.map_or(DnsWait::No, DnsWait::Verified);
        d.ech = h.ech;
        d.client_payload = h.client_payload;
        d.fw_off = h.fw_off;
        d.sent = true;
        d.isn_c = SeqNumber(h.isn_c);
        d.isn_s = SeqNumber(h.isn_s);
        if h.flow.proto == PROTO_TCP {
            d.established = true;
            d.tcp.state = TcpState::Established;
        }
        d
    }

    /// A handed-over flow decided again under `policy` (a changed firewall section): its data
    /// with the new decision if the policy accepts it, `None` if it denies it (the deciding
    /// rule's hit is counted either way, as for a new flow).
    fn reevaluate(
        &self,
        now: Timestamp,
        h: &HandoverFlow,
        policy: &Arc<CompiledPolicy>,
    ) -> Option<FlowData> {
        let mut d = self.flow_data_of(h, false, policy);
        if !policy.enabled() {
            d.fw_off = true;
            return Some(d);
        }
        d.fw_off = false;
        // Decided from the facts alone: no verification this process has not made.
        d.dns_wait = DnsWait::No;
        let view = decide::DnsView {
            cache: &self.dns,
            gw: &self.gw_dns,
            on_demand: false,
        };
        let key = flow_key(&h.flow);
        match decide::decide(policy, view, now, &key, &mut d, true) {
            Ok(_) if d.verdict() == FlowVerdict::Accept => Some(d),
            _ => None,
        }
    }

    fn adopt_one(
        &mut self,
        now: Timestamp,
        h: &HandoverFlow,
        data: FlowData,
        counts: OffloadCounts,
    ) -> bool {
        let f = &h.flow;
        let eip = f.eip;
        if !f.one_family() || !self.snat.is_eip(eip) {
            return false;
        }
        let key = flow_key(f);
        if self.table.len() >= self.table.capacity() {
            return false;
        }
        let class = Self::class_of(f.proto, &data);
        let Ok(r) = self.table.insert(key, class, now, data) else {
            return false;
        };
        if self.table.set_snat(r, eip, f.eport).is_err() {
            self.table.remove(r);
            return false;
        }
        // What the kernel counted since the handover is credited at the next sync.
        self.offload.flows.insert(r, (*f, h.kernel));
        if counts != h.kernel {
            self.offload.last_sync = Timestamp(0);
        }
        self.stats.flows_created += 1;
        true
    }

    /// Write the record of a handed-over flow that is not adopted, with the kernel's last
    /// counters (`last`) added.
    fn end_handed_over(
        &mut self,
        now: Timestamp,
        h: &HandoverFlow,
        last: Option<OffloadCounts>,
        with_rules: bool,
        policy: &Arc<CompiledPolicy>,
    ) {
        let mut d = self.flow_data_of(h, with_rules, policy);
        if let Some(c) = last {
            super::offload::credit(&mut self.stats, &mut d, c, h.kernel);
        }
        let f = &h.flow;
        let key = flow_key(f);
        self.stats.flows_ended_shutdown += 1;
        credit_bytes(&d);
        let ev = d.end_event(
            &key,
            Some((f.eip, f.eport)),
            now,
            EndReason::Shutdown,
            Arc::clone(policy),
        );
        self.sink.flow_end(ev);
    }
}

/// The conntrack key of an offloaded flow (the client's original tuple).
fn flow_key(f: &OffloadFlow) -> FlowKey {
    FlowKey {
        src: f.client.ip(),
        dst: f.server.ip(),
        sport: f.client.port(),
        dport: f.server.port(),
        proto: f.proto,
    }
}
