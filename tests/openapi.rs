//! The OpenAPI document against the running gateway: schemathesis (from PyPI) checks that every documented route answers as documented.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn schemathesis() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let doc: serde_json::Value = serde_json::from_str(messnetz::api::OPENAPI_JSON).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for route in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/devices",
        "/v1/devices/{id}/latest",
        "/v1/readings",
        "/v1/aggregates",
        "/v1/latest",
        "/v1/catalog",
    ] {
        assert!(paths.contains(&route), "{route} is not documented");
    }

    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("openapi");
    let gw = Gateway::start(broker.port, dir.path(), &topics).await;
    publish_all(
        broker.port,
        &format!("{}-pub", topics.prefix),
        vec![(
            topics.ttn("demo-lht65"),
            ttn_uplink("demo-lht65", "A840410000000001", 1, "CBF60B0D0376010ADD7FFF", "2026-11-25T10:00:00Z"),
        )],
    )
    .await;
    wait_for("the reading", Duration::from_secs(20), || async {
        (gw.metric("messnetz_messages_acked_total").await == 1.0).then_some(())
    })
    .await;

    let url = gw.url("/openapi.json");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .current_dir(std::env::temp_dir())
            .args(["run", &url, "--checks", "all"])
            // Authentication does not exist on these routes; and a well-formed id of a device
            // that does not exist rightly answers 404, which this check would call a failure.
            .args(["--exclude-checks", "ignored_auth,positive_data_acceptance"])
            .args(["--max-examples", "30", "--generation-deterministic"])
            .arg("--report-dir")
            .arg(std::env::temp_dir().join("messnetz-schemathesis"))
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {} ({e}); scripts/test installs it from PyPI", schemathesis()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Warnings (such as "most generated data was rejected" for the exactly-one-of
    // device/district rule) are not failures; the exit status says whether a check failed.
    assert!(stdout.contains("passed"), "{stdout}");
}
