//! L7 identification state, kept in a side table only for flows still being identified (or
//! holding payload), and the analysis that turns bytes into facts.

use natfw_policy::eval::IpProto;
use natfw_policy::App;

use super::flow::{
    DomainSrc, FactState, FlowData, IdentRef, WHY_DNS_QUERY, WHY_NOT_TLS_HTTP, WHY_NO_NAME_PROTO,
    WHY_UDP_NO_NAME,
};
use crate::conntrack::FlowRef;
use crate::l7::classify::{classify, classify_tls_facts};
use crate::l7::quic::{self, InitialAssembler};
use crate::l7::tls::{HelloFacts, HelloOnce};
use crate::l7::{self, Progress};
use crate::reasm::{PushResult, StreamBuf};
use crate::time::Timestamp;
use crate::wire::tcp::SeqNumber;

/// Server bytes kept for classification (server-speaks-first protocols) and for following a
/// STARTTLS negotiation up to the server's go-ahead.
pub(crate) const SERVER_PEEK: usize = 4096;

/// One flow's identification state.
#[derive(Debug)]
pub(crate) struct Ident {
    pub flow: FlowRef,
    /// Client → server stream (TCP).
    pub stream: Option<StreamBuf>,
    /// First server bytes, in order (TCP), or the first server datagram (UDP).
    pub server: Vec<u8>,
    /// Next expected server sequence number.
    pub server_next: SeqNumber,
    /// Held frames (already translated), with their relative sequence (TCP) or arrival index.
    pub held: Vec<(u32, Vec<u8>)>,
    /// Bytes accounted to this entry in the global budget.
    pub bytes: usize,
    /// QUIC Initial reassembly (UDP flows that started with a QUIC Initial).
    pub quic: Option<Box<InitialAssembler>>,
    /// When identification started (pending deadline).
    pub started: Timestamp,
    /// Highest acknowledgement the server sent (TCP), once seen.
    pub server_ack: Option<SeqNumber>,
    /// Client stream bytes released to the server while the verdict was pending (the part of a
    /// ClientHello before its server_name extension), from the stream start.
    pub released_pre_name: u32,
    /// The last frame released before the name (translated): the RST template should the flow
    /// be denied with nothing held.
    pub released_last: Option<Vec<u8>>,
    /// Client stream bytes that may be forwarded while the verdict is pending: the plaintext
    /// negotiation before a STARTTLS upgrade (see `l7::starttls`).
    pub pass: usize,
    /// HTTP/2 cleartext: the stream offset where the client's HTTP/2 bytes start (0 with prior
    /// knowledge, the end of the `Upgrade: h2c` request otherwise), for the authority watch.
    pub h2_from: Option<usize>,
}

impl Ident {
    /// The inspected client bytes must be kept to check later segments against them: the
    /// server has not acknowledged all of them yet, so a segment carrying other bytes for the
    /// same sequence numbers could still become what the server reads.
    pub(crate) fn must_verify(&self) -> bool {
        let Some(s) = self.stream.as_ref() else {
            return false;
        };
        s.held() > 0 && self.server_ack.is_none_or(|a| a < s.end_seq())
    }

    /// Nothing left to do for this entry once the verdict is final and no fact is pending.
    pub(crate) fn idle(&self) -> bool {
        self.held.is_empty() && !self.must_verify()
    }
}

/// Slab of [`Ident`]s with a global byte budget.
#[derive(Debug, Default)]
pub(crate) struct IdentTable {
    slots: Vec<Option<Ident>>,
    free: Vec<IdentRef>,
    /// Bytes held across all entries (held frames + reassembly buffers).
    pub bytes: usize,
}

impl IdentTable {
    /// Store `id`; `None` when the table has as many slots as a handle can name.
    pub(crate) fn insert(&mut self, id: Ident) -> Option<IdentRef> {
        match self.free.pop() {
            Some(i) => {
                self.slots[i.index()] = Some(id);
                Some(i)
            }
            None => {
                let i = IdentRef::from_index(self.slots.len())?;
                self.slots.push(Some(id));
                Some(i)
            }
        }
    }

