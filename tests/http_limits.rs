//! HTTP limits against the real binary over real sockets: idle and half-sent connections are
//! closed at the header-read timeout, a slowloris is cut there too, a stalled request body at
//! the idle timeout, and `/healthz` keeps answering while a few hundred such connections
//! press on a low connection limit; under a low descriptor limit the embedded broker still
//! takes messages.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
const IDLE_TIMEOUT: Duration = Duration::from_millis(3000);
const TOKEN: &str = "http-limits-token-0123456789abcdefghij";

/// The gateway with an `[api]` section of this test's own, optionally under a descriptor limit.
struct LimitedGateway {
    child: Child,
    http: SocketAddr,
    log: PathBuf,
}

impl LimitedGateway {
    async fn start(dir: &Path, broker: &str, mqtt_port: u16, api: &str, nofile: Option<u64>) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let topics = Topics::new("http-limits");
        let config = dir.join("messnetz.toml");
        let admin = admin_section(100, &[("ops", TOKEN, &["*"])]);
        std::fs::write(
            &config,
            format!(
                "[broker]\n{broker}\n\n[mqtt]\nport = {mqtt_port}\nclient_id = \"{prefix}\"\n\n[[mqtt.subscriptions]]\ntopic = \"{prefix}/v3/+/devices/+/up\"\nformat = \"ttn-v3\"\n\n[store]\npath = \"{data}\"\n\n[api]\nlisten = \"{http}\"\n{api}\n\n[devices]\nfile = \"{MANIFEST_DIR}/demo/devices.toml\"\n\n[profiles]\ndir = \"{profiles}\"\n{admin}",
                prefix = topics.prefix,
                data = dir.join("data").display(),
                profiles = bundled_profiles().display(),
            ),
        )
        .unwrap();
        let log = dir.join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_messnetz"));
        command.arg("--config").arg(&config).env("RUST_LOG", "info,rumqttd=warn").stdout(out.try_clone().unwrap()).stderr(out);
        if let Some(n) = nofile {
            // SAFETY: only setrlimit runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command.spawn().expect("start messnetz");
        let gw = Self { child, http, log };
        wait_for(&format!("/healthz (log: {})", gw.log.display()), Duration::from_secs(30), || healthz(http)).await;
        gw
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for LimitedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /healthz` on a new connection, with a 2 s limit: `Some` if it answered status "ok".
async fn healthz(http: SocketAddr) -> Option<()> {
    let exchange = async {
        let mut s = TcpStream::connect(http).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        (text.starts_with("HTTP/1.1 200") && text.contains("{\"status\":\"ok\"")).then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

/// Wait until the server closes `s` (EOF or reset); the time it took, or `None` after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            // An error answer (408 and the like) before the close is fine.
            Ok(Ok(_)) => {}
        }
    }
}

fn api_section(max_connections: usize) -> String {
    format!(
        "header_read_timeout_ms = {}\nidle_timeout_ms = {}\nmax_connections = {max_connections}\n",
        HEADER_TIMEOUT.as_millis(),
        IDLE_TIMEOUT.as_millis()
    )
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_and_healthz_keeps_answering() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = LimitedGateway::start(dir.path(), "enabled = false", broker.port, &api_section(100), None).await;

    // 300 connections against a limit of 100: half send nothing, half half a request.
    let opened = Instant::now();
    let mut attackers = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(gw.http).await.expect("connect");
        if i % 2 == 1 {
            s.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nX-Half: ").await.expect("half a request");
        }
        attackers.push(s);
        if i % 50 == 49 {
            assert!(healthz(gw.http).await.is_some(), "/healthz did not answer with {} connections open", i + 1);
        }
    }
    assert!(healthz(gw.http).await.is_some(), "/healthz did not answer with 300 connections open");
    let budget = HEADER_TIMEOUT + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    for (i, s) in attackers.iter_mut().enumerate() {
        let left = budget.saturating_sub(opened.elapsed());
        closed_within(s, left).await.unwrap_or_else(|| panic!("connection {i} still open {budget:?} after opening"));
        slowest = slowest.max(opened.elapsed());
    }
    println!("300 idle/half-sent connections all closed {slowest:?} after the first was opened");
    assert!(healthz(gw.http).await.is_some(), "/healthz did not answer after the attack");
    assert!(gw.log_text().contains("HTTP limits"), "{}", gw.log_text());

    // A slowloris: one header byte every 200 ms is never a whole request; cut at the header
    // timeout (not earlier, and not left until the idle timeout).
    let mut slow = TcpStream::connect(gw.http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let start = Instant::now();
    let mut cut = None;
    while start.elapsed() < IDLE_TIMEOUT + Duration::from_secs(2) {
        if slow.write_all(b"X").await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(start.elapsed());
                break;
            }
            _ => {}
        }
    }
    let cut = cut.expect("the slowloris was never cut");
    assert!(cut >= HEADER_TIMEOUT - Duration::from_millis(300) && cut < IDLE_TIMEOUT, "slowloris cut after {cut:?}");

    // A kept-alive connection that asks nothing more is closed at the header timeout.
    let mut kept = TcpStream::connect(gw.http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), kept.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let after = closed_within(&mut kept, HEADER_TIMEOUT + Duration::from_secs(2)).await.expect("kept-alive connection left open");
    assert!(after >= HEADER_TIMEOUT - Duration::from_millis(300), "closed after {after:?}");

    // A request body that stops halfway is closed at the idle timeout.
    let mut stalled = TcpStream::connect(gw.http).await.unwrap();
    stalled
        .write_all(
            format!("PUT /v1/admin/profiles/stalled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n[profile]\n").as_bytes(),
        )
        .await
        .unwrap();
    let after = closed_within(&mut stalled, IDLE_TIMEOUT + Duration::from_secs(3)).await.expect("stalled body left open");
    assert!(after >= IDLE_TIMEOUT - Duration::from_millis(500), "stalled body closed after {after:?}");
    assert!(healthz(gw.http).await.is_some());
}

#[tokio::test]
async fn under_a_low_descriptor_limit_http_stays_within_its_budget_and_the_broker_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let broker = format!("enabled = true\nlisten = \"127.0.0.1:{mqtt_port}\"");
    // The configured limit is far above what 400 descriptors allow: it must be lowered.
    let gw = LimitedGateway::start(dir.path(), &broker, mqtt_port, &api_section(5000), Some(400)).await;
    let log = gw.log_text();
    let chosen = log.lines().find(|l| l.contains("HTTP limits")).unwrap_or_else(|| panic!("no limits logged: {log}"));
    assert!(chosen.contains("max_connections=144") && chosen.contains("fd_limit=400"), "{chosen}");

    // 350 idle connections: without a limit they would take almost every descriptor.
    let mut attackers = Vec::new();
    for _ in 0..350 {
        if let Ok(s) = TcpStream::connect(gw.http).await {
            attackers.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds = gw.open_fds();
    assert!(fds < 400 - 100, "the gateway holds {fds} descriptors of 400");
    assert!(healthz(gw.http).await.is_some(), "/healthz did not answer");
    // The embedded broker still accepts a publisher and acknowledges its message.
    let topics = Topics::new("http-limits");
    let message =
        (topics.ttn("demo-lht65"), ttn_uplink("demo-lht65", "A84041000181C6B4", 1, "cbf60b0d0367", "2026-11-25T10:00:00Z"));
    tokio::time::timeout(Duration::from_secs(20), publish_all(mqtt_port, "http-limits-publisher", vec![message]))
        .await
        .expect("the embedded broker did not acknowledge a message");
    drop(attackers);
}
