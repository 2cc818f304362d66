//! Every shipped example config loads, and the scenario examples do what their comments say
//! (checked with the reference evaluator).

use std::path::{Path, PathBuf};

use natfw_policy::config::{load_file, Loaded};
use natfw_policy::eval::IpProto;
use natfw_policy::{
    naive_evaluate, Action, App, CountryCode, DecidedBy, Fact, Firewall, FlowFacts, Outcome,
};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn load(rel: &str) -> Loaded {
    let path = examples_dir().join(rel);
    let loaded = load_file(&path).unwrap_or_else(|d| panic!("{rel} does not load:\n{d}"));
    assert!(
        loaded.warnings.is_empty(),
        "{rel} has unintended warnings: {:#?}",
        loaded.warnings
    );
    loaded
}

#[test]
fn every_example_passes_check() {
    let mut files = Vec::new();
    yaml_files(&examples_dir(), &mut files);
    assert!(files.len() >= 4, "examples missing: {files:?}");
    for f in files {
        if let Err(d) = load_file(&f) {
            panic!("{} does not pass check:\n{d}", f.display());
        }
    }
}

/// One flow's facts, all known.
struct Flow<'a> {
    src: &'a str,
    dst: &'a str,
    proto: IpProto,
    port: Option<u16>,
    domain: Option<&'a str>,
    app: Option<App>,
    country: Option<&'a str>,
    dns: &'a [&'a str],
}

fn tcp<'a>(src: &'a str, dst: &'a str, port: u16, domain: Option<&'a str>, app: App) -> Flow<'a> {
    Flow {
        src,
        dst,
        proto: IpProto::Tcp,
        port: Some(port),
        domain,
        app: Some(app),
        country: None,
        dns: &[],
    }
}

/// `(deciding rule name or "default", action)`.
fn decide(fw: &Firewall, f: &Flow<'_>) -> (String, Action) {
    let facts = FlowFacts {
        src: f.src.parse().expect("src"),
        dst: f.dst.parse().expect("dst"),
        proto: f.proto,
        dst_port: f.port,
        country: f.country.and_then(CountryCode::new),
        domain: f.domain.map_or(Fact::Unidentifiable, Fact::Known),
        app: f.app.map_or(Fact::Unidentifiable, Fact::Known),
        dns_names: f.dns,
        resolution: natfw_policy::Resolution::Final,
    };
    match naive_evaluate(fw, &facts).outcome {
        Outcome::Decided { rule, action, by } => {
            let name = match (rule, by) {
                (None, DecidedBy::Default) => "default".to_string(),
                (Some(id), _) => fw.rules[id.0 as usize].name.clone(),
                (None, _) => unreachable!("only the default has no rule"),
            };
            (name, action)
        }
        o => panic!("all facts are known, yet the outcome is {o:?}"),
    }
}

#[track_caller]
fn expect(fw: &Firewall, f: Flow<'_>, rule: &str, action: Action) {
    assert_eq!(
        decide(fw, &f),
        (rule.to_string(), action),
        "{} -> {}",
        f.src,
        f.dst
    );
}

