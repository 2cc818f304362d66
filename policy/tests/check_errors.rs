//! Every validation error and warning of `config::load_str`, each at its exact position.

use natfw_policy::config::{load_str, Diagnostic, Severity};

/// A valid gateway and the start of the rule list: rules begin on line 10.
const GW: &str = "\
gateway:
  name: gw
  inside: eth1
  outside: eth2
  eips: [203.0.113.10, 2001:db8::10]
  snat:
    - {name: a, source: 10.0.0.0/16}
firewall:
  rules:
";

fn diags(text: &str) -> Vec<Diagnostic> {
    match load_str("t.yaml", text) {
        Ok(l) => l.warnings,
        Err(d) => d.0,
    }
}

fn lines(text: &str) -> Vec<String> {
    diags(text).iter().map(ToString::to_string).collect()
}

/// `line:col` of the first `needle` on 1-based `line` of `text` (positions are computed from
/// the text, so a test cannot drift from the file it checks).
#[track_caller]
fn at(text: &str, line: usize, needle: &str) -> String {
    let l = text.lines().nth(line - 1).expect("line exists");
    let col = l
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not on line {line}: {l}"));
    format!("{line}:{}", col + 1)
}

/// Exactly one error, at the first `needle` on `line`, containing `fragment`.
#[track_caller]
fn error_at(text: &str, line: usize, needle: &str, fragment: &str) {
    let all = lines(text);
    let errors: Vec<&String> = all.iter().filter(|l| !l.contains(": warning: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {all:#?}");
    let want = format!("t.yaml:{}: ", at(text, line, needle));
    assert!(
        errors[0].starts_with(&want) && errors[0].contains(fragment),
        "expected `{want}...{fragment}...`, got {all:#?}"
    );
}

#[track_caller]
fn rules_error_at(rules: &str, line: usize, needle: &str, fragment: &str) {
    error_at(&format!("{GW}{rules}"), line, needle, fragment);
}

/// Loads, with exactly these warnings (position and fragment).
#[track_caller]
fn warnings_are(text: &str, want: &[(usize, &str, &str)]) {
    let loaded = load_str("t.yaml", text).unwrap_or_else(|d| panic!("did not load:\n{d}"));
    let got: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, (line, needle, frag)) in got.iter().zip(want) {
        let at = at(text, *line, needle);
        assert!(
            g.starts_with(&format!("t.yaml:{at}: warning: ")) && g.contains(frag),
            "expected {at} {frag}, got {got:#?}"
        );
    }
}

#[test]
fn base_config_is_valid() {
    let l = load_str("t.yaml", GW).unwrap();
    assert!(l.warnings.is_empty());
    assert_eq!(
        l.config.gateway.snat[0].eips,
        vec!["203.0.113.10".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn yaml_syntax_error() {
    error_at(
        "gateway:\n  name: [gw\n  inside: eth1\n",
        3,
        ":",
        "YAML syntax error",
    );
}

#[test]
fn yaml_duplicate_key() {
    let text = GW.replace("  inside: eth1\n", "  inside: eth1\n  inside: eth3\n");
    error_at(
        &text,
        4,
        "inside",
        "duplicate key `inside` (first at line 3)",
    );
}

#[test]
fn unknown_key_top_level() {
    error_at(
        &format!("{GW}colour: blue\n"),
        10,
        "colour",
        "unknown key `colour` in the top level; allowed keys: gateway, firewall",
    );
}

#[test]
fn unknown_key_nested() {
    let text = GW.replace(
        "{name: a, source: 10.0.0.0/16}",
        "{name: a, source: 10.0.0.0/16, eip: 203.0.113.10}",
    );
    error_at(
        &text,
        7,
        "eip:",
        "unknown key `eip` in gateway.snat[0] (did you mean `eips`?); allowed keys: name, source, eips",
    );
    rules_error_at(
        "    - {name: r, action: accept, port: 80}\n",
        10,
        "port:",
        "unknown key `port` in firewall.rules[0] (did you mean `ports`?); allowed keys: name, description",
    );
    rules_error_at(
        "    - {name: r, action: accept, destination: {domains: [a.com]}}\n",
        10,
        "domains",
        "unknown key `domains`",
    );
}

#[test]
fn wrong_type() {
    let text = GW.replace(
        "  eips: [203.0.113.10, 2001:db8::10]",
        "  eips: {a: 203.0.113.10}",
    );
    error_at(
        &text,
        5,
        "{a",
        "gateway.eips: expected a list of IP addresses, found a mapping",
    );
    rules_error_at(
        "    - {name: r, action: accept, enabled: yes}\n",
        10,
        "yes",
        "expected true or false",
    );
    rules_error_at(
        "    - name: [r]\n      action: accept\n",
        10,
        "[r]",
        "expected a string, found a list",
    );
}

#[test]
fn bad_cidr_and_ip() {
    rules_error_at(
        "    - {name: r, action: accept, source: 10.0.0.0/33}\n",
        10,
        "10.0.0.0/33",
        "bad IP address or CIDR `10.0.0.0/33`",
    );
    rules_error_at(
        "    - {name: r, action: accept, source: 10.0.0.1/8}\n",
        10,
        "10.0.0.1/8",
        "has host bits set (the network is 10.0.0.0/8)",
    );
    let text = GW.replace("203.0.113.10, 2001", "203.0.113.300, 2001");
    error_at(&text, 5, "203.0.113.300", "bad IP address `203.0.113.300`");
}

#[test]
fn bad_port_and_range() {
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, ports: [80, 70000]}\n",
        10,
        "70000",
        "bad port `70000`",
    );
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, ports: [0]}\n",
        10,
        "0]",
        "bad port `0`",
    );
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, ports: \"80-x\"}\n",
        10,
        "\"80-x\"",
        "bad port `x`",
    );
}

