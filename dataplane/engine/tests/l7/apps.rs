//! Application labels by payload, on our own real captures (tests/data/captures) and the shared
//! corpus: every sample gets its label, and no detector claims another label's sample — whole,
//! or cut to any shorter prefix.

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
    }
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
    // MongoDB: no capture (see tests/data/captures/README.md); an OP_MSG `hello` as pymongo
    // sends it with a server API version, built from the wire-protocol layout.
    let mut bson = Vec::new();
    bson.extend_from_slice(&[0x10]);
    bson.extend_from_slice(b"hello\0");
    bson.extend_from_slice(&1i32.to_le_bytes());
    bson.extend_from_slice(&[0x02]);
    bson.extend_from_slice(b"$db\0");
    bson.extend_from_slice(&6i32.to_le_bytes());
    bson.extend_from_slice(b"admin\0");
    bson.push(0);
    let mut doc = ((bson.len() + 4) as i32).to_le_bytes().to_vec();
    doc.extend_from_slice(&bson);
    let mut body = 0u32.to_le_bytes().to_vec(); // flagBits
    body.push(0); // section kind 0
    body.extend_from_slice(&doc);
    let mut m = ((16 + body.len()) as u32).to_le_bytes().to_vec();
    m.extend_from_slice(&7u32.to_le_bytes()); // requestID
    m.extend_from_slice(&0u32.to_le_bytes()); // responseTo
    m.extend_from_slice(&2013u32.to_le_bytes()); // OP_MSG
    m.extend_from_slice(&body);
    v.push(Sample {
        what: "OP_MSG hello (built)".into(),
        app: App::MongoDb,
        proto: IpProto::Tcp,
        client: m,
        server: Vec::new(),
    });
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
            .chain((1..s.server.len().min(64)).map(|n| (0, n)))
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
