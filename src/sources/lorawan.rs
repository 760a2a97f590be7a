//! Raw LoRaWAN frames as a gateway bridge publishes them (ChirpStack Gateway Bridge JSON with a base64 `phyPayload`).
//!
//! Without a network server in the path the gateway does the network server's part for
//! devices activated by personalisation (ABP, LoRaWAN 1.0.x): it authenticates each data
//! uplink with the device's NwkSKey (the MIC), rebuilds the 32-bit frame counter from the
//! 16 bits on air and the last accepted value, refuses replays, recognises copies of one
//! frame heard by several gateways, and decrypts FRMPayload with the AppSKey.
//!
//! Nothing in a frame is trusted before its MIC has been checked: the DevAddr only selects
//! which keys to check it with. The counter state ([`FrameCounter`]) is defined here and
//! kept in the store; this module only computes the next state, so the caller can keep it
//! in the same transaction as the readings.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use lorawan::parser::{DataHeader, DataPayload, EncryptedDataPayload, MType, PhyPayload};
use serde::Deserialize;

use super::lorawan_keys::{DeviceSession, SessionKeys};
use super::parse_time;

/// A LoRa radio frame carries at most 255 bytes; anything longer did not come off the air.
pub const MAX_FRAME_BYTES: usize = 255;

/// The smallest data frame: MHDR, DevAddr, FCtrl, FCnt, MIC.
const MIN_DATA_FRAME_BYTES: usize = 12;

/// How many accepted frames are remembered for duplicate detection. Copies of one frame
/// through several gateways arrive within moments, but a slow gateway's copy can come after
/// the device's next frame; a short history keeps that copy a duplicate instead of a replay.
pub const RECENT_FRAMES: usize = 8;

/// How long after a frame was accepted an exact copy of it counts as a duplicate (a slow
/// gateway, a broker redelivering after a reconnect). Later, the same copy is a replay.
pub const DUPLICATE_WINDOW_MS: i64 = 10 * 60 * 1000;

/// What is known about one device's uplink frame counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameCounter {
    /// Highest full (32-bit) FCnt accepted so far.
    pub last: u32,
    /// The most recently accepted frames, oldest first.
    pub recent: Vec<RecentFrame>,
}

/// One accepted frame, remembered to recognise its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentFrame {
    /// Full (32-bit) FCnt.
    pub f_cnt: u32,
    /// Its MIC: a copy of the frame carries the same one.
    pub mic: [u8; 4],
    /// When it was accepted (gateway reception time, ms since the epoch).
    pub at_ms: i64,
}

impl FrameCounter {
    /// Record an accepted frame.
    pub fn accept(&mut self, f_cnt: u32, mic: [u8; 4], at_ms: i64) {
        self.last = self.last.max(f_cnt);
        self.recent.push(RecentFrame { f_cnt, mic, at_ms });
        if self.recent.len() > RECENT_FRAMES {
            let extra = self.recent.len() - RECENT_FRAMES;
            self.recent.drain(..extra);
        }
    }
}