#[test]
fn reversed_range() {
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, ports: \"90-80\"}\n",
        10,
        "\"90-80\"",
        "reversed port range `90-80`",
    );
}

#[test]
fn unknown_address_books() {
    rules_error_at(
        "    - {name: r, action: accept, source_book: nope}\n",
        10,
        "nope",
        "unknown ip address book `nope` (defined: none)",
    );
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, port_book: nope}\n",
        10,
        "nope",
        "unknown port address book `nope`",
    );
    rules_error_at(
        "    - {name: r, action: accept, destination: {domain_book: nope}}\n",
        10,
        "nope",
        "unknown domain address book `nope`",
    );
    rules_error_at(
        "    - {name: r, action: accept, destination: {ip_book: nope}}\n",
        10,
        "nope",
        "unknown ip address book `nope`",
    );
}

#[test]
fn duplicate_rule_names() {
    rules_error_at(
        "    - {name: r, action: accept}\n    - {name: r, action: drop}\n",
        11,
        "r, ",
        "duplicate rule name `r` (first at line 10)",
    );
}

#[test]
fn eip_count() {
    let text = GW
        .replace("  eips: [203.0.113.10, 2001:db8::10]", "  eips: []")
        .replace(
            "{name: a, source: 10.0.0.0/16}",
            "{name: a, source: 10.0.0.0/16, eips: [203.0.113.10]}",
        );
    let all = lines(&text);
    assert!(
        all[0].starts_with("t.yaml:5:9: gateway.eips: a gateway has 1 to 10 EIPs, found 0"),
        "{all:#?}"
    );
    let eleven: Vec<String> = (1..=11).map(|i| format!("203.0.113.{i}")).collect();
    let text = GW
        .replace("203.0.113.10, 2001:db8::10", &eleven.join(", "))
        .replace(
            "source: 10.0.0.0/16}",
            "source: 10.0.0.0/16, eips: [203.0.113.1]}",
        );
    error_at(&text, 5, "[", "a gateway has 1 to 10 EIPs, found 11");
}

#[test]
fn snat_uses_foreign_eip() {
    let text = GW.replace(
        "source: 10.0.0.0/16}",
        "source: 10.0.0.0/16, eips: [203.0.113.99]}",
    );
    error_at(
        &text,
        7,
        "203.0.113.99",
        "EIP 203.0.113.99 is not one of the gateway's eips",
    );
}

#[test]
fn no_snat_entry() {
    let text = GW.replace(
        "  snat:\n    - {name: a, source: 10.0.0.0/16}\n",
        "  snat: []\n",
    );
    error_at(&text, 6, "[]", "no SNAT entry");
    let text = GW.replace("  snat:\n    - {name: a, source: 10.0.0.0/16}\n", "");
    error_at(&text, 2, "name", "no SNAT entry");
}

