//! Fuzz target: any payload on any fPort through every bundled profile gives readings or an error, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
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
    for id in profiles().ids() {
        if let Some(p) = profiles().get(id) {
            let _ = p.decode_bytes(Some(port), payload);
            let _ = p.decode_bytes(None, payload);
        }
    }
});
