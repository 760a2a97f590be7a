//! The README's walkthrough, run exactly as written against the embedded default (no config, embedded broker on 1883, API on 8080).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::MANIFEST_DIR;

/// The code block that follows `<!-- walkthrough:NAME -->` in the README.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- walkthrough:{name} -->");
    let after = &readme[readme.find(&marker).unwrap_or_else(|| panic!("README lacks {marker}")) + marker.len()..];
    let start = after.find("```").expect("code block");
    let body = &after[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_owned()
}

fn sh(command: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(command).stderr(Stdio::inherit()).output().expect("run sh");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_readme_walkthrough_answers_as_documented() {
    let readme = std::fs::read_to_string(format!("{MANIFEST_DIR}/README.md")).expect("README.md");
    let publish = block(&readme, "publish");
    let query = block(&readme, "query");
    let answer: serde_json::Value = serde_json::from_str(&block(&readme, "answer")).expect("the documented answer is JSON");

    for port in [1883, 8080] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use; the walkthrough needs the embedded default's ports"
        );
    }
    // The documented first command, minus cargo: the binary with no configuration, run from
    // the repository root. Only the store goes to a temporary directory.
    let data = tempfile::tempdir().unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_messnetz"))
        .current_dir(MANIFEST_DIR)
        .env("MESSNETZ__STORE__PATH", data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start messnetz");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut gateway);

    // Ready when /readyz says so (the embedded listener bound, the store writable).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if sh("curl -sf http://127.0.0.1:8080/readyz").0 {
            break;
        }
        assert!(Instant::now() < deadline, "the embedded default did not come up in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (ok, _) = sh(publish.trim());
    assert!(ok, "the README's mosquitto_pub failed");

    // "seconds later": poll the documented query until it gives the documented answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = sh(query.trim());
        assert!(ok, "the README's curl failed");
        let got: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        if got == answer {
            break;
        }
        assert!(Instant::now() < deadline, "the walkthrough answered\n{out}\ninstead of\n{answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
