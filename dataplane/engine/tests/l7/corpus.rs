//! Every flow of the shared capture corpus (`tests/data/corpus`) identified as its
//! `expected.json` says: application (one of `app_acceptable`) and domain with its source.

use crate::testpcap;

use std::net::IpAddr;

use natfw_engine::l7::{classify, dns, http, quic, tls, Progress};
use natfw_policy::eval::IpProto;
use natfw_policy::App;
use serde_json::Value;

fn app_label(s: &str) -> App {
    s.parse().unwrap_or_else(|_| panic!("label {s}"))
}

type Identified = (Progress<App>, Option<String>, &'static str);

/// (app, domain, carried_by) for one expected flow, computed from the capture.
fn identify(file: &str, flow: &Value) -> Identified {
    let dst_ip: IpAddr = flow["dst_ip"].as_str().unwrap().parse().unwrap();
    let dst_port = flow["dst_port"].as_u64().map(|p| p as u16);
    match flow["proto"].as_str().unwrap() {
        "tcp" => {
            let flows: Vec<_> = testpcap::tcp_flows(file)
                .into_iter()
                .filter(|f| f.server.ip() == dst_ip && Some(f.server.port()) == dst_port)
                .collect();
            assert!(!flows.is_empty(), "{file}: no flow to {dst_ip}");
            let mut out: Option<Identified> = None;
            // Several connections (Chromium makes two, the flood thousands): all must agree.
            for f in &flows {
                let app =
                    classify::classify(IpProto::Tcp, dst_port, &f.client_stream, &f.server_stream);
                let (domain, by) = match (
                    tls::client_hello(&f.client_stream),
                    http::request(&f.client_stream),
                ) {
                    (Progress::Done(ch), _) => (ch.sni, "sni"),
                    (_, Progress::Done(req)) => (req.host, "host"),
                    _ => (None, "none"),
                };
                let by = if domain.is_none() { "none" } else { by };
                let this = (app, domain, by);
                if let Some(prev) = &out {
                    assert_eq!(prev, &this, "{file}: connections disagree");
                }
                out = Some(this);
            }
            out.unwrap()
        }
        "udp" => {
            let dgrams = testpcap::udp_datagrams(file);
            let client: Vec<&[u8]> = dgrams
                .iter()
                .filter(|d| d.1.ip() == dst_ip && Some(d.1.port()) == dst_port)
                .map(|d| d.2.as_slice())
                .collect();
            let server: Vec<&[u8]> = dgrams
                .iter()
                .filter(|d| d.0.ip() == dst_ip && Some(d.0.port()) == dst_port)
                .map(|d| d.2.as_slice())
                .collect();
            let app = classify::classify(
                IpProto::Udp,
                dst_port,
                client.first().copied().unwrap_or_default(),
                server.first().copied().unwrap_or_default(),
            );
            if quic::is_long_header_initial(client[0]) {
                let mut a = quic::InitialAssembler::new();
                let hello = client
                    .iter()
                    .find_map(|d| a.push(d).done())
                    .expect("QUIC ClientHello");
                return (app, hello.sni, "quic_sni");
            }
            let q = dns::parse(client[0]).expect("DNS query");
            let resp = dns::parse(server[0]).expect("DNS response");
            // The answer must resolve the name the client asked to the server's address.
            assert!(resp
                .resolved()
                .iter()
                .any(|r| Some(&r.0) == q.qname.as_ref()));
            (app, q.qname, "dns")
        }
        "icmp" => (
            classify::classify(IpProto::Icmp, None, b"", b""),
            None,
            "none",
        ),
        p => panic!("proto {p}"),
    }
}

#[test]
fn corpus_matches_expected_json() {
    let path = testpcap::corpus("expected.json");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (name, case) in expected["cases"].as_object().unwrap() {
        let file = case["file"].as_str().unwrap();
        for flow in case["flows"].as_array().unwrap() {
            let (app, domain, by) = identify(file, flow);
            let want_app = flow["app"].as_str().unwrap();
            let acceptable: Vec<App> = match flow["app_acceptable"].as_array() {
                Some(a) => a.iter().map(|v| app_label(v.as_str().unwrap())).collect(),
                None => vec![app_label(want_app)],
            };
            match app {
                Progress::Done(a) => {
                    assert!(
                        acceptable.contains(&a),
                        "{name}: app {a} not in {acceptable:?}"
                    )
                }
                // No payload at all (the SYN flood): undecided, the engine ends it as Unknown.
                Progress::NeedMore => assert_eq!(want_app, "unknown", "{name}: undecided"),
                Progress::Invalid(e) => panic!("{name}: {e}"),
            }
            assert_eq!(domain.as_deref(), flow["domain"].as_str(), "{name}: domain");
            assert_eq!(
                by,
                flow["carried_by"].as_str().unwrap(),
                "{name}: carried_by"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 17, "every flow in expected.json");
}
