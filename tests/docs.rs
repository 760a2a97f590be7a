//! Every shell command in the README and in `docs/` is run, so the documentation cannot drift
//! from the binary.
//!
//! Each fenced `sh` block is preceded by a marker that says how it is checked:
//!
//! - `<!-- run -->`: run here, in a fresh directory with an empty store (the gateway stopped);
//! - `<!-- run: gateway -->`: run here while a gateway runs on that store (embedded listener,
//!   admin token in `$TOKEN`); `127.0.0.1:8080` and `-p 1883` in the block are replaced by
//!   the test's own ports;
//! - `<!-- walkthrough:NAME -->`: run by `tests/walkthrough.rs` exactly as written;
//! - `<!-- skip: WHY -->`: not run, for the reason given (it installs into the system, needs a
//!   container engine, or is the test command itself).
//!
//! A block without a marker fails the test. `messnetz` in a block is this build's binary; the
//! configuration comes from `MESSNETZ_CONFIG` (the repository's demo devices and profiles).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{admin_section, free_port, MANIFEST_DIR};

const TOKEN: &str = "docs-test-token-0123456789abcdefghijk";

#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Run,
    RunWithGateway,
    Walkthrough,
    Skip,
}

#[derive(Debug)]
struct Block {
    place: String,
    marker: Marker,
    text: String,
}

/// The README and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(format!("{MANIFEST_DIR}/README.md"))];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(format!("{MANIFEST_DIR}/docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// The shell blocks of a page with their markers; the places of blocks without one.
fn shell_blocks(path: &Path) -> (Vec<Block>, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read page");
    let name = path.strip_prefix(MANIFEST_DIR).unwrap_or(path).display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (mut blocks, mut unmarked) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let Some(lang) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut end = i + 1;
        while end < lines.len() && !lines[end].trim_start().starts_with("```") {
            end += 1;
        }
        if matches!(lang.trim(), "sh" | "bash" | "shell" | "console") {
            let place = format!("{name}:{}", i + 1);
            let before = lines[..i].iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("");
            let marker = match before {
                "<!-- run -->" => Some(Marker::Run),
                "<!-- run: gateway -->" => Some(Marker::RunWithGateway),
                m if m.starts_with("<!-- walkthrough:") => Some(Marker::Walkthrough),
                m if m.starts_with("<!-- skip:") && m.len() > "<!-- skip: -->".len() + 3 => Some(Marker::Skip),
                _ => None,
            };
            let body: Vec<&str> = lines[i + 1..end].iter().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect();
            match marker {
                Some(marker) => blocks.push(Block { place, marker, text: body.join("\n") }),
                None => unmarked.push(place),
            }
        }
        i = end + 1;
    }
    (blocks, unmarked)
}

/// A directory with a `messnetz` of this build first on `PATH`, a configuration, and an empty store.
struct Sandbox {
    dir: tempfile::TempDir,
    path: String,
    api: u16,
    mqtt: u16,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_messnetz"), bin.join("messnetz")).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let (api, mqtt) = (free_port(), free_port());
        let config = format!(
            "[broker]\nlisten = \"127.0.0.1:{mqtt}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[store]\npath = \"{}\"\n[devices]\nfile = \"{MANIFEST_DIR}/demo/devices.toml\"\n[profiles]\ndir = \"{MANIFEST_DIR}/sensor-profiles\"\n{}",
            dir.path().join("data").display(),
            admin_section(100, &[("docs", TOKEN, &["*"])])
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let sandbox = Self { dir, path, api, mqtt };
        // An empty store, as a stopped gateway leaves it.
        let out = sandbox.command("messnetz dead-letters list").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        sandbox
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-e").arg("-c").arg(script).current_dir(self.dir.path()).env("PATH", &self.path);
        c.env("MESSNETZ_CONFIG", self.dir.path().join("config.toml"));
        // For the blocks that write a configuration of their own and pass it with --config.
        c.env("MESSNETZ__DEVICES__FILE", format!("{MANIFEST_DIR}/demo/devices.toml"));
        c.env("MESSNETZ__PROFILES__DIR", format!("{MANIFEST_DIR}/sensor-profiles"));
        c.env("MESSNETZ__STORE__PATH", self.dir.path().join("data"));
        c.env("MESSNETZ__API__LISTEN", format!("127.0.0.1:{}", self.api));
        c.env("MESSNETZ__BROKER__LISTEN", format!("127.0.0.1:{}", self.mqtt));
        c.env("TOKEN", TOKEN);
        c
    }

    /// Run a documented block; its output, or a panic naming the block.
    fn run(&self, block: &Block) -> String {
        let script = block
            .text
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.api))
            .replace("-p 1883", &format!("-p {}", self.mqtt));
        let out = self.command(&script).stdin(Stdio::null()).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            block.place,
            out.status
        );
        stdout.into_owned()
    }

    /// Start the gateway on this sandbox's configuration; ready when `/readyz` says so.
    fn start_gateway(&self) -> Gateway {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_messnetz"))
            .env("MESSNETZ_CONFIG", self.dir.path().join("config.toml"))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let gateway = Gateway(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .command(&format!("curl -sf http://127.0.0.1:{}/readyz", self.api))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "the docs' gateway did not come up in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_shell_block_of_the_docs_is_marked_and_the_runnable_ones_run() {
    let (mut blocks, mut unmarked) = (Vec::new(), Vec::new());
    for page in pages() {
        let (b, u) = shell_blocks(&page);
        blocks.extend(b);
        unmarked.extend(u);
    }
    assert!(
        unmarked.is_empty(),
        "shell blocks without a marker (<!-- run -->, <!-- run: gateway -->, <!-- walkthrough:NAME --> or <!-- skip: why -->): {unmarked:?}"
    );
    let count = |m: Marker| blocks.iter().filter(|b| b.marker == m).count();
    assert!(count(Marker::Run) >= 3 && count(Marker::RunWithGateway) >= 3 && count(Marker::Walkthrough) >= 2, "{blocks:#?}");

    // Offline first: a stopped gateway's store.
    let offline = Sandbox::new();
    for block in blocks.iter().filter(|b| b.marker == Marker::Run) {
        offline.run(block);
    }
    // Then against a running gateway, with a reading in it.
    let online = Sandbox::new();
    let _gateway = online.start_gateway();
    let walkthrough = blocks
        .iter()
        .find(|b| b.marker == Marker::Walkthrough && b.text.contains("mosquitto_pub"))
        .expect("the walkthrough's publish");
    online.run(walkthrough);
    for block in blocks.iter().filter(|b| b.marker == Marker::RunWithGateway) {
        online.run(block);
    }
}

#[test]
fn blocks_without_a_marker_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "Text\n\n<!-- run -->\n```sh\nmessnetz check\n```\n\n```sh\nrm -rf /\n```\n\n- item\n\n  <!-- skip: needs docker -->\n  ```sh\n  docker build .\n  ```\n\n<!-- skip: -->\n```sh\ntrue\n```\n",
    )
    .unwrap();
    let (blocks, unmarked) = shell_blocks(&page);
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(blocks[1].text, "docker build .");
    assert_eq!(unmarked.len(), 2, "an unmarked block and one skipped without a reason: {unmarked:?}");
}