    pub(crate) fn get_mut(&mut self, i: IdentRef) -> Option<&mut Ident> {
        self.slots.get_mut(i.index()).and_then(Option::as_mut)
    }

    pub(crate) fn get(&self, i: IdentRef) -> Option<&Ident> {
        self.slots.get(i.index()).and_then(Option::as_ref)
    }

    pub(crate) fn remove(&mut self, i: IdentRef) -> Option<Ident> {
        let id = self.slots.get_mut(i.index())?.take()?;
        self.free.push(i);
        self.bytes = self.bytes.saturating_sub(id.bytes);
        Some(id)
    }

    /// Re-account an entry's bytes after it changed.
    pub(crate) fn recount(&mut self, i: IdentRef) {
        let Some(Some(id)) = self.slots.get_mut(i.index()) else {
            return;
        };
        let now = id.held.iter().map(|(_, f)| f.len()).sum::<usize>()
            + id.stream.as_ref().map_or(0, StreamBuf::held)
            + id.server.len();
        self.bytes = self.bytes.saturating_sub(id.bytes) + now;
        id.bytes = now;
    }
}

fn apply_hello(f: &mut FlowData, info: HelloFacts, src: DomainSrc) {
    f.ech |= info.ech;
    match info.sni {
        Some(name) => f.set_sent_domain(name, src),
        None => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(if info.sni_is_ip {
                "IP literal in SNI"
            } else if info.ech {
                "ECH without a usable outer SNI"
            } else if src == DomainSrc::QuicSni {
                "QUIC ClientHello without SNI"
            } else {
                "TLS ClientHello without SNI"
            });
        }
    }
}

fn set_app(f: &mut FlowData, app: App) {
    f.app = Some(app);
    f.app_fact = FactState::Known;
}

fn is_http_method_prefix(c: &[u8]) -> bool {
    const M: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    M.iter()
        .any(|m| c.starts_with(m) || (c.len() < m.len() && m.starts_with(c)))
}

/// Analyse the client stream and server bytes of a TCP flow; updates pending facts.
pub(crate) fn analyse_tcp(f: &mut FlowData, id: &mut Ident, dport: u16) {
    let client = id.stream.as_ref().map_or(&[][..], StreamBuf::contiguous);
    // The ClientHello is parsed at most once here, whoever asks for it.
    let mut hello = HelloOnce::new(client);
    // The application first: it says how to look for the name (STARTTLS, DNS).
    if f.app_fact == FactState::Pending {
        if f.domain_src == DomainSrc::Sni {
            // The name came before the whole ClientHello: ECH is only known from all of it.
            if let Progress::Done(info) = hello.get() {
                f.ech |= info.ech;
            }
        }
        match l7::classify::classify_tcp(Some(dport), &mut hello, &id.server) {
            Progress::Done(app) => set_app(f, app),
            Progress::NeedMore => {}
            Progress::Invalid(why) => {
                f.app_fact = FactState::Unidentifiable;
                f.why.get_or_insert(why);
            }
        }
    }
    if f.domain_fact != FactState::Pending {
        return;
    }
    let app = f.app.filter(|_| f.app_fact == FactState::Known);
    match app {
        Some(a) if l7::starttls::supports(a) => id.pass = starttls_domain(f, a, client, &id.server),
        Some(App::Dns) => dns_tcp_domain(f, client),
        _ if !client.is_empty() => {
            let h2_from = domain_from_client(f, &mut hello, dport);
            id.h2_from = h2_from;
        }
        // A server that speaks first (SSH...) settles the domain question: no name is coming.
        Some(_) => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(WHY_NO_NAME_PROTO);
        }
        None => {}
    }
}

