//! The compose lab's files (`lab/compose/scenario-N.yml`, kept equal to what
//! `natfw lab compose config` generates by a test of natfw-lab) must parse as YAML, stay on internal networks, pull and build nothing, give every container
//! the plan's addresses, and run only the entry script in the repository.

use std::path::{Path, PathBuf};

use natfw_lab::compose::{compose_file, compose_plan, GATEWAY_CAPS};
use natfw_lab::Scenario;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
fn compose_files_match_the_namespace_lab() {
    for s in Scenario::ALL {
        let path = repo().join(format!("lab/compose/scenario-{}.yml", s.number()));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, compose_file(s), "{} is stale", path.display());
        let doc = YamlLoader::load_from_str(&text)
            .expect("valid YAML")
            .remove(0);
        let p = compose_plan(s);
        let services = doc["services"].as_hash().expect("services");
        assert_eq!(services.len(), p.namespaces.len());
        for (name, net) in doc["networks"].as_hash().expect("networks") {
            assert_eq!(net["internal"].as_bool(), Some(true), "{name:?} internal");
        }
        for (name, svc) in services {
            assert!(svc["privileged"].is_badvalue(), "{name:?} privileged");
            assert!(svc["build"].is_badvalue(), "{name:?} builds");
            assert_eq!(
                svc["image"].as_str(),
                Some("${NATFW_LAB_IMAGE:-natfw-lab:latest}")
            );
            let cmd = str_list(&svc["command"]);
            assert_eq!(cmd.first().map(String::as_str), Some("/natfw/node.sh"));
        }
        for g in &p.gateways {
            let svc = &doc["services"][format!("gw{}", g.name).as_str()];
            let own = g.own_addr.to_string();
            assert_eq!(
                svc["networks"]["inet"]["ipv4_address"].as_str(),
                Some(own.as_str())
            );
            let caps = str_list(&svc["cap_add"]);
            assert_eq!(caps, GATEWAY_CAPS.map(String::from).to_vec());
            let cmd = str_list(&svc["command"]);
            for e in &g.eips {
                assert!(cmd.contains(&format!("addr=outside0,{e}/24")), "{e}");
            }
            assert!(cmd.contains(&format!("if={own},outside0")));
            let tail: Vec<&str> = cmd
                .iter()
                .skip_while(|a| *a != "--")
                .map(String::as_str)
                .collect();
            let cfg = format!("/lab-state/{}.yaml", g.name);
            assert_eq!(tail, ["--", "natfw", "run", "--config", cfg.as_str()]);
        }
        for h in &p.hosts {
            let svc = &doc["services"][h.name.as_str()];
            let cmd = str_list(&svc["command"]);
            assert!(cmd.contains(&format!("if={},eth0", h.addr)));
            let via = p
                .namespaces
                .iter()
                .find(|n| n.name == h.ns)
                .and_then(|n| n.routes.first())
                .map(|(_, v)| v.to_string())
                .expect("host route");
            assert!(cmd.contains(&format!("route=default,{via}")));
        }
    }
}

#[test]
fn container_entry_script_is_valid_shell() {
    let o = std::process::Command::new("bash")
        .arg("-n")
        .arg(repo().join("lab/container/node.sh"))
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
