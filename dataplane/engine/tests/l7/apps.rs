//! Application labels by payload, on our own real captures (tests/data/captures) and the shared
//! corpus: every sample gets its label, and no detector claims another label's sample — whole,
//! or cut to any shorter prefix.

use std::net::SocketAddr;

use crate::testpcap;

use natfw_engine::l7::classify::{self, Verdict, TCP_DETECTORS, UDP_DETECTORS};
use natfw_engine::l7::Progress;
use natfw_policy::eval::IpProto;
use natfw_policy::App;

struct Sample {
    what: String,
    app: App,
    proto: IpProto,
    client: Vec<u8>,
    server: Vec<u8>,
    /// The server's bytes came before the client's (a TCP greeting): only then is a cut with
    /// server bytes and no client bytes a state the engine can see.
    server_first: bool,
}

/// Whether the first payload of the TCP connection `client` -> `server` came from the server.
fn server_spoke_first(file: &str, client: SocketAddr, server: SocketAddr) -> bool {
    testpcap::packets(file)
        .into_iter()
        .filter(|p| p.proto == 6 && !p.payload.is_empty())
        .find(|p| (p.src, p.dst) == (client, server) || (p.src, p.dst) == (server, client))
        .is_some_and(|p| p.src == server)
}

/// First TCP connection to `port` in a capture: both streams (the first 2 KiB of each).
fn tcp(app: App, file: &str, port: u16) -> Sample {
    let f = testpcap::tcp_flows(file)
        .into_iter()
        .find(|f| f.server.port() == port)
        .unwrap_or_else(|| panic!("{file}: no TCP flow to port {port}"));
    let cut = |v: &[u8]| v[..v.len().min(2048)].to_vec();
    Sample {
        what: format!("{file} tcp/{port}"),
        app,
        proto: IpProto::Tcp,
        client: cut(&f.client_stream),
        server: cut(&f.server_stream),
        server_first: server_spoke_first(file, f.client, f.server),
    }
}

/// Every TCP connection to `port` in a capture, as [`tcp`] cuts them.
fn tcp_all(app: App, file: &str, port: u16) -> Vec<Sample> {
    let cut = |v: &[u8]| v[..v.len().min(2048)].to_vec();
    let v: Vec<Sample> = testpcap::tcp_flows(file)
        .into_iter()
        .filter(|f| f.server.port() == port)
        .map(|f| Sample {
            what: format!("{file} tcp/{port} from {}", f.client),
            app,
            proto: IpProto::Tcp,
            client: cut(&f.client_stream),
            server: cut(&f.server_stream),
            server_first: server_spoke_first(file, f.client, f.server),
        })
        .collect();
    assert!(!v.is_empty(), "{file}: no TCP flow to port {port}");
    v
}

/// First UDP datagram to `port`, and the first one back.
fn udp(app: App, file: &str, port: u16) -> Sample {
    let d = testpcap::udp_datagrams(file);
    let c = d
        .iter()
        .find(|d| d.1.port() == port)
        .unwrap_or_else(|| panic!("{file}: no datagram to port {port}"));
    let s = d.iter().find(|x| x.0 == c.1).map(|x| x.2.clone());
    Sample {
        what: format!("{file} udp/{port}"),
        app,
        proto: IpProto::Udp,
        client: c.2.clone(),
        server: s.unwrap_or_default(),
        server_first: false,
    }
}

