//! L7 identification: TLS/QUIC ClientHello (SNI, ALPN, ECH), HTTP Host, HTTP/2 `:authority`,
//! STARTTLS upgrades, DNS questions and answers (UDP and TCP) and payload-based application
//! classification.
//!
//! Everything here is sans-I/O and works on byte slices the engine hands over: the client's TCP
//! byte stream from its start (the engine reassembles it with `reasm::StreamBuf`), or single UDP
//! datagrams. Parsers never panic and keep bounded state; a parser that cannot decide yet says
//! [`Progress::NeedMore`].

pub mod apps;
pub mod classify;
pub mod dns;
pub mod h2;
pub mod http;
pub mod quic;
pub mod starttls;

pub mod reader;
pub mod tls;

#[cfg(test)]
pub(crate) mod testpcap;

/// Outcome of feeding bytes to an incremental parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// Parsed.
    Done(T),
    /// Consistent so far, but more bytes are needed to decide.
    NeedMore,
    /// The bytes can never parse (malformed, lying lengths, over a size bound); the reason is a
    /// short static description for logs and counters.
    Invalid(&'static str),
}

impl<T> Progress<T> {
    /// `Some(value)` when done.
    pub fn done(self) -> Option<T> {
        match self {
            Progress::Done(v) => Some(v),
            _ => None,
        }
    }

    /// Map the parsed value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Progress<U> {
        match self {
            Progress::Done(v) => Progress::Done(f(v)),
            Progress::NeedMore => Progress::NeedMore,
            Progress::Invalid(e) => Progress::Invalid(e),
        }
    }
}

/// What a TLS (or QUIC) ClientHello says about where the client is going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `host_name` from server_name, normalised with `natfw_policy::domain::normalize`.
    /// `None` when absent, and also when the name is an IP literal (see `sni_is_ip`).
    pub sni: Option<String>,
    /// The client put an IP literal in server_name (forbidden by RFC 6066, sent by some
    /// clients): there is no domain to match.
    pub sni_is_ip: bool,
    /// ALPN protocol names in the client's order (`h2`, `http/1.1`, `h3`...).
    pub alpn: Vec<String>,
    /// An encrypted_client_hello extension (0xfe0d) is present — real or GREASE, which the wire
    /// cannot tell apart — so `sni` is at best the ECH public name.
    pub ech: bool,
}
