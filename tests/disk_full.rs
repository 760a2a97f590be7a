//! A full disk under the store: acknowledging stops, `/readyz` names the store, and once space returns ingest resumes by itself (no restart) and every published uplink is stored exactly once.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A tmpfs mounted at a directory for this test, unmounted when dropped (also when the
/// test fails). Declared before the gateway, so the gateway is stopped first.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self(dir.to_owned()))
    }

    /// Fill what is left of the file system with a ballast file next to the store, and keep
    /// it full (the store may give space back when it closes and reopens its file) until the
    /// returned [`Ballast`] is removed.
    fn fill(&self) -> Ballast {
        let path = self.0.join("ballast");
        let mut file = std::fs::File::create(&path).expect("create the ballast file");
        top_up(&mut file);
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    top_up(&mut file);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Ballast { path, stop, keeper: Some(keeper) }
    }
}

/// Append to the file until nothing more fits.
fn top_up(file: &mut std::fs::File) {
    let chunk = vec![0x5a_u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0x5a; 512]).is_ok() {}
}

/// The file that keeps the disk full, topped up by a thread of its own.
struct Ballast {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Ballast {
    /// Stop topping it up and delete it: space returns.
    fn remove(mut self) {
        self.stop_keeper();
        std::fs::remove_file(&self.path).expect("remove the ballast");
    }

    fn stop_keeper(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        self.stop_keeper();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process the test could not stop): detach it, so nothing is left mounted.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Uplinks `first..first + n` of `demo-lht65`, each with its own frame counter and time.
fn uplinks(topics: &Topics, first: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    const START: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
    (first..first + n)
        .map(|i| {
            let at = chrono::DateTime::from_timestamp(START + 60 * i as i64, 0)
                .expect("time in range")
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A840410000000001", i as u32 + 1, LHT65_PAYLOAD, &at))
        })
        .collect()
}

async fn readyz(client: &reqwest::Client, gw: &Gateway) -> (u16, serde_json::Value) {
    let response = client.get(gw.url("/readyz")).send().await.expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("/readyz answers JSON"))
}

/// Air temperature readings of `demo-lht65` stored so far, through the API.
async fn stored(client: &reqwest::Client, gw: &Gateway) -> Option<usize> {
    let url = gw.url(
        "/v1/readings?device=demo-lht65&quantity=air_temperature&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&limit=10000",
    );
    let body: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    Some(body["readings"].as_array()?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acking_says_so_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway's store path (tests/common puts it at `data`), on a small file system.
    let mount = match Tmpfs::mount(&dir.path().join("data"), "16m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_stops_acking_says_so_and_recovers_without_a_restart: {why} (mounting a tmpfs needs root)"
            );
            return;
        }
    };
    let broker = Mosquitto::start();
    let topics = Topics::new("disk-full");
    let gw = Gateway::start_with(broker.port, dir.path(), &topics, "\n[ingest]\nqueue_capacity = 4096\n").await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let publisher = format!("{}-pub", topics.prefix);

    let (status, body) = readyz(&client, &gw).await;
    assert_eq!(status, 200, "ready at the start: {body}");
    assert_eq!(body["checks"]["store"]["ok"], true, "{body}");

    // Some uplinks on an empty disk, then fill it.
    let mut published = 0;
    publish_all(broker.port, &publisher, uplinks(&topics, published, 100)).await;
    published += 100;
    wait_for("the first uplinks stored", Duration::from_secs(30), || async {
        (stored(&client, &gw).await? == published).then_some(())
    })
    .await;
    let ballast = mount.fill();

    // Uplinks until a commit fails: the store's file has some room of its own left.
    const ROUND: usize = 300;
    // More than this test's `ingest.queue_capacity` (4,096, set below the default so that
    // what is published while the disk is full fits the 16 MB file system once it is stored).
    const HELD: usize = 4_500;
    const FULL_FOR: Duration = Duration::from_secs(50);
    let failing = loop {
        assert!(published < 9_000, "{published} uplinks on a full disk and /readyz still 200 (log: {})", gw.log.display());
        publish_all(broker.port, &publisher, uplinks(&topics, published, ROUND)).await;
        published += ROUND;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failing = None;
        while Instant::now() < deadline {
            let (status, body) = readyz(&client, &gw).await;
            if status == 503 {
                failing = Some(body);
                break;
            }
            assert_eq!(status, 200, "{body}");
            if stored(&client, &gw).await == Some(published) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(body) = failing {
            break body;
        }
    };
    // Readiness says what fails: the store, with the error and since when.
    assert_eq!(failing["ready"], false, "{failing}");
    let store = &failing["checks"]["store"];
    assert_eq!(store["ok"], false, "{failing}");
    let error = store["error"].as_str().unwrap_or_default();
    assert!(error.contains("No space left") || error.contains("I/O"), "the store check names the cause: {failing}");
    assert!(store["since"].as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()), "{failing}");
    assert_eq!(gw.metric("messnetz_store_writable").await, 0.0);

    // Still full: more uplinks arrive than the gateway's ingest queue holds (so the broker
    // keeps the rest), nothing more is acknowledged, the process keeps answering; and the
    // disk stays full for longer than 1.5 MQTT keep-alives (30 s), as an outage would.
    let full_since = Instant::now();
    publish_all(broker.port, &publisher, uplinks(&topics, published, HELD)).await;
    published += HELD;
    let acked = gw.metric("messnetz_messages_acked_total").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gw.metric("messnetz_messages_acked_total").await, acked, "nothing is acknowledged while the disk is full");
    assert!(acked < published as f64, "{acked} acknowledged of {published}");
    tokio::time::sleep(FULL_FOR.saturating_sub(full_since.elapsed())).await;
    assert_eq!(gw.metric("messnetz_messages_acked_total").await, acked, "nothing is acknowledged while the disk is full");
    let health = client.get(gw.url("/healthz")).send().await.expect("GET /healthz");
    assert_eq!(health.status(), 200, "the process answers");
    let (status, body) = readyz(&client, &gw).await;
    assert_eq!(status, 503, "still not ready while the disk is full: {body}");

    // Space returns: ingest resumes by itself and stores every published uplink.
    ballast.remove();
    let freed = Instant::now();
    wait_for(
        &format!("all {published} uplinks stored after space returned (log: {})", gw.log.display()),
        Duration::from_secs(120),
        || async { (stored(&client, &gw).await? == published).then_some(()) },
    )
    .await;
    let (status, body) = wait_for("/readyz 200 again", Duration::from_secs(30), || async {
        let (status, body) = readyz(&client, &gw).await;
        (status == 200).then_some((status, body))
    })
    .await;
    eprintln!("{published} uplinks published; all stored {:?} after the ballast was removed", freed.elapsed());
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "ready": true, "checks": { "mqtt": { "ok": true }, "store": { "ok": true } } }));
    assert_eq!(gw.metric("messnetz_store_writable").await, 1.0);
    assert!(gw.metric("messnetz_store_reopens_total").await >= 1.0, "the store was reopened, not the process restarted");
    assert_eq!(gw.metric("messnetz_dead_letters_total").await, 0.0, "no uplink became a dead letter");

    // Exactly once: every quantity of every uplink, read from the stopped gateway's store.
    let mut gw = gw;
    assert!(gw.terminate().success(), "clean shutdown (log: {})", gw.log.display());
    let per_quantity = stored_per_quantity(&gw.data, "demo-lht65");
    if let Some(mismatch) = stored_mismatch(&per_quantity, published) {
        panic!("{mismatch}");
    }
}