/// Why a raw frame was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum LorawanError {
    #[error("not valid gateway-bridge JSON: {0}")]
    Json(serde_json::Error),
    #[error("field {field}: {why}")]
    Field { field: &'static str, why: String },
    #[error("the gateway reported a CRC error for this frame")]
    BadCrc,
    #[error("frame of {len} bytes is longer than a LoRa frame can be ({MAX_FRAME_BYTES} bytes)")]
    TooLong { len: usize },
    #[error("frame of {len} bytes is too short for a LoRaWAN data frame ({MIN_DATA_FRAME_BYTES} bytes at least)")]
    TooShort { len: usize },
    #[error("not a LoRaWAN 1.0 frame: {0}")]
    Malformed(&'static str),
    #[error("no session keys for DevAddr {0:08X}")]
    UnknownDevAddr(u32),
    #[error("MIC check failed for DevAddr {dev_addr:08X} (FCnt {f_cnt16} on air): wrong session keys or an altered frame")]
    Mic { dev_addr: u32, f_cnt16: u16 },
    #[error("replayed frame: DevAddr {dev_addr:08X} FCnt {f_cnt} is not above the last accepted FCnt {last}")]
    Replay { dev_addr: u32, f_cnt: u32, last: u32 },
    #[error("DevAddr {dev_addr:08X}: the 32-bit frame counter is exhausted; the device needs a new session")]
    CounterExhausted { dev_addr: u32 },
    #[error("frame counter of DevAddr {dev_addr:08X} unreadable: {why}")]
    Counter { dev_addr: u32, why: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeUplink<'a> {
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    phy_payload: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rx_info: Option<RxInfo<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RxInfo<'a> {
    #[serde(borrow, default, alias = "gatewayID", deserialize_with = "super::borrowed_str")]
    gateway_id: Option<Cow<'a, str>>,
    /// Gateway time (GPS), when the gateway has one; `time` in older bridge versions.
    #[serde(borrow, default, alias = "time", deserialize_with = "super::borrowed_str")]
    gw_time: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    ns_time: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    crc_status: Option<Cow<'a, str>>,
}

/// A frame as the bridge delivered it, not yet looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeFrame {
    /// The PHYPayload bytes.
    pub phy: Vec<u8>,
    /// The gateway that heard it.
    pub gateway_id: Option<String>,
    /// Reception time, when the gateway or bridge gave one.
    pub time: Option<DateTime<Utc>>,
}

/// Read a gateway bridge `up` event.
pub fn parse_bridge(payload: &[u8]) -> Result<BridgeFrame, LorawanError> {
    let msg: BridgeUplink = super::json(payload).map_err(LorawanError::Json)?;
    let text = msg.phy_payload.as_deref().unwrap_or("");
    // Base64 of 255 bytes is 340 characters: refuse longer text before decoding it.
    if text.len() > 4 * MAX_FRAME_BYTES.div_ceil(3) {
        return Err(LorawanError::TooLong { len: text.len() / 4 * 3 });
    }
    let phy =
        super::decode_base64("phyPayload", text).map_err(|e| LorawanError::Field { field: "phyPayload", why: e.to_string() })?;
    let (mut gateway_id, mut time) = (None, None);
    if let Some(rx) = msg.rx_info {
        if rx.crc_status.as_deref() == Some("BAD_CRC") {
            return Err(LorawanError::BadCrc);
        }
        gateway_id = rx.gateway_id.map(Cow::into_owned);
        time = match (rx.gw_time.as_deref(), rx.ns_time.as_deref()) {
            (Some(t), _) => Some(
                parse_time("rxInfo.gwTime", t).map_err(|e| LorawanError::Field { field: "rxInfo.gwTime", why: e.to_string() })?,
            ),
            (None, Some(t)) => Some(
                parse_time("rxInfo.nsTime", t).map_err(|e| LorawanError::Field { field: "rxInfo.nsTime", why: e.to_string() })?,
            ),
            (None, None) => None,
        };
    }
    Ok(BridgeFrame { phy, gateway_id, time })
}

/// The header of a data uplink, read but not yet authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFrame {
    /// DevAddr as its hex spelling reads (the air carries it least significant byte first).
    pub dev_addr: u32,
    /// The 16 low bits of the frame counter, as sent.
    pub f_cnt16: u16,
    /// Confirmed data up (the device wants an acknowledgement, which only a network server sends).
    pub confirmed: bool,
    /// The frame's MIC.
    pub mic: [u8; 4],
    phy: Vec<u8>,
}

/// What a frame is, by its header.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Not a data uplink: join requests (an ABP-only gateway has no use for them) and
    /// downlinks another gateway's bridge echoed. Counted and acknowledged, never stored.
    Ignored(&'static str),
    /// An (unconfirmed or confirmed) data uplink.
    Data(DataFrame),
}

