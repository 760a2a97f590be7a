//! Benchmark: raw LoRaWAN frames per second through bridge JSON parsing, MIC check, frame-counter check, decryption and profile decode.
//!
//! Run: `cargo bench --bench lorawan` (add `-- --quick` for a short run). Prints a Markdown
//! table. Single thread; the frame counter state is kept in memory (as within one ingest
//! batch), so the store is not part of the measurement.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use messnetz::profiles::ProfileSet;
use messnetz::sources::lorawan::{self, FrameCounter, Opened, Outcome};
use messnetz::sources::lorawan_keys::{DeviceSession, SessionKey, SessionKeys};

const DEV_ADDR: u32 = 0x260B_1234;
/// Dragino's published LHT65 example payload (11 bytes).
const LHT65: [u8; 11] = [0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF];

fn session() -> DeviceSession {
    DeviceSession {
        device: "demo-lht65".into(),
        nwk_s_key: SessionKey::from_bytes([0x2B; 16]),
        app_s_key: SessionKey::from_bytes([0x01; 16]),
    }
}

/// Best of `rounds` timings of `f` over `n` items, in items per second.
fn rate(n: usize, rounds: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut check = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        check = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (n as f64 / best, check)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 20_000 } else { 200_000 };
    let rounds = if quick { 2 } else { 5 };
    let s = session();
    let mut keys = SessionKeys::default();
    keys.insert(DEV_ADDR, s.clone());
    let profiles =
        ProfileSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor-profiles")).expect("bundled profiles");
    let profile = profiles.get("dragino-lht65").expect("dragino-lht65 profile");

    let phys: Vec<Vec<u8>> = (1..=n as u32).map(|f| lorawan::build_frame(DEV_ADDR, f, 2, &LHT65, false, &s)).collect();
    let events: Vec<Vec<u8>> = phys.iter().map(|p| lorawan::bridge_json(p, "0016c001f153a14c", "2025-01-01T00:00:00Z")).collect();

    println!("| stage (single thread, {n} frames, best of {rounds}) | frames/s | µs/frame |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, (per_s, check): (f64, usize)| {
        assert_eq!(check, n, "{name}: not every frame went through");
        println!("| {name} | {per_s:.0} | {:.2} |", 1e6 / per_s);
    };

    // MIC check, counter check and decryption of the raw PHYPayload.
    row(
        "classify + MIC + counter + decrypt",
        rate(n, rounds, || {
            let mut counter: Option<FrameCounter> = None;
            let mut ok = 0;
            for p in &phys {
                if let Ok(lorawan::Frame::Data(frame)) = lorawan::classify(p.clone()) {
                    if let Ok(Opened::Data { payload, .. }) = lorawan::open(frame, &s, &mut counter, 0) {
                        black_box(payload);
                        ok += 1;
                    }
                }
            }
            ok
        }),
    );

    // The same plus the bridge JSON and base64 around it, as ingest sees a message.
    row(
        "bridge JSON + MIC + counter + decrypt",
        rate(n, rounds, || {
            let mut counter: Option<FrameCounter> = None;
            let mut ok = 0;
            for e in &events {
                if let Ok(Outcome::Frame { counter: c, opened: Opened::Data { payload, .. }, .. }) =
                    lorawan::process(e, &keys, 0, |_| Ok(counter.take()))
                {
                    counter = Some(c);
                    black_box(payload);
                    ok += 1;
                }
            }
            ok
        }),
    );

    // Everything up to readings: plus the LHT65 profile's decode.
    row(
        "bridge JSON + MIC + counter + decrypt + LHT65 decode",
        rate(n, rounds, || {
            let mut counter: Option<FrameCounter> = None;
            let mut ok = 0;
            for e in &events {
                if let Ok(Outcome::Frame { counter: c, opened: Opened::Data { f_port, payload, .. }, .. }) =
                    lorawan::process(e, &keys, 0, |_| Ok(counter.take()))
                {
                    counter = Some(c);
                    if profile.decode_bytes(Some(f_port), &payload).is_ok() {
                        ok += 1;
                    }
                }
            }
            ok
        }),
    );
}
