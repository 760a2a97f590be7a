//! Text from the network reaches the gateway's log escaped: a topic with a newline and a fake
//! log line, and a codec error with NUL and ANSI escape bytes, forge no line and put no raw
//! control character into the log.

mod common;

use std::time::Duration;

use common::*;

const FORGED: &str = "2026-01-01T00:00:00Z  INFO forged";

/// A JavaScript codec whose error message carries NUL, an ANSI colour and a forged log line.
const EVIL_CODEC: &str = r#"
id = "evil-codec"
vendor = "Test"
model = "Evil"
reference = "a codec whose errors carry control characters"

[[layouts]]
kind = "javascript"
fports = [1, 2]
script = '''
function decodeUplink(input) {
  return { errors: ["bad\u0000\u001b[31m\n2026-01-01T00:00:00Z  INFO forged by the codec\u001b[0m"] };
}
'''

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/t"

[[examples]]
fport = 1
payload_hex = "00"
error = "forged by the codec"
"#;

/// The gateway's log, after checking it holds no forged line and no raw ESC or NUL byte.
fn checked_log(gw: &Gateway) -> String {
    let log = std::fs::read(&gw.log).unwrap();
    let text = String::from_utf8_lossy(&log).into_owned();
    for line in text.lines() {
        assert!(!line.starts_with(FORGED), "a forged line: {line:?}");
    }
    assert!(!log.contains(&0x1b), "a raw ESC byte in the log");
    assert!(!log.contains(&0), "a raw NUL byte in the log");
    text
}

async fn wait_dead_letters(gw: &Gateway, n: f64) {
    wait_for(&format!("{n} dead letter(s)"), Duration::from_secs(20), || async move {
        (gw.metric("messnetz_dead_letters_total").await >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn device_ids_and_codec_errors_with_control_characters_are_logged_escaped() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("log-escaping");
    let (devices, profiles) = own_devices_and_profiles(dir.path());
    std::fs::write(profiles.join("evil-codec.toml"), EVIL_CODEC).unwrap();
    let mut file = std::fs::read_to_string(&devices).unwrap();
    file.push_str("\n[[device]]\nid = \"evil-js\"\nname = \"Evil\"\nprofile = \"evil-codec\"\ndev_eui = \"A8404100000000EE\"\nlat = 48.1\nlon = 11.6\ndistrict = \"Altstadt\"\nowner = \"Umweltamt\"\nlicence = \"dl-by-de/2.0\"\nvisibility = \"internal\"\n");
    std::fs::write(&devices, file).unwrap();
    let gw = Gateway::start_with_profiles(broker.port, dir.path(), &topics, "", &devices, &profiles).await;

    // An unknown device whose network id carries a forged line (the dead letter's reason names
    // it), and a known device whose codec fails with control characters.
    let forged_id = format!("x\n{FORGED} by the device id\x1b[31m\0");
    let unknown = ttn_uplink("placeholder", "A8404100000000EF", 1, "00", "2026-11-25T10:00:00Z");
    let unknown = String::from_utf8(unknown)
        .unwrap()
        .replace("\"placeholder\"", &serde_json::to_string(&forged_id).unwrap())
        .replace("A8404100000000EF", "");
    let messages = vec![
        (topics.ttn("x"), unknown.into_bytes()),
        (topics.ttn("evil-js"), ttn_uplink("evil-js", "A8404100000000EE", 1, "00", "2026-11-25T10:00:00Z")),
    ];
    publish_all(broker.port, &format!("{}-pub", topics.prefix), messages).await;
    wait_dead_letters(&gw, 2.0).await;

    let text = checked_log(&gw);
    // Both were logged (escaped), so the checks above looked at real log lines.
    assert!(text.contains(&format!("\\n{FORGED} by the device id")), "{text}");
    assert!(text.contains(&format!("\\n{FORGED} by the codec")), "{text}");
}

#[tokio::test]
async fn a_topic_with_a_newline_and_escape_bytes_is_logged_escaped() {
    // Mosquitto refuses control characters in topics; the embedded broker passes them on.
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("log-escaping-topic");
    let (gw, port) = Gateway::start_embedded(dir.path(), &topics).await;
    // The `+` of the subscription `PREFIX/v3/+/devices/+/up` takes the hostile segment.
    let evil_topic = format!("{}/v3/app/devices/x\n{FORGED} by the topic\x1b[31m/up", topics.prefix);
    publish_all(port, &format!("{}-pub", topics.prefix), vec![(evil_topic, b"\x00\x1b[31mnot json".to_vec())]).await;
    wait_dead_letters(&gw, 1.0).await;
    let text = checked_log(&gw);
    assert!(text.contains(&format!("x\\n{FORGED} by the topic\\u{{1b}}[31m/up")), "{text}");
}