/// TLS ClientHello, HTTP/1.x Host or HTTP/2 `:authority` at the start of the client stream.
/// Returns where the client's HTTP/2 bytes start when the name came from h2c (prior knowledge
/// or an `Upgrade: h2c` request), for the authority watch.
fn domain_from_client(f: &mut FlowData, hello: &mut HelloOnce<'_>, dport: u16) -> Option<usize> {
    let client = hello.stream();
    if l7::tls::looks_like_tls(client) {
        match hello.get() {
            Progress::Done(info) => {
                if f.app_fact == FactState::Pending {
                    set_app(f, classify_tls_facts(info, Some(dport)));
                }
                if let Progress::Done(info) = hello.take() {
                    apply_hello(f, info, DomainSrc::Sni);
                }
            }
            // The name may be complete before the message is: decide on it then, so that a
            // ClientHello cut finely with a large tail after server_name is not starved (the
            // tail is held, and the client's window is finite).
            Progress::NeedMore => early_server_name(f, client),
            Progress::Invalid(why) => {
                f.domain_fact = FactState::Unidentifiable;
                f.why.get_or_insert(*why);
            }
        }
        return None;
    }
    let h2 = l7::h2::is_preface_prefix(client);
    let parsed = if h2 {
        l7::h2::request(client)
    } else {
        l7::http::request(client)
    };
    match parsed {
        Progress::Done(req) => {
            match req.host {
                Some(h) => f.set_sent_domain(h, DomainSrc::Host),
                None => {
                    f.domain_fact = FactState::Unidentifiable;
                    f.why.get_or_insert(if req.host_is_ip {
                        "IP literal in HTTP Host"
                    } else {
                        "HTTP request without Host"
                    });
                }
            }
            if h2 {
                Some(0)
            } else {
                req.upgrade_h2c.then_some(req.head_len)
            }
        }
        Progress::NeedMore if h2 || is_http_method_prefix(client) => None,
        Progress::Invalid(why) if h2 => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(why);
            None
        }
        _ => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(WHY_NOT_TLS_HTTP);
            None
        }
    }
}

/// A ClientHello still incomplete whose server_name extension is complete: take the name.
fn early_server_name(f: &mut FlowData, hello: &[u8]) {
    match l7::tls::server_name_early(hello) {
        Some(Ok(info)) if info.sni.is_some() || info.sni_is_ip => {
            apply_hello(f, info.into(), DomainSrc::Sni);
        }
        Some(Err(why)) => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(why);
        }
        _ => {}
    }
}

/// SMTP/IMAP/POP3/FTP: follow the plaintext negotiation; the name is the SNI of the ClientHello
/// after the server's go-ahead.
/// Returns the client bytes that may pass while the verdict is pending.
fn starttls_domain(f: &mut FlowData, app: App, client: &[u8], server: &[u8]) -> usize {
    use l7::starttls::Phase;
    match l7::starttls::phase(app, client, server) {
        Phase::Plain { pass } => {
            if server.len() >= SERVER_PEEK {
                f.domain_fact = FactState::Unidentifiable;
                f.why
                    .get_or_insert("STARTTLS: server replies over the bound");
            }
            pass
        }
        Phase::Upgraded { tls_start } => {
            let hello = &client[tls_start.min(client.len())..];
            if hello.is_empty() {
                return tls_start;
            }
            if !l7::tls::looks_like_tls(hello) {
                f.domain_fact = FactState::Unidentifiable;
                f.why.get_or_insert("STARTTLS: no TLS after the upgrade");
                return tls_start;
            }
            match l7::tls::client_hello_facts(hello) {
                Progress::Done(info) => apply_hello(f, info, DomainSrc::Sni),
                Progress::NeedMore => early_server_name(f, hello),
                Progress::Invalid(why) => {
                    f.domain_fact = FactState::Unidentifiable;
                    f.why.get_or_insert(why);
                }
            }
            tls_start
        }
        Phase::NoUpgrade(why) => {
            f.domain_fact = FactState::Unidentifiable;
            f.why.get_or_insert(why);
            0
        }
    }
}