#[test]
fn dnat_while_firewall_enabled() {
    let text = GW.replace(
        "  snat:",
        "  dnat: [{name: web, eip: 203.0.113.10, protocol: tcp, port: 80, to: 10.0.0.5}]\n  snat:",
    );
    error_at(
        &text,
        6,
        "dnat",
        "DNAT entries are not allowed while the firewall is enabled",
    );
    let off = text.replace("firewall:\n  rules:\n", "firewall:\n  enabled: false\n");
    let l = load_str("t.yaml", &off).unwrap();
    assert_eq!(l.config.gateway.dnat[0].to_port, 80);
}

#[test]
fn overlapping_snat_sources() {
    let text = GW.replace(
        "    - {name: a, source: 10.0.0.0/16}\n",
        "    - {name: a, source: 10.0.0.0/16}\n    - {name: b, source: 10.0.1.0/24}\n",
    );
    error_at(
        &text,
        8,
        "10.0.1.0/24",
        "source 10.0.1.0/24 of `b` overlaps source 10.0.0.0/16 of `a` (line 7)",
    );
}

#[test]
fn snat_family_mismatch() {
    let text = GW.replace(
        "source: 10.0.0.0/16}",
        "source: 10.0.0.0/16, eips: [2001:db8::10]}",
    );
    error_at(
        &text,
        7,
        "2001:db8::10",
        "source 10.0.0.0/16 is IPv4 but EIP 2001:db8::10 is IPv6",
    );
    let text = GW
        .replace("203.0.113.10, 2001:db8::10", "203.0.113.10")
        .replace("10.0.0.0/16", "fd00::/8");
    error_at(
        &text,
        7,
        "{name",
        "source fd00::/8 is IPv6 but the gateway has no IPv6 EIP",
    );
}

#[test]
fn domain_on_icmp() {
    rules_error_at(
        "    - {name: r, action: accept, protocol: icmp, destination: {domain: a.com}}\n",
        10,
        "{domain",
        "a domain destination cannot match protocol icmp",
    );
}

#[test]
fn application_protocol_cannot_carry() {
    rules_error_at(
        "    - {name: r, action: accept, protocol: tcp, applications: [HTTPS, QUIC]}\n",
        10,
        "QUIC",
        "application QUIC cannot be carried over tcp",
    );
    rules_error_at(
        "    - {name: r, action: accept, protocol: icmp, applications: SSH}\n",
        10,
        "SSH",
        "application SSH cannot be carried over icmp",
    );
}

#[test]
fn ports_on_icmp() {
    rules_error_at(
        "    - {name: r, action: accept, protocol: icmp, ports: 80}\n",
        10,
        "ports",
        "protocol icmp has no ports",
    );
}

#[test]
fn wildcard_in_dns_mode() {
    rules_error_at(
        "    - name: r\n      action: accept\n      destination: {domain: [a.com, \"*.b.com\"]}\n      domain_mode: dns\n",
        13,
        "dns",
        "domain_mode dns cannot use the wildcard `*.b.com`",
    );
}

#[test]
fn unknown_country_or_continent() {
    rules_error_at(
        "    - {name: r, action: drop, destination: {location: [CN, XK]}}\n",
        10,
        "XK",
        "unknown country or continent `XK`",
    );
    rules_error_at(
        "    - {name: r, action: drop, destination: {location: atlantis}}\n",
        10,
        "atlantis",
        "unknown country or continent `atlantis`",
    );
}

#[test]
fn unknown_application() {
    rules_error_at(
        "    - {name: r, action: accept, applications: [HTTPS, Gopher]}\n",
        10,
        "Gopher",
        "unknown application `Gopher`",
    );
}

#[test]
fn bad_enum_values() {
    let text = GW.replace("firewall:\n", "firewall:\n  mode: relaxed\n");
    error_at(
        &text,
        9,
        "relaxed",
        "firewall.mode: bad value `relaxed`; expected one of: loose, strict",
    );
    let text = GW.replace("firewall:\n", "firewall:\n  default_action: reject\n");
    error_at(
        &text,
        9,
        "reject",
        "bad value `reject`; expected one of: accept, drop",
    );
    rules_error_at(
        "    - {name: r, action: allow}\n",
        10,
        "allow",
        "rule `r` action: bad value `allow`; expected one of: accept, drop, log",
    );
    rules_error_at(
        "    - {name: r, action: drop, protocol: sctp}\n",
        10,
        "sctp",
        "bad value `sctp`; expected one of: any, tcp, udp, icmp",
    );
    rules_error_at(
        "    - {name: r, action: drop, destination: {domain: a.com}, domain_mode: sni}\n",
        10,
        "sni",
        "expected one of: fqdn, dns, fqdn_or_dns, fqdn_and_dns",
    );
}

