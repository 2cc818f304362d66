//! Application labels, as the flow log and the `applications` rule field spell them.

use std::fmt;
use std::str::FromStr;

/// An application identified from payload (never from the port alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum App {
    Http,
    Https,
    /// TLS that is not identifiable as HTTPS, SMTPS, IMAPS or POP3S.
    Ssl,
    Quic,
    Ssh,
    Dns,
    Smtp,
    Smtps,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Ftp,
    MySql,
    Redis,
    Rdp,
    Ntp,
    Memcache,
    Mqtt,
    PostgreSql,
    MongoDb,
    Vnc,
    Sip,
    Smb,
    Icmp,
    Unknown,
}

impl App {
    /// Every label, in a stable order.
    pub const ALL: [App; 26] = [
        App::Http,
        App::Https,
        App::Ssl,
        App::Quic,
        App::Ssh,
        App::Dns,
        App::Smtp,
        App::Smtps,
        App::Imap,
        App::Imaps,
        App::Pop3,
        App::Pop3s,
        App::Ftp,
        App::MySql,
        App::Redis,
        App::Rdp,
        App::Ntp,
        App::Memcache,
        App::Mqtt,
        App::PostgreSql,
        App::MongoDb,
        App::Vnc,
        App::Sip,
        App::Smb,
        App::Icmp,
        App::Unknown,
    ];

    /// The label used in flow logs and configs (`HTTPS`, `MySQL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            App::Http => "HTTP",
            App::Https => "HTTPS",
            App::Ssl => "SSL",
            App::Quic => "QUIC",
            App::Ssh => "SSH",
            App::Dns => "DNS",
            App::Smtp => "SMTP",
            App::Smtps => "SMTPS",
            App::Imap => "IMAP",
            App::Imaps => "IMAPS",
            App::Pop3 => "POP3",
            App::Pop3s => "POP3S",
            App::Ftp => "FTP",
            App::MySql => "MySQL",
            App::Redis => "Redis",
            App::Rdp => "RDP",
            App::Ntp => "NTP",
            App::Memcache => "Memcache",
            App::Mqtt => "MQTT",
            App::PostgreSql => "PostgreSQL",
            App::MongoDb => "MongoDB",
            App::Vnc => "VNC",
            App::Sip => "SIP",
            App::Smb => "SMB",
            App::Icmp => "ICMP",
            App::Unknown => "Unknown",
        }
    }

    /// Which transport protocols can carry this application at all.
    pub fn carried_by(self) -> &'static [crate::model::Protocol] {
        use crate::model::Protocol::*;
        match self {
            App::Dns | App::Sip => &[Udp, Tcp],
            App::Quic | App::Ntp => &[Udp],
            App::Icmp => &[Icmp],
            App::Unknown => &[Tcp, Udp, Icmp],
            _ => &[Tcp],
        }
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown application label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownApp(pub String);

impl fmt::Display for UnknownApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown application `{}`", self.0)
    }
}

impl FromStr for App {
    type Err = UnknownApp;
    /// Case-insensitive; `TLS` is accepted as an alias of `SSL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("TLS") {
            return Ok(App::Ssl);
        }
        App::ALL
            .iter()
            .copied()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownApp(s.to_string()))
    }
}