/// Look at a PHYPayload's header. Length is checked first, so the parser never sees
/// a frame that could not have come off the air.
pub fn classify(phy: Vec<u8>) -> Result<Frame, LorawanError> {
    if phy.len() > MAX_FRAME_BYTES {
        return Err(LorawanError::TooLong { len: phy.len() });
    }
    if phy.len() < MIN_DATA_FRAME_BYTES {
        // Too short for data; a join request is 23 bytes, so it is not one either.
        return Err(LorawanError::TooShort { len: phy.len() });
    }
    let parsed = lorawan::parser::parse(phy.clone()).map_err(|e| {
        LorawanError::Malformed(match e {
            lorawan::parser::Error::UnsupportedMajorVersion => "unsupported major version",
            lorawan::parser::Error::InvalidMessageType => "unsupported message type (proprietary or reserved)",
            _ => "its header does not fit its length",
        })
    })?;
    let data = match parsed {
        PhyPayload::JoinRequest(_) => return Ok(Frame::Ignored("join request")),
        PhyPayload::JoinAccept(_) => return Ok(Frame::Ignored("join accept (downlink)")),
        PhyPayload::Data(DataPayload::Encrypted(d)) => d,
        PhyPayload::Data(DataPayload::Decrypted(_)) => return Err(LorawanError::Malformed("unexpected decrypted frame")),
    };
    if !data.is_uplink() {
        return Ok(Frame::Ignored("data downlink"));
    }
    let fhdr = data.fhdr();
    let a = fhdr.dev_addr();
    let a = a.as_ref();
    let dev_addr = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
    let f_cnt16 = fhdr.fcnt();
    let confirmed = lorawan::parser::MHDR::new(phy[0]).mtype() == MType::ConfirmedDataUp;
    let n = phy.len();
    let mic = [phy[n - 4], phy[n - 3], phy[n - 2], phy[n - 1]];
    Ok(Frame::Data(DataFrame { dev_addr, f_cnt16, confirmed, mic, phy }))
}

/// An authenticated data uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// New application data: decrypted FRMPayload of port 1-255.
    Data { f_cnt: u32, f_port: u8, payload: Vec<u8> },
    /// New, but only MAC commands for the network server (port 0 or no port).
    MacOnly { f_cnt: u32 },
    /// A copy of a frame already accepted (heard by another gateway, or redelivered).
    Duplicate { f_cnt: u32 },
}

/// Authenticate a data uplink received at `now_ms`, check its counter against `counter`
/// (the device's state, `None` before its first frame) and decrypt it. On `Data` and
/// `MacOnly`, `counter` has moved on and must be stored with whatever the frame produced.
pub fn open(
    frame: DataFrame,
    session: &DeviceSession,
    counter: &mut Option<FrameCounter>,
    now_ms: i64,
) -> Result<Opened, LorawanError> {
    let DataFrame { dev_addr, f_cnt16, mic, phy, .. } = frame;
    let payload = EncryptedDataPayload::new(phy).map_err(|_| LorawanError::Malformed("its header does not fit its length"))?;
    let nwk = session.nwk_s_key.aes();
    let low = u32::from(f_cnt16);
    let f_cnt = match counter {
        None => low,
        Some(state) => {
            // A copy of a recent frame: same counter, same MIC (and the MIC is genuine),
            // soon after the original. Anything else at an accepted counter is a replay.
            for r in state.recent.iter().rev() {
                if r.f_cnt & 0xFFFF == low && payload.validate_mic(&nwk, r.f_cnt) {
                    return if r.mic == mic && now_ms.saturating_sub(r.at_ms) <= DUPLICATE_WINDOW_MS {
                        Ok(Opened::Duplicate { f_cnt: r.f_cnt })
                    } else {
                        Err(LorawanError::Replay { dev_addr, f_cnt: r.f_cnt, last: state.last })
                    };
                }
            }
            // The smallest counter above the last accepted one with these 16 low bits:
            // the same 64k window, or the next one after a rollover of the 16-bit field.
            let same_window = (state.last & 0xFFFF_0000) | low;
            if same_window > state.last {
                same_window
            } else {
                match same_window.checked_add(0x1_0000) {
                    Some(next) => next,
                    None => return Err(LorawanError::CounterExhausted { dev_addr }),
                }
            }
        }
    };
    if !payload.validate_mic(&nwk, f_cnt) {
        // Genuine, but at or below the last accepted counter: a replay.
        if let Some(state) = counter {
            let below = f_cnt.wrapping_sub(0x1_0000);
            if f_cnt >= 0x1_0000 && below <= state.last && payload.validate_mic(&nwk, below) {
                return Err(LorawanError::Replay { dev_addr, f_cnt: below, last: state.last });
            }
        }
        return Err(LorawanError::Mic { dev_addr, f_cnt16 });
    }
    let f_port = payload.f_port();
    let app = session.app_s_key.aes();
    let decrypted = payload.decrypt(Some(&nwk), Some(&app), f_cnt).map_err(|_| LorawanError::Malformed("cannot decrypt"))?;
    counter.get_or_insert_with(FrameCounter::default).accept(f_cnt, mic, now_ms);
    match (f_port, decrypted.frm_payload()) {
        (Some(port), lorawan::parser::FRMPayload::Data(data)) if port > 0 => {
            Ok(Opened::Data { f_cnt, f_port: port, payload: data.to_vec() })
        }
        _ => Ok(Opened::MacOnly { f_cnt }),
    }
}

