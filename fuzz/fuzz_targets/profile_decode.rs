//! Fuzz target: any payload on any fPort through every bundled profile (fixed, tlv, flags, lpp
//! and json layouts), and any text as a formula, gives readings or an error: never a panic,
//! never a loop, never a non-finite reading.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use messnetz::profiles::formula::Formula;
use messnetz::profiles::ProfileSet;

fn profiles() -> &'static ProfileSet {
    static SET: OnceLock<ProfileSet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensor-profiles");
        ProfileSet::load_dir(&dir).unwrap_or_else(|e| panic!("bundled profiles must load: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&port, payload)) = data.split_first() else { return };
    let json: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    for p in profiles().iter() {
        for result in [p.decode_bytes(Some(port), payload), p.decode_bytes(None, payload)] {
            if let Ok(d) = result {
                assert!(d.values.iter().all(|v| v.value.is_finite()), "{}: {d:?}", p.id());
            }
        }
        if let Some(v) = &json {
            if let Ok(d) = p.decode_json(v) {
                assert!(d.values.iter().all(|v| v.value.is_finite()), "{}: {d:?}", p.id());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(payload) {
        if let Ok(f) = Formula::parse(text) {
            let _ = f.eval(f64::from(port));
        }
    }
});
