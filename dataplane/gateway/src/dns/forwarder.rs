//! The DNS forwarder (`dns.forwarder`): answers the VPC's queries (UDP) on an inside address by
//! relaying them to the upstream resolvers, and records every A/AAAA answer for the client that
//! asked (client-scoped facts, `dns_verified: forwarder`), so those facts exist even when the
//! upstream resolver is inside the VPC and its answers never cross the gateway.
//!
//! The fact goes to the packet worker before the answer goes to the client. At most
//! `max_inflight` queries are relayed at once; more are dropped (counted) and the client retries.
//! With `refuse_denied`, a query for a name that an enabled `drop` rule with a domain destination
//! names (for this client's address, any port) is answered NXDOMAIN or REFUSED instead.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::RData;
use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{Destination, ForwarderConfig, Refusal, RuleAction};
use tokio::net::UdpSocket;

use super::{send_update, DnsStats, DnsUpdate, UpdateTx};

/// How long one upstream gets to answer a relayed query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest DNS message over UDP the forwarder handles (EDNS payloads included).
const MAX_UDP: usize = 4096;

/// Serve queries on `sock` until the runtime stops.
pub async fn serve(
    sock: UdpSocket,
    cfg: ForwarderConfig,
    upstreams: Vec<SocketAddr>,
    policy: Arc<ArcSwap<CompiledPolicy>>,
    updates: UpdateTx,
    stats: Arc<DnsStats>,
) {
    let sock = Rc::new(sock);
    let upstreams = Rc::new(upstreams);
    let inflight = Rc::new(Cell::new(0usize));
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => continue,
        };
        stats.fwd_queries.fetch_add(1, Ordering::Relaxed);
        if inflight.get() >= cfg.max_inflight {
            stats.fwd_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        inflight.set(inflight.get() + 1);
        let query = buf[..n].to_vec();
        let (sock, upstreams, inflight) = (
            Rc::clone(&sock),
            Rc::clone(&upstreams),
            Rc::clone(&inflight),
        );
        let (policy, updates, stats) = (Arc::clone(&policy), updates.clone(), Arc::clone(&stats));
        let refuse = cfg.refuse_denied;
        tokio::task::spawn_local(async move {
            let reply = answer(
                &query,
                from.ip(),
                refuse,
                &upstreams,
                &policy,
                &updates,
                &stats,
            )
            .await;
            if let Some(reply) = reply {
                let _ = sock.send_to(&reply, from).await;
            }
            inflight.set(inflight.get() - 1);
        });
    }
}

/// The reply to `query` from `client`, or `None` to stay silent (unparsable query).
async fn answer(
    query: &[u8],
    client: IpAddr,
    refuse: Option<Refusal>,
    upstreams: &[SocketAddr],
    policy: &ArcSwap<CompiledPolicy>,
    updates: &UpdateTx,
    stats: &DnsStats,
) -> Option<Vec<u8>> {
    let Ok(msg) = Message::from_vec(query) else {
        stats.fwd_dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let Some(q) = msg.queries().first() else {
        stats.fwd_dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let qname = normalise(&q.name().to_ascii());
    if let Some(how) = refuse {
        if denied(&policy.load(), client, &qname) {
            stats.fwd_refused.fetch_add(1, Ordering::Relaxed);
            let code = match how {
                Refusal::NxDomain => ResponseCode::NXDomain,
                Refusal::Refused => ResponseCode::Refused,
            };
            return error_reply(&msg, code);
        }
    }
    match relay(query, msg.id(), upstreams).await {
        Some(reply) => {
            if let Ok(resp) = Message::from_vec(&reply) {
                record(&resp, client, &qname, updates, stats);
            }
            stats.fwd_answered.fetch_add(1, Ordering::Relaxed);
            Some(reply)
        }
        None => {
            stats.fwd_failed.fetch_add(1, Ordering::Relaxed);
            error_reply(&msg, ResponseCode::ServFail)
        }
    }
}

/// Lower case, no trailing dot (names on the wire are already ASCII / punycode).
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An enabled `drop` rule with a domain destination names `name` for `client`.
pub fn denied(policy: &CompiledPolicy, client: IpAddr, name: &str) -> bool {
    policy.enabled()
        && policy.rules().iter().any(|r| {
            r.enabled
                && r.action == RuleAction::Drop
                && r.source
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|n| n.contains(&client)))
                && matches!(&r.destination, Destination::Domains(p) if p.iter().any(|p| p.matches(name)))
        })
}

fn error_reply(q: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for query in q.queries() {
        m.add_query(query.clone());
    }
    m.to_vec().ok()
}

/// Send `query` to each upstream in turn; the first reply with the query's id wins.
async fn relay(query: &[u8], id: u16, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind).await else {
            continue;
        };
        if s.connect(up).await.is_err() || s.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_UDP];
        let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                match s.recv(&mut buf).await {
                    Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                        return Some(n)
                    }
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(n)) = got {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The (address, TTL) pairs of an answer: A and AAAA records, wherever the CNAME chain led.
pub fn addresses(resp: &Message) -> Vec<(IpAddr, u32)> {
    resp.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl())),
            RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl())),
            _ => None,
        })
        .take(natfw_engine::dnscache::MAX_ADDRS_PER_NAME)
        .collect()
}

/// Hand the answer's facts to the engine: the asked name resolves to every address of the
/// answer; each CNAME target name with addresses of its own resolves to those.
fn record(resp: &Message, client: IpAddr, qname: &str, updates: &UpdateTx, stats: &DnsStats) {
    if resp.response_code() != ResponseCode::NoError {
        return;
    }
    let all = addresses(resp);
    if all.is_empty() {
        return;
    }
    let mut owners: Vec<String> = Vec::new();
    for r in resp.answers() {
        if matches!(r.data(), RData::A(_) | RData::AAAA(_)) {
            let o = normalise(&r.name().to_ascii());
            if o != qname && !owners.contains(&o) {
                owners.push(o);
            }
        }
    }
    for o in owners {
        let answers = resp
            .answers()
            .iter()
            .filter(|r| normalise(&r.name().to_ascii()) == o)
            .filter_map(|r| match r.data() {
                RData::A(a) => Some((IpAddr::V4(a.0), r.ttl())),
                RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl())),
                _ => None,
            })
            .collect();
        send_update(
            updates,
            stats,
            DnsUpdate::Answer {
                client,
                name: o,
                answers,
            },
        );
    }
    send_update(
        updates,
        stats,
        DnsUpdate::Answer {
            client,
            name: qname.to_string(),
            answers: all,
        },
    );
}
