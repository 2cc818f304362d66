//! `lab/docker-compose.yml` cannot run here (no Docker engine): check that it parses, that it
//! describes the same scenario-1 topology as the namespace lab (same addresses, EIPs, configs),
//! that it stays inside internal networks, and that its container scripts are valid shell.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use natfw_lab::{plan, Scenario};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load() -> Yaml {
    let text = std::fs::read_to_string(repo().join("lab/docker-compose.yml")).expect("read");
    let mut docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// A service's own keys plus those merged in with `<<: *anchor`.
fn service_key<'a>(svc: &'a Yaml, key: &str) -> &'a Yaml {
    let own = &svc[key];
    if !own.is_badvalue() {
        return own;
    }
    &svc["<<"][key]
}

fn str_list(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_describes_the_scenario_1_topology() {
    let doc = load();
    let services = doc["services"].as_hash().expect("services");
    let names: HashSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    let want: HashSet<&str> = ["internet", "gw-prod", "gw-test", "prod", "test"].into();
    assert_eq!(names, want);

    let networks = doc["networks"].as_hash().expect("networks");
    for (name, net) in networks {
        assert_eq!(
            net["internal"].as_bool(),
            Some(true),
            "network {name:?} must be internal"
        );
    }

    let p = plan(Scenario::ProdTest, "x");
    for g in &p.gateways {
        let svc = &doc["services"][format!("gw-{}", g.name).as_str()];
        assert_eq!(
            svc["privileged"].as_bool(),
            Some(true),
            "gateway {} privileged",
            g.name
        );
        let cmd = str_list(&svc["command"]);
        assert_eq!(
            cmd.first().map(String::as_str),
            Some("/natfw/lab/container/gateway.sh")
        );
        let eip = g.eips[0].to_string();
        assert_eq!(cmd.get(3), Some(&eip), "gateway {} EIP", g.name);
        assert_eq!(
            svc["networks"]["internet"]["ipv4_address"].as_str(),
            Some(eip.as_str())
        );
        assert!(repo().join(&g.config).is_file(), "{}", g.config);
    }
    for h in &p.hosts {
        let svc = &doc["services"][h.name.as_str()];
        let net = format!("vpc-{}", h.name);
        let addr = h.addr.to_string();
        assert_eq!(
            svc["networks"][net.as_str()]["ipv4_address"].as_str(),
            Some(addr.as_str())
        );
        // The host's gateway sits on the same network with the address the host routes to.
        let gw = &doc["services"][format!("gw-{}", h.name).as_str()];
        let gw_in = gw["networks"][net.as_str()]["ipv4_address"]
            .as_str()
            .expect("gw inside");
        assert_eq!(
            str_list(&svc["command"]).get(1).map(String::as_str),
            Some(gw_in)
        );
        assert!(networks.contains_key(&Yaml::String(net.clone())), "{net}");
    }
    // Every service uses the lab image and every script it runs exists.
    for (name, svc) in services {
        assert_eq!(
            service_key(svc, "image").as_str(),
            Some("natfw-lab:latest"),
            "{name:?}"
        );
        let cmd = str_list(&svc["command"]);
        let script = cmd
            .first()
            .and_then(|c| c.strip_prefix("/natfw/"))
            .expect("command");
        assert!(repo().join(script).is_file(), "{script}");
    }
    assert!(repo().join("lab/Dockerfile").is_file());
}

#[test]
fn container_scripts_are_valid_shell() {
    for s in ["internet.sh", "gateway.sh", "host.sh"] {
        let path = repo().join("lab/container").join(s);
        let o = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("bash");
        assert!(
            o.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