#[test]
fn prod_and_test_vpcs_allow_only_updates() {
    for (file, src, deny_rule) in [
        ("1-prod-test-vpcs/prod.yaml", "10.10.4.20", "default"),
        (
            "1-prod-test-vpcs/test.yaml",
            "10.20.4.20",
            "deny-everything-else",
        ),
    ] {
        let fw = load(file).config.firewall;
        let ext = "198.51.100.80";
        expect(
            &fw,
            tcp(src, ext, 443, Some("deb.debian.org"), App::Https),
            "os-mirrors",
            Action::Accept,
        );
        expect(
            &fw,
            tcp(src, ext, 80, Some("security.ubuntu.com"), App::Http),
            "os-mirrors",
            Action::Accept,
        );
        expect(
            &fw,
            tcp(src, ext, 443, Some("repo.maven.apache.org"), App::Https),
            "maven-central",
            Action::Accept,
        );
        expect(
            &fw,
            tcp(src, ext, 443, Some("auth.docker.io"), App::Https),
            "container-registry",
            Action::Accept,
        );
        expect(
            &fw,
            tcp(
                src,
                ext,
                443,
                Some("production.cloudflare.docker.com"),
                App::Https,
            ),
            "container-registry",
            Action::Accept,
        );
        let dns = Flow {
            proto: IpProto::Udp,
            port: Some(53),
            app: Some(App::Dns),
            ..tcp(src, "198.51.100.53", 53, None, App::Dns)
        };
        expect(&fw, dns, "dns-to-resolvers", Action::Accept);
        // Everything else, including DNS to another resolver and mirrors over SSH.
        let other_dns = Flow {
            proto: IpProto::Udp,
            ..tcp(src, "192.0.2.53", 53, None, App::Dns)
        };
        expect(&fw, other_dns, deny_rule, Action::Drop);
        expect(
            &fw,
            tcp(src, ext, 443, Some("www.example.com"), App::Https),
            deny_rule,
            Action::Drop,
        );
        expect(
            &fw,
            tcp(src, ext, 22, Some("deb.debian.org"), App::Ssh),
            deny_rule,
            Action::Drop,
        );
        expect(
            &fw,
            tcp(src, ext, 443, None, App::Https),
            deny_rule,
            Action::Drop,
        );
    }
    let prod = load("1-prod-test-vpcs/prod.yaml").config;
    let v6 = tcp(
        "fd10::5",
        "2001:db8:443::1",
        443,
        Some("repo1.maven.org"),
        App::Https,
    );
    expect(&prod.firewall, v6, "maven-central", Action::Accept);
}

#[test]
fn dmz_allows_only_partner_services_and_monitors_the_rest() {
    let fw = load("2-dmz-shared/natfw.yaml").config.firewall;
    let srv = "198.51.100.10";
    let pay = Flow {
        dns: &["api.payments.example"],
        ..tcp(
            "10.1.0.9",
            srv,
            443,
            Some("api.payments.example"),
            App::Https,
        )
    };
    expect(&fw, pay, "shop-payments", Action::Accept);
    // fqdn_and_dns: the SNI alone, towards an address the name did not resolve to, fails.
    let forged = tcp(
        "10.1.0.9",
        srv,
        443,
        Some("api.payments.example"),
        App::Https,
    );
    expect(&fw, forged, "deny-everything-else", Action::Drop);
    // Payments are for the shop only.
    let other = Flow {
        dns: &["api.payments.example"],
        ..tcp(
            "10.2.0.9",
            srv,
            443,
            Some("api.payments.example"),
            App::Https,
        )
    };
    expect(&fw, other, "deny-everything-else", Action::Drop);
    expect(
        &fw,
        tcp(
            "10.2.7.1",
            srv,
            8444,
            Some("stream.quotes.example"),
            App::Https,
        ),
        "trading-quotes",
        Action::Accept,
    );
    expect(
        &fw,
        tcp(
            "10.3.7.1",
            srv,
            443,
            Some("filings.regulator.test"),
            App::Https,
        ),
        "reporting-filings",
        Action::Accept,
    );
    expect(
        &fw,
        tcp("10.3.7.1", "198.51.100.200", 22, None, App::Ssh),
        "reporting-sftp",
        Action::Accept,
    );
    // Strict mode: no name on 443 → the first domain rule that applies drops it.
    let (rule, action) = decide(&fw, &tcp("10.2.7.1", srv, 443, None, App::Https));
    assert_eq!((rule.as_str(), action), ("trading-quotes", Action::Drop));
    // Monitors record the rest per VPC before the final drop.
    let facts = FlowFacts {
        src: "10.3.1.1".parse().unwrap(),
        dst: "192.0.2.99".parse().unwrap(),
        proto: IpProto::Tcp,
        dst_port: Some(25),
        country: None,
        domain: Fact::Unidentifiable,
        app: Fact::Known(App::Smtp),
        dns_names: &[],
        resolution: natfw_policy::Resolution::Final,
    };
    let ev = naive_evaluate(&fw, &facts);
    let names: Vec<&str> = ev
        .monitors
        .iter()
        .map(|id| fw.rules[id.0 as usize].name.as_str())
        .collect();
    assert_eq!(names, ["monitor-reporting"]);
    assert!(matches!(
        ev.outcome,
        Outcome::Decided {
            action: Action::Drop,
            ..
        }
    ));
}

