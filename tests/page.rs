//! The public page at `/` in a real headless Chromium, after the README walkthrough's publish:
//! the demo device with 28.29 °C, its chart, the language switch, keyboard access to every
//! control, and axe-core's WCAG 2.1 AA check (tests/page/browser.py drives the browser).
//! Also: the page works without JavaScript and stays small.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for, MANIFEST_DIR};

/// The code block after `<!-- walkthrough:NAME -->` in the README.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(format!("{MANIFEST_DIR}/README.md")).expect("README.md");
    let marker = format!("<!-- walkthrough:{name} -->");
    let after = &readme[readme.find(&marker).unwrap_or_else(|| panic!("README lacks {marker}")) + marker.len()..];
    let body = &after[after.find("```").expect("code block")..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].trim().to_owned()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The embedded default (demo devices, bundled profiles) on free ports, with citizens on and
/// no map tiles (the test runs without internet).
fn start(dir: &std::path::Path) -> (Kill, u16, u16) {
    let (mqtt, http) = (free_port(), free_port());
    let config = dir.join("messnetz.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:{mqtt}\"\n\n[api]\nlisten = \"127.0.0.1:{http}\"\n\n[store]\npath = \"{}\"\n\n[citizens]\nenabled = true\n\n[page]\ntile_url = \"\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .current_dir(MANIFEST_DIR)
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start messnetz");
    (Kill(child), mqtt, http)
}

async fn get(url: &str) -> (reqwest::StatusCode, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status(), r.text().await.expect("body"))
}

fn gzip_len(text: &str) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap().len()
}

#[tokio::test]
async fn the_page_shows_the_walkthrough_device_in_chromium_accessibly_in_both_languages() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, mqtt, http) = start(dir.path());
    let base = format!("http://127.0.0.1:{http}");
    wait_for("the gateway to be ready", Duration::from_secs(30), || async {
        reqwest::get(format!("{base}/readyz")).await.ok()?.status().is_success().then_some(())
    })
    .await;

    // The README's publish, with the embedded listener's port of this test.
    let publish = readme_block("publish").replace("-p 1883", &format!("-p {mqtt}"));
    assert!(publish.contains(&format!("-p {mqtt}")), "the README's publish names no port: {publish}");
    let status = Command::new("sh").arg("-c").arg(&publish).status().expect("run mosquitto_pub");
    assert!(status.success(), "the README's mosquitto_pub failed");
    wait_for("the walkthrough's reading", Duration::from_secs(10), || async {
        let (_, body) = get(&format!("{base}/v1/devices/demo-lht65/latest")).await;
        body.contains("28.29").then_some(())
    })
    .await;

    // Without JavaScript: the server-rendered table already has the value, and the page,
    // script and style together stay far below 300 KB compressed.
    let (status, page) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html lang=\"de\">") && page.contains("28,29 °C"), "server-rendered value missing");
    let (_, english) = get(&format!("{base}/?lang=en")).await;
    assert!(english.contains("<html lang=\"en\">") && english.contains("28.29 °C"), "English page");
    let (_, js) = get(&format!("{base}/page/app.js")).await;
    let (_, css) = get(&format!("{base}/page/style.css")).await;
    let compressed = gzip_len(&page) + gzip_len(&js) + gzip_len(&css);
    println!("page + script + style: {compressed} bytes gzip-compressed");
    assert!(compressed <= 300 * 1024, "{compressed} bytes compressed");

    // The browser part. scripts/test installs chromium, chromedriver, selenium and axe-core.
    let python = std::env::var("MESSNETZ_TEST_PYTHON").unwrap_or_else(|_| format!("{MANIFEST_DIR}/target/test-venv/bin/python"));
    let axe = std::env::var("MESSNETZ_TEST_AXE")
        .unwrap_or_else(|_| format!("{MANIFEST_DIR}/target/axe/node_modules/axe-core/axe.min.js"));
    for (what, path) in [("python", &python), ("axe-core", &axe), ("chromium", &"/usr/bin/chromium".to_owned())] {
        assert!(std::path::Path::new(path).exists(), "{what} missing at {path}: run the tests through scripts/test");
    }
    let shots = PathBuf::from(format!("{MANIFEST_DIR}/target/page-test"));
    std::fs::create_dir_all(&shots).unwrap();
    let script = format!("{MANIFEST_DIR}/tests/page/browser.py");
    let mut browser = Command::new(&python)
        .args([&script, &base, &axe, &shots.display().to_string()])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the browser test");
    // Every wait has a timeout: the browser part gets two minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = browser.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = browser.kill();
            let _ = browser.wait();
            panic!("the browser test did not finish in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "the page failed in Chromium (see above); screenshots in {}", shots.display());
    assert!(shots.join("page-de.png").exists() && shots.join("page-en.png").exists());
}