fn samples() -> Vec<Sample> {
    let mut v = vec![
        tcp(App::Memcache, "captures/memcache.pcap", 11211),
        tcp(App::Mqtt, "captures/mqtt.pcap", 1883),
        tcp(App::PostgreSql, "captures/postgres.pcap", 5432),
        tcp(App::Rdp, "captures/rdp.pcap", 3389),
        tcp(App::Vnc, "captures/vnc.pcap", 5900),
        tcp(App::Sip, "captures/sip.pcap", 5060),
        tcp(App::Smb, "captures/smb.pcap", 445),
        tcp(App::Smtp, "captures/smtp_starttls.pcap", 25),
        tcp(App::Smtp, "captures/smtp_starttls.pcap", 2525),
        tcp(App::Imap, "captures/imap_starttls.pcap", 143),
        tcp(App::Pop3, "captures/pop3_stls.pcap", 110),
        tcp(App::Ftp, "captures/ftp_auth_tls.pcap", 21),
        tcp(App::Http, "captures/h2c_prior_knowledge.pcap", 80),
        tcp(App::Http, "captures/h2c_upgrade.pcap", 8080),
        tcp(App::Dns, "captures/dns_tcp_cname.pcap", 53),
        tcp(App::Http, "http_curl.pcap", 80),
        tcp(App::Https, "https_curl.pcap", 443),
        tcp(App::Ssh, "ssh_2222.pcap", 2222),
        udp(App::Ntp, "captures/ntp.pcap", 123),
        udp(App::Sip, "captures/sip.pcap", 5060),
        udp(App::Dns, "captures/dns_cname_asked.pcap", 53),
        udp(App::Dns, "dns_query.pcap", 53),
        udp(App::Quic, "quic_aioquic.pcap", 443),
    ];
    // Every connection of the MongoDB capture: OP_MSG `hello` (PyMongo 4 with a server API),
    // OP_MSG `ismaster` (PyMongo 4 without), OP_QUERY `isMaster` (PyMongo 3.11).
    v.extend(tcp_all(App::MongoDb, "captures/mongodb.pcap", 27017));
    // MariaDB (the server's handshake), Redis (RESP arrays and an inline PING).
    v.extend(tcp_all(App::MySql, "captures/mysql.pcap", 3306));
    v.extend(tcp_all(App::Redis, "captures/redis.pcap", 6379));
    // The second h2c Upgrade client (nghttp; the list above has curl's).
    v.extend(
        tcp_all(App::Http, "captures/h2c_upgrade.pcap", 8080)
            .into_iter()
            .skip(1),
    );
    // Every NTP datagram of the capture, both clients (ntpdig, chronyd) and the server.
    for d in testpcap::udp_datagrams("captures/ntp.pcap") {
        let (client, server) = if d.1.port() == 123 {
            (d.2.clone(), Vec::new())
        } else {
            (Vec::new(), d.2.clone())
        };
        v.push(Sample {
            what: format!("ntp {} -> {}", d.0, d.1),
            app: App::Ntp,
            proto: IpProto::Udp,
            client,
            server,
            server_first: false,
        });
    }
    v
}

#[test]
fn every_sample_gets_its_label() {
    for s in samples() {
        let got = classify::classify(s.proto, None, &s.client, &s.server);
        assert_eq!(got, Progress::Done(s.app), "{}", s.what);
    }
}

/// Every label a payload detector can answer has real samples here, so the misclassification
/// test below runs each detector against them. Not here: the TLS refinements (SSL, SMTPS,
/// IMAPS, POP3S are HTTPS-family TLS told apart by port), ICMP and Unknown (no payload detector).
#[test]
fn every_detected_label_has_a_sample() {
    let all = samples();
    let exempt = [
        App::Ssl,
        App::Smtps,
        App::Imaps,
        App::Pop3s,
        App::Icmp,
        App::Unknown,
    ];
    let missing: Vec<App> = App::ALL
        .into_iter()
        .filter(|a| !exempt.contains(a) && !all.iter().any(|s| s.app == *a))
        .collect();
    assert!(missing.is_empty(), "labels without a sample: {missing:?}");
}

/// For each label, every detector run on every other label's samples (and on their prefixes)
/// never answers that label.
#[test]
fn no_detector_claims_another_labels_sample() {
    let all = samples();
    let mut checked = 0;
    for s in &all {
        let detectors: &[(&str, classify::Detector)] = match s.proto {
            IpProto::Tcp => &TCP_DETECTORS,
            _ => &UDP_DETECTORS,
        };
        let cuts: Vec<(usize, usize)> = std::iter::once((s.client.len(), s.server.len()))
            .chain((1..s.client.len().min(64)).map(|n| (n, 0)))
            // Server bytes alone: only where the server speaks first (a Redis `+OK` alone
            // would be a POP3 greeting, but a Redis server never speaks first).
            .chain(
                (1..s.server.len().min(64))
                    .filter(|_| s.server_first || s.client.is_empty())
                    .map(|n| (0, n)),
            )
            .collect();
        for (name, det) in detectors {
            for &(c, sv) in &cuts {
                if let Verdict::Yes(app) = det(None, &s.client[..c], &s.server[..sv]) {
                    // HTTPS/TLS detectors may refine HTTPS into SSL: same family.
                    assert_eq!(
                        app, s.app,
                        "detector {name} says {app} for {} (cut {c}/{sv})",
                        s.what
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

/// The new labels are usable in rules: they parse from their flow-log spelling.
#[test]
fn labels_parse_in_rules() {
    for (label, app) in [
        ("Memcache", App::Memcache),
        ("MQTT", App::Mqtt),
        ("PostgreSQL", App::PostgreSql),
        ("MongoDB", App::MongoDb),
        ("VNC", App::Vnc),
        ("SIP", App::Sip),
        ("SMB", App::Smb),
        ("NTP", App::Ntp),
        ("RDP", App::Rdp),
    ] {
        assert_eq!(label.parse::<App>(), Ok(app));
        assert_eq!(app.as_str(), label);
    }
}