#[test]
fn vswitches_have_their_own_eips_and_policies() {
    let cfg = load("3-vswitch-eips/natfw.yaml").config;
    let eip_of = |src: &str| {
        let ip: std::net::IpAddr = src.parse().unwrap();
        let e = cfg
            .gateway
            .snat
            .iter()
            .find(|e| e.source.contains(&ip))
            .expect("SNAT-bound");
        e.eips[0].to_string()
    };
    assert_eq!(eip_of("10.30.1.5"), "192.0.2.11");
    assert_eq!(eip_of("fd30:0:0:1::5"), "2001:db8:30::11");
    assert_eq!(eip_of("10.30.3.5"), "192.0.2.13");
    let jump: std::net::IpAddr = "10.30.9.10".parse().unwrap();
    assert!(cfg.gateway.bypass.iter().any(|n| n.contains(&jump)));

    let fw = &cfg.firewall;
    let srv = "198.51.100.10";
    expect(
        fw,
        tcp("10.30.1.5", srv, 443, Some("anything.example"), App::Https),
        "web-https-out",
        Action::Accept,
    );
    let ir = Flow {
        country: Some("IR"),
        ..tcp("10.30.1.5", srv, 443, None, App::Https)
    };
    expect(fw, ir, "web-blocked-countries", Action::Drop);
    expect(
        fw,
        tcp("10.30.2.5", srv, 443, Some("anything.example"), App::Https),
        "default",
        Action::Drop,
    );
    expect(
        fw,
        tcp("10.30.2.5", "198.51.100.70", 5432, None, App::Unknown),
        "app-partner-db",
        Action::Accept,
    );
    let ntp = Flow {
        proto: IpProto::Udp,
        ..tcp("10.30.3.5", "198.51.100.123", 123, None, App::Ntp)
    };
    expect(fw, ntp, "ntp", Action::Accept);
    let ping = Flow {
        proto: IpProto::Icmp,
        port: None,
        ..tcp("10.30.9.7", srv, 0, None, App::Icmp)
    };
    expect(fw, ping, "mgmt-ping", Action::Accept);
    let ping_web = Flow {
        proto: IpProto::Icmp,
        port: None,
        ..tcp("10.30.1.7", srv, 0, None, App::Icmp)
    };
    expect(fw, ping_web, "default", Action::Drop);
    // batch: object storage outside Europe is accepted but recorded by the monitor.
    let up = FlowFacts {
        src: "10.30.3.5".parse().unwrap(),
        dst: srv.parse().unwrap(),
        proto: IpProto::Tcp,
        dst_port: Some(443),
        country: CountryCode::new("US"),
        domain: Fact::Known("eu-1.objects.storage.example"),
        app: Fact::Known(App::Https),
        dns_names: &[],
        resolution: natfw_policy::Resolution::Final,
    };
    let ev = naive_evaluate(fw, &up);
    assert_eq!(ev.monitors.len(), 1);
    assert_eq!(fw.rules[ev.monitors[0].0 as usize].name, "batch-log-non-eu");
    assert!(matches!(
        ev.outcome,
        Outcome::Decided {
            action: Action::Accept,
            ..
        }
    ));
}

#[test]
fn annotated_example_in_docs_is_valid() {
    let doc = std::fs::read_to_string(examples_dir().join("../docs/CONFIG.md")).expect("CONFIG.md");
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = doc[start..].find("```").expect("block end");
    let loaded = natfw_policy::config::load_str("CONFIG.md", &doc[start..start + len])
        .unwrap_or_else(|d| panic!("the documented example does not load:\n{d}"));
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    assert_eq!(loaded.config.firewall.rules.len(), 3);
    assert_eq!(loaded.config.gateway.snat.len(), 3);
}
