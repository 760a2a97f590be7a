//! The fuzz corpora of hostile inputs (fuzz/corpus/), run through the network-facing parsers and decoders on every test run.

use std::path::Path;

use messnetz::config::MessageFormat;
use messnetz::profiles::ProfileSet;
use messnetz::sources;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).expect("read corpus file")))
        .collect()
}

#[test]
fn hostile_messages_give_errors_not_panics() {
    let files = corpus("uplink");
    assert!(files.len() >= 20, "corpus went missing");
    let profiles =
        ProfileSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor-profiles")).expect("bundled profiles");
    let json_profile = profiles.get("generic-json-weather").expect("generic-json-weather");
    for (name, data) in &files {
        let ttn = sources::parse(MessageFormat::TtnV3, data);
        let cs = sources::parse(MessageFormat::ChirpstackV4, data);
        match name.as_str() {
            "ttn-good" | "ttn-payload-64kb" => assert!(ttn.is_ok(), "{name}: {:?}", ttn.err()),
            // Any string is a valid network-server id; it just matches no device (a dead letter).
            "ttn-device-id-escapes" => assert_eq!(ttn.unwrap().ns_device_id.as_deref(), Some("\0\n\"../../etc/passwd")),
            "cs-good" | "cs-eui-uppercase" => assert!(cs.is_ok(), "{name}: {:?}", cs.err()),
            // A decoded object no double holds: the message's bytes are fine, so it parses; a
            // profile that reads the object refuses it with the reason (a dead letter).
            "ttn-decoded-1e999" | "cs-object-1e999" | "ttn-decoded-deep" => {
                let up = if name.starts_with("ttn-") { ttn } else { cs }.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(name.ends_with("deep") || !up.payload.is_empty(), "{name}: the bytes are kept");
                let json = json_profile.decode_uplink(up.f_port, &[], up.decoded.as_deref());
                assert!(json.unwrap_err().to_string().contains("decoded object"), "{name}");
            }
            _ if name.starts_with("ttn-") => assert!(ttn.is_err(), "{name} was accepted as TTN: {ttn:?}"),
            _ if name.starts_with("cs-") => assert!(cs.is_err(), "{name} was accepted as ChirpStack: {cs:?}"),
            _ => assert!(ttn.is_err() && cs.is_err(), "{name} was accepted"),
        }
    }
}

#[test]
fn hostile_payloads_through_every_profile_give_errors_not_panics() {
    let profiles =
        ProfileSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor-profiles")).expect("bundled profiles");
    let lht65 = profiles.get("dragino-lht65").expect("lht65");
    for (name, data) in corpus("profile_decode") {
        let Some((&port, payload)) = data.split_first() else { continue };
        for id in profiles.ids() {
            let p = profiles.get(id).unwrap();
            let _ = p.decode_bytes(Some(port), payload);
            let _ = p.decode_bytes(None, payload);
        }
        let r = lht65.decode_bytes(Some(port), payload);
        match name.as_str() {
            "lht65-example" | "lht65-all-ff" | "lht65-all-00" | "lht65-min-negative" => assert!(r.is_ok(), "{name}: {r:?}"),
            "lht65-truncated" | "port-0" | "port-255" => assert!(r.is_err(), "{name}: {r:?}"),
            _ => {}
        }
    }
}
