//! Fuzz target: any bytes as a TTN v3 or ChirpStack v4 message must give an uplink or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use messnetz::config::MessageFormat;

fuzz_target!(|data: &[u8]| {
    for format in [MessageFormat::TtnV3, MessageFormat::ChirpstackV4] {
        let _ = messnetz::sources::parse(format, data);
    }
});
