//! `GET /healthz` (what `natfw health` and keepalived judge): starting before the first
//! publication, healthy while the control loop publishes and the packet worker's loop turns,
//! unhealthy when the worker stops turning or the default route is gone; served by the metrics
//! listener without a token, with 200/503.

use std::sync::Arc;

use natfw_engine::engine::{Engine, GeoDb};
use natfw_gateway::admin::http::{call, Server};
use natfw_gateway::admin::{metrics_handler, Control};
use natfw_gateway::metrics::Snapshot;

fn control() -> Arc<Control> {
    let text = "gateway:
  name: gw-health
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {name: all, source: 10.0.0.0/8}
firewall:
  default_action: accept
logging: {flow_log: '-'}
";
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", text).expect("config");
    let engine = Engine::new(
        &cfg,
        GeoDb::embedded(),
        Box::new(natfw_engine::engine::NullSink),
    )
    .expect("engine");
    Arc::new(Control::new(
        cfg,
        "natfw.yaml".into(),
        engine.policy_handle(),
    ))
}

fn snap(heartbeats: u64, route: bool) -> Snapshot {
    Snapshot {
        heartbeats,
        default_route: vec![("ipv4", route)],
        ..Snapshot::default()
    }
}

#[test]
fn healthz_follows_the_worker_and_the_route() {
    let c = control();
    let (ok, v) = c.health();
    assert!(!ok);
    assert_eq!(v["starting"], true);

    c.publish(snap(10, true));
    assert!(c.health().0, "first publication with a route");
    c.publish(snap(25, true));
    let (ok, v) = c.health();
    assert!(ok, "{v}");
    assert_eq!(v["workers_alive"], true);

    // The worker's loop did not turn between two publications.
    c.publish(snap(25, true));
    let (ok, v) = c.health();
    assert!(!ok);
    assert_eq!(v["workers_alive"], false);

    c.publish(snap(40, false));
    let (ok, v) = c.health();
    assert!(!ok);
    assert_eq!(v["default_route_up"], false);
}

#[test]
fn metrics_listener_serves_healthz_without_a_token() {
    let c = control();
    let srv = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        metrics_handler(Arc::clone(&c)),
    )
    .expect("listener");
    let url = format!("http://{}", srv.addr);
    let (status, body) = call(&url, "GET", "/healthz", None, None, None).expect("call");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    c.publish(snap(1, true));
    c.publish(snap(2, true));
    let (status, body) = call(&url, "GET", "/healthz", None, None, None).expect("call");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["healthy"], true);
}