/// DNS over TCP: the question of the first length-prefixed query names the flow for the log
/// (as for UDP); it is not a name the client connects to, so the domain fact stays
/// unidentifiable.
fn dns_tcp_domain(f: &mut FlowData, client: &[u8]) {
    match l7::dns::tcp_message(client) {
        Progress::NeedMore => return,
        Progress::Done(m) => {
            if let Some(q) = l7::dns::parse(m).ok().and_then(|m| m.qname) {
                if !q.is_empty() {
                    f.domain = Some(q.into());
                    f.domain_src = DomainSrc::Dns;
                }
            }
        }
        Progress::Invalid(_) => {}
    }
    f.domain_fact = FactState::Unidentifiable;
    f.why.get_or_insert(WHY_DNS_QUERY);
}

/// Analyse one client UDP datagram; updates pending facts. `quic` is the flow's QUIC
/// assembler, created here when the datagram is a QUIC Initial. Returns the DNS query name, if
/// any.
pub(crate) fn analyse_udp(
    f: &mut FlowData,
    quic_state: &mut Option<Box<InitialAssembler>>,
    dport: u16,
    payload: &[u8],
) -> Option<String> {
    if !f.facts_pending() {
        return None;
    }
    if quic_state.is_none() && quic::is_long_header_initial(payload) {
        *quic_state = Some(Box::new(InitialAssembler::new()));
    }
    if let Some(q) = quic_state.as_mut() {
        if f.app_fact == FactState::Pending {
            set_app(f, App::Quic);
        }
        match q.push(payload) {
            Progress::Done(info) => apply_hello(f, info.into(), DomainSrc::QuicSni),
            Progress::NeedMore => {}
            Progress::Invalid(why) => {
                f.domain_fact = FactState::Unidentifiable;
                f.why.get_or_insert(why);
            }
        }
        return None;
    }
    let dns = !l7::classify::udp_is_ntp(payload, &[]) && l7::classify::dns_message(payload, false);
    if let Some(msg) = dns.then(|| l7::dns::parse(payload).ok()).flatten() {
        if !msg.is_response {
            set_app(f, App::Dns);
            f.dns_only = true;
            if f.domain_fact == FactState::Pending {
                f.domain_fact = FactState::Unidentifiable;
                f.why.get_or_insert(WHY_DNS_QUERY);
            }
            return msg.qname.filter(|q| !q.is_empty());
        }
    }
    if f.app_fact == FactState::Pending {
        match classify(IpProto::Udp, Some(dport), payload, &[]) {
            Progress::Done(app) => set_app(f, app),
            Progress::NeedMore | Progress::Invalid(_) => set_app(f, App::Unknown),
        }
    }
    if f.domain_fact == FactState::Pending {
        f.domain_fact = FactState::Unidentifiable;
        f.why.get_or_insert(WHY_UDP_NO_NAME);
    }
    None
}

/// Outcome of feeding a client segment to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// New bytes (or nothing to store).
    New,
    /// Exact duplicate of stored bytes.
    Duplicate,
    /// Conflicting overlap.
    Conflict,
    /// Over the per-flow limit.
    Full,
}

pub(crate) fn feed_client(id: &mut Ident, seq: SeqNumber, payload: &[u8]) -> Fed {
    let Some(s) = id.stream.as_mut() else {
        return Fed::New;
    };
    match s.push(seq, payload) {
        PushResult::Ok => Fed::New,
        PushResult::Retransmission => Fed::Duplicate,
        PushResult::Conflict => Fed::Conflict,
        PushResult::Full => Fed::Full,
        // Before the start: an old retransmission of nothing we hold.
        PushResult::OutOfWindow => Fed::Duplicate,
    }
}

pub(crate) fn feed_server(id: &mut Ident, seq: SeqNumber, payload: &[u8]) {
    if seq == id.server_next && id.server.len() < SERVER_PEEK {
        let n = payload.len().min(SERVER_PEEK - id.server.len());
        id.server.extend_from_slice(&payload[..n]);
        id.server_next = id.server_next + payload.len();
    }
}