#[test]
fn domain_mode_without_domain_destination() {
    rules_error_at(
        "    - {name: r, action: drop, destination: {cidr: 198.51.100.0/24}, domain_mode: dns}\n",
        10,
        "dns}",
        "domain_mode applies only to a domain destination",
    );
    rules_error_at(
        "    - {name: r, action: drop, domain_mode: fqdn}\n",
        10,
        "fqdn",
        "domain_mode applies only to a domain destination",
    );
}

#[test]
fn two_destination_kinds() {
    rules_error_at(
        "    - {name: r, action: drop, destination: {cidr: 198.51.100.0/24, domain: a.com}}\n",
        10,
        "domain",
        "only one kind per rule; found both `cidr` and `domain`",
    );
}

#[test]
fn other_rule_errors() {
    rules_error_at(
        "    - {name: r, action: drop, source: 10.0.0.0/8, source_book: x}\n",
        10,
        "x}",
        "use either `source` or `source_book`",
    );
    rules_error_at(
        "    - {name: r, action: drop, destination: {domain: 192.0.2.1}}\n",
        10,
        "192.0.2.1",
        "is an address, not a domain",
    );
    rules_error_at(
        "    - {name: r, action: drop, destination: {domain: \"a.*.com\"}}\n",
        10,
        "\"a.*.com\"",
        "only a leading `*.` is allowed",
    );
    rules_error_at(
        "    - {name: r, action: drop, applications: [ANY, HTTP]}\n",
        10,
        "ANY",
        "ANY cannot be combined",
    );
    rules_error_at(
        "    - {name: r}\n",
        10,
        "{name",
        "missing required key `action`",
    );
}

#[test]
fn admin_listener_rules() {
    let text =
        format!("{GW}admin: {{listen: \"0.0.0.0:9443\", token_file: /t, plain_http: true}}\n");
    error_at(
        &text,
        10,
        "plain_http",
        "only allowed on a loopback listener",
    );
    let text = format!("{GW}admin: {{listen: \"127.0.0.1:9443\", token_file: /t}}\n");
    error_at(&text, 10, "{listen", "set tls_cert and tls_key");
    let ok = format!("{GW}admin: {{listen: \"[::1]:9443\", token_file: /t, plain_http: true}}\nmetrics: {{listen: \"127.0.0.1:9469\"}}\n");
    let l = load_str("t.yaml", &ok).unwrap();
    assert!(l.config.admin.unwrap().plain_http);
    assert_eq!(l.config.metrics.unwrap().listen.port(), 9469);
    // Without `listen`: loopback on 9469 (node_exporter has 9100).
    let dflt = format!("{GW}metrics: {{}}\n");
    let l = load_str("t.yaml", &dflt).unwrap();
    assert_eq!(
        l.config.metrics.unwrap().listen,
        "127.0.0.1:9469".parse().unwrap()
    );
}

#[test]
fn bypass_outside_snat_is_a_warning() {
    let text = GW.replace("  snat:", "  bypass: [10.0.1.5, 10.9.0.0/16]\n  snat:");
    warnings_are(
        &text,
        &[(
            6,
            "10.9.0.0/16",
            "10.9.0.0/16 is not inside any SNAT source",
        )],
    );
}

#[test]
fn every_problem_in_one_run_sorted() {
    let text = format!(
        "{GW}    - {{name: r, action: allow}}\n    - {{name: s, action: drop, ports: \"9-1\"}}\nbogus: 1\n"
    )
    .replace("  name: gw\n", "  name: gw\n  colour: red\n");
    let all = lines(&text);
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(all[0].starts_with("t.yaml:3:3: unknown key `colour`"));
    assert!(all[1].starts_with(&format!("t.yaml:{}: ", at(&text, 11, "allow"))));
    assert!(
        all[2].starts_with(&format!("t.yaml:{}: ", at(&text, 12, "\"9-1\""))),
        "{all:#?}"
    );
    assert!(all[3].starts_with("t.yaml:13:1: unknown key `bogus`"));
    let sev: Vec<Severity> = diags(&text).iter().map(|d| d.severity).collect();
    assert!(sev.iter().all(|s| *s == Severity::Error));
}

