//! Fuzz target: any text as a profile file is either a profile or a list of errors with
//! positions, never a panic (operators write these files by hand).
#![no_main]

use libfuzzer_sys::fuzz_target;
use messnetz::profiles::Profile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // JavaScript layouts would run scripts from the input; the decoder tests cover those.
    if text.contains("javascript") {
        return;
    }
    if let Ok(p) = Profile::from_toml(std::path::Path::new("fuzz/acme-t1.toml"), text) {
        let _ = p.check_examples();
        let _ = p.decode_bytes(Some(1), &[0; 16]);
    }
});