/// What became of one bridge message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a data uplink (see [`Frame::Ignored`]).
    Ignored(&'static str),
    /// An authenticated data uplink of `dev_addr`, with the counter state after it.
    Frame { dev_addr: u32, device: String, counter: FrameCounter, opened: Opened, time: Option<DateTime<Utc>> },
}

/// The whole path of one bridge message received at `now_ms`: parse, classify, find the
/// keys, fetch the counter state with `counter_of`, authenticate, check the counter, decrypt.
pub fn process(
    payload: &[u8],
    keys: &SessionKeys,
    now_ms: i64,
    counter_of: impl FnOnce(u32) -> Result<Option<FrameCounter>, String>,
) -> Result<Outcome, LorawanError> {
    let bridge = parse_bridge(payload)?;
    let frame = match classify(bridge.phy)? {
        Frame::Ignored(kind) => return Ok(Outcome::Ignored(kind)),
        Frame::Data(frame) => frame,
    };
    let dev_addr = frame.dev_addr;
    let session = keys.get(dev_addr).ok_or(LorawanError::UnknownDevAddr(dev_addr))?;
    let mut counter = counter_of(dev_addr).map_err(|why| LorawanError::Counter { dev_addr, why })?;
    let opened = open(frame, session, &mut counter, now_ms)?;
    Ok(Outcome::Frame {
        dev_addr,
        device: session.device.clone(),
        counter: counter.unwrap_or_default(),
        opened,
        time: bridge.time,
    })
}

/// Build an uplink frame (tests, benchmarks, fuzz seeds): the inverse of [`open`].
pub fn build_frame(dev_addr: u32, f_cnt: u32, f_port: u8, payload: &[u8], confirmed: bool, session: &DeviceSession) -> Vec<u8> {
    let mut creator = lorawan::creator::DataPayloadCreator::new();
    let fctrl = lorawan::parser::FCtrl::new(0x00, true);
    creator
        .set_confirmed(confirmed)
        .set_uplink(true)
        .set_f_port(f_port)
        .set_dev_addr(&dev_addr.to_le_bytes())
        .set_fctrl(&fctrl)
        .set_fcnt(f_cnt);
    let nwk = lorawan::keys::NewSKey::from(session.nwk_s_key.aes().0);
    let app = lorawan::keys::AppSKey::from(session.app_s_key.aes().0);
    match creator.build(payload, &[], &nwk, &app) {
        Ok(bytes) => bytes.to_vec(),
        // Only an FRMPayload too long for one frame fails; such a frame cannot exist.
        Err(_) => Vec::new(),
    }
}

