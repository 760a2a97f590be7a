//! `/readyz` follows the message input: 503 naming the MQTT connection while the broker is away, 200 again once the gateway has reconnected and resubscribed; the embedded listener is ready once bound.

mod common;

use std::time::Duration;

use common::*;

async fn readiness(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = reqwest::get(gw.url("/readyz")).await.expect("GET /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("/readyz answers JSON"))
}

async fn wait_readiness(gw: &Gateway, want: u16) -> serde_json::Value {
    wait_for(&format!("/readyz to answer {want}"), Duration::from_secs(30), || async {
        let (status, body) = readiness(gw).await;
        (status == want).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_the_lost_broker_and_recovers_with_it() {
    let mut broker = Mosquitto::start_private();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("readiness");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    let body = wait_readiness(&gw, 200).await;
    assert_eq!(body["checks"]["mqtt"]["ok"], true, "{body}");

    broker.stop();
    let body = wait_readiness(&gw, 503).await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["checks"]["mqtt"]["ok"], false, "{body}");
    assert!(body["checks"]["mqtt"]["error"].as_str().unwrap().contains("connection"), "{body}");
    assert!(body["checks"]["mqtt"]["since"].is_string(), "{body}");
    assert_eq!(body["checks"]["store"]["ok"], true, "only the input fails: {body}");
    // /healthz only says the process answers.
    assert!(reqwest::get(gw.url("/healthz")).await.unwrap().status().is_success());

    broker.restart();
    let body = wait_readiness(&gw, 200).await;
    assert_eq!(body["checks"]["mqtt"]["ok"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_listener_is_ready_once_bound() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("readiness-embedded");
    let (gw, _port) = Gateway::start_embedded(dir.path(), &topics).await;
    let (status, body) = readiness(&gw).await;
    assert_eq!((status, &body["checks"]["mqtt"]["ok"]), (200, &serde_json::json!(true)), "{body}");
}