#[test]
fn shadowed_rules_and_unused_books_warn() {
    let text = format!(
        "{GW}    - {{name: mirrors, action: accept, protocol: tcp, destination: {{domain: \"*.debian.org\"}}}}
    - {{name: deb, action: accept, protocol: tcp, ports: 443, destination: {{domain: deb.debian.org}}}}
    - {{name: deb-dns, action: accept, destination: {{domain: deb.debian.org}}, domain_mode: dns}}
    - {{name: all, action: drop}}
    - {{name: after, action: log, protocol: udp}}
  address_books:
    port: {{web: [80, 443]}}
"
    );
    warnings_are(
        &text,
        &[
            (
                11,
                "{",
                "rule `deb` can never match: rule `mirrors` (line 10)",
            ),
            (
                14,
                "{",
                "rule `after` can never match: rule `all` (line 13)",
            ),
            (16, "web", "port address book `web` is never used"),
        ],
    );
}

#[test]
fn continent_expansion_and_ambiguous_codes() {
    let text = format!(
        "{GW}    - {{name: r, action: drop, destination: {{location: [oceania, EU, NA]}}}}\n"
    );
    let l = load_str("t.yaml", &text).unwrap();
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with(&format!("t.yaml:{}: warning: ", at(&text, 10, "NA]")))
            && w[0].contains("read as the country NA"),
        "{w:#?}"
    );
    let natfw_policy::Destination::Location(cc) = &l.config.firewall.rules[0].destination else {
        panic!("not a location")
    };
    for c in ["AU", "NZ", "DE", "FR", "RU", "NA"] {
        assert!(cc.iter().any(|x| x.as_str() == c), "{c} missing");
    }
    assert!(!cc.iter().any(|x| x.as_str() == "US"));
    assert!(cc.windows(2).all(|p| p[0] < p[1]));
}

#[test]
fn gateway_interfaces_and_dnat_conflicts() {
    let text = GW.replace("  outside: eth2", "  outside: eth1");
    error_at(&text, 4, "eth1", "`eth1` is also the inside interface");
    let text = GW.replace("  inside: eth1", "  inside: a-very-long-interface0");
    error_at(&text, 3, "a-very", "not a valid interface name");
    let text = GW.replace("firewall:\n  rules:\n", "firewall:\n  enabled: false\n").replace(
        "  snat:",
        "  dnat:\n    - {name: w, eip: 203.0.113.10, protocol: tcp, port: 80, to: 10.0.0.5}\n    - {name: v, eip: 203.0.113.10, protocol: tcp, port: 80, to: 10.0.0.6}\n  snat:",
    );
    error_at(
        &text,
        7,
        "-",
        "`w` and `v` both forward tcp 203.0.113.10:80",
    );
}

#[test]
fn admin_and_metrics_cannot_share_a_listener() {
    let text = format!(
        "{GW}admin: {{listen: \"127.0.0.1:9469\", token_file: /t, plain_http: true}}\nmetrics: {{listen: \"127.0.0.1:9469\"}}\n"
    );
    error_at(&text, 11, "{", "127.0.0.1:9469 is also the admin listener");
}

#[test]
fn logging_format_is_json_or_ecs() {
    let l = load_str("t.yaml", GW).unwrap();
    assert_eq!(l.config.logging.format, natfw_policy::RecordFormat::Json);
    let ecs = format!("{GW}logging: {{format: ecs}}\n");
    let l = load_str("t.yaml", &ecs).unwrap();
    assert_eq!(l.config.logging.format, natfw_policy::RecordFormat::Ecs);
    let bad = format!("{GW}logging: {{format: elastic}}\n");
    error_at(&bad, 10, "elastic", "logging.format");
}

#[test]
fn packet_workers_are_bounded_and_need_the_fast_path() {
    let gw =
        |extra: &str| GW.replacen("  outside: eth2\n", &format!("  outside: eth2\n{extra}"), 1);
    error_at(
        &gw("  workers: 0\n"),
        5,
        "0",
        "gateway.workers: 0 is not in 1..8",
    );
    error_at(
        &gw("  workers: 9\n"),
        5,
        "9",
        "gateway.workers: 9 is not in 1..8",
    );
    error_at(
        &gw("  fast_path: false\n  workers: 2\n"),
        6,
        "2",
        "needs the fast path",
    );
    let ok = load_str("t.yaml", &gw("  workers: 8\n")).expect("8 workers load");
    assert_eq!(ok.config.gateway.workers, 8);
    let one = load_str("t.yaml", GW).expect("default");
    assert_eq!(one.config.gateway.workers, 1);
    // Classic mode with its one worker said explicitly is fine.
    assert!(load_str("t.yaml", &gw("  fast_path: false\n  workers: 1\n")).is_ok());
}
