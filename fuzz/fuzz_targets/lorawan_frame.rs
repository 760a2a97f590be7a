//! Fuzz target: any bytes as a gateway-bridge message or as a raw PHYPayload must give a frame or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use messnetz::sources::lorawan::{self, Frame, FrameCounter};
use messnetz::sources::lorawan_keys::{DeviceSession, SessionKey, SessionKeys};

fuzz_target!(|data: &[u8]| {
    let session = DeviceSession {
        device: "demo-lht65".into(),
        nwk_s_key: SessionKey::from_bytes([0x2B; 16]),
        app_s_key: SessionKey::from_bytes([0x01; 16]),
    };
    // The DevAddr of the frame, whatever it is, has keys: so the MIC and counter paths run too.
    let dev_addr = data.get(1..5).map(|a| u32::from_le_bytes([a[0], a[1], a[2], a[3]])).unwrap_or(0);
    let mut keys = SessionKeys::default();
    keys.insert(dev_addr, session.clone());
    keys.insert(0x260B_1234, session.clone());
    let mut state = FrameCounter::default();
    state.accept(65_530, [0; 4], 0);
    let _ = lorawan::process(data, &keys, 0, |_| Ok(None));
    let _ = lorawan::process(data, &keys, 0, |_| Ok(Some(state.clone())));
    if let Ok(Frame::Data(frame)) = lorawan::classify(data.to_vec()) {
        let _ = lorawan::open(frame.clone(), &session, &mut None, 0);
        let _ = lorawan::open(frame, &session, &mut Some(state), i64::MAX);
    }
});