/// A gateway bridge `up` event around `phy` (tests, benchmarks).
pub fn bridge_json(phy: &[u8], gateway_id: &str, time: &str) -> Vec<u8> {
    use base64::Engine;
    serde_json::json!({
        "phyPayload": base64::engine::general_purpose::STANDARD.encode(phy),
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}},
        "rxInfo": {"gatewayId": gateway_id, "uplinkId": 4217106255u32, "gwTime": time, "rssi": -80, "snr": 7.5, "channel": 0, "rfChain": 1, "context": "AAAAAA==", "crcStatus": "CRC_OK"}
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::lorawan_keys::SessionKey;
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn key(s: &str) -> SessionKey {
        SessionKey::parse_hex(s).unwrap()
    }

    fn session() -> DeviceSession {
        DeviceSession {
            device: "d".into(),
            nwk_s_key: key("2B7E151628AED2A6ABF7158809CF4F3C"),
            app_s_key: key("000102030405060708090A0B0C0D0E0F"),
        }
    }

    fn data(phy: Vec<u8>) -> DataFrame {
        match classify(phy).unwrap() {
            Frame::Data(d) => d,
            other => panic!("{other:?}"),
        }
    }

    // A frame widely used to check LoRaWAN implementations (the lora-packet library's
    // example): DevAddr 49BE7DF1, FCnt 2, FPort 1, FRMPayload "test".
    #[test]
    fn known_frame_authenticates_and_decrypts() {
        let s = DeviceSession {
            device: "d".into(),
            nwk_s_key: key("44024241ed4ce9a68c6a8bc055233fd3"),
            app_s_key: key("ec925802ae430ca77fd3dd73cb2cc588"),
        };
        let frame = data(hex("40F17DBE4900020001954378762B11FF0D"));
        assert_eq!((frame.dev_addr, frame.f_cnt16, frame.confirmed), (0x49BE_7DF1, 2, false));
        let mut counter = None;
        assert_eq!(open(frame, &s, &mut counter, 0).unwrap(), Opened::Data { f_cnt: 2, f_port: 1, payload: b"test".to_vec() });
        assert_eq!(counter.unwrap().last, 2);
    }

    #[test]
    fn counters_roll_over_and_replays_are_refused() {
        let s = session();
        let mut counter = None;
        for f in [1u32, 65_535, 65_536, 65_540, 131_071, 131_072] {
            let phy = build_frame(0x260B_1234, f, 2, &[1, 2, 3], false, &s);
            match open(data(phy), &s, &mut counter, 0).unwrap() {
                Opened::Data { f_cnt, payload, .. } => assert_eq!((f_cnt, payload), (f, vec![1, 2, 3])),
                other => panic!("{f}: {other:?}"),
            }
        }
        // An old, genuine frame is a replay; the latest frame again is a duplicate.
        let old = build_frame(0x260B_1234, 131_000, 2, &[9], false, &s);
        assert!(matches!(open(data(old), &s, &mut counter, 0), Err(LorawanError::Replay { f_cnt: 131_000, .. })));
        let again = build_frame(0x260B_1234, 131_072, 2, &[1, 2, 3], false, &s);
        assert_eq!(
            open(data(again.clone()), &s, &mut counter, DUPLICATE_WINDOW_MS).unwrap(),
            Opened::Duplicate { f_cnt: 131_072 }
        );
        // The same copy long after the original: a replay.
        assert!(matches!(open(data(again), &s, &mut counter, DUPLICATE_WINDOW_MS + 1), Err(LorawanError::Replay { .. })));
        // Same counter, different content, valid MIC: not a copy, a replay.
        let forged = build_frame(0x260B_1234, 131_072, 2, &[7], false, &s);
        assert!(matches!(open(data(forged), &s, &mut counter, 0), Err(LorawanError::Replay { .. })));
        assert_eq!(counter.unwrap().last, 131_072);
    }

    #[test]
    fn altered_frames_and_wrong_keys_fail_the_mic() {
        let s = session();
        let phy = build_frame(0x260B_1234, 5, 2, &[1, 2, 3], true, &s);
        let mut flipped = phy.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert!(matches!(open(data(flipped), &s, &mut None, 0), Err(LorawanError::Mic { f_cnt16: 5, .. })));
        let mut wrong = session();
        wrong.nwk_s_key = key("2B7E151628AED2A6ABF7158809CF4F3D");
        assert!(matches!(open(data(phy.clone()), &wrong, &mut None, 0), Err(LorawanError::Mic { .. })));
        let mut counter = None;
        assert!(matches!(open(data(phy), &s, &mut counter, 0).unwrap(), Opened::Data { f_cnt: 5, .. }));
    }

    #[test]
    fn odd_frames_are_classified_or_refused() {
        assert!(matches!(classify(vec![0x40; 5]), Err(LorawanError::TooShort { len: 5 })));
        assert!(matches!(classify(vec![0x40; 256]), Err(LorawanError::TooLong { len: 256 })));
        assert_eq!(classify(vec![0x00; 23]).unwrap(), Frame::Ignored("join request"));
        let mut down = build_frame(1, 1, 1, &[1], false, &session());
        down[0] = 0x60;
        assert_eq!(classify(down).unwrap(), Frame::Ignored("data downlink"));
        assert!(matches!(classify(vec![0xE0; 20]), Err(LorawanError::Malformed(_))));
        assert!(matches!(classify(vec![0x41; 20]), Err(LorawanError::Malformed(_))));
        // FOptsLen 15 claims more header than the frame has.
        let mut lying = vec![0x40, 1, 2, 3, 4, 0x0F, 0, 0, 1, 2, 3, 4];
        lying.resize(14, 0);
        assert!(classify(lying).is_err());
    }

    #[test]
    fn bridge_events_parse_and_bad_ones_say_why() {
        let phy = build_frame(0x260B_1234, 1, 2, &[1], false, &session());
        let f = parse_bridge(&bridge_json(&phy, "0016c001f153a14c", "2026-11-25T10:00:00Z")).unwrap();
        assert_eq!((f.phy, f.gateway_id.as_deref()), (phy, Some("0016c001f153a14c")));
        assert_eq!(f.time.unwrap().to_rfc3339(), "2026-11-25T10:00:00+00:00");
        let cases: [(&str, &str); 5] = [
            ("7", "gateway-bridge JSON"),
            ("{}", "phyPayload"),
            (r#"{"phyPayload": "!!"}"#, "base64"),
            (r#"{"phyPayload": "QAE=", "rxInfo": {"crcStatus": "BAD_CRC"}}"#, "CRC"),
            (r#"{"phyPayload": "QAE=", "rxInfo": {"gwTime": "soon"}}"#, "RFC 3339"),
        ];
        for (msg, expected) in cases {
            let err = parse_bridge(msg.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{msg}: {err}");
        }
        let long = format!(r#"{{"phyPayload": "{}"}}"#, "A".repeat(400));
        assert!(matches!(parse_bridge(long.as_bytes()), Err(LorawanError::TooLong { .. })));
    }

    #[test]
    fn unknown_dev_addr_and_ignored_frames_through_process() {
        let keys = SessionKeys::default();
        let phy = build_frame(0x260B_1234, 1, 2, &[1], false, &session());
        let err = process(&bridge_json(&phy, "g", "2026-11-25T10:00:00Z"), &keys, 0, |_| Ok(None)).unwrap_err();
        assert_eq!(err.to_string(), "no session keys for DevAddr 260B1234");
        let join = process(&bridge_json(&[0u8; 23], "g", "2026-11-25T10:00:00Z"), &keys, 0, |_| Ok(None)).unwrap();
        assert_eq!(join, Outcome::Ignored("join request"));
    }
}
