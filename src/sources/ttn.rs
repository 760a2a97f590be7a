//! The Things Stack v3 uplink messages (`v3/{application}[@{tenant}]/devices/{device}/up`).
//!
//! The Things Stack leaves out fields whose value is empty, zero or false, so `f_cnt` is
//! absent on a device's first uplink and `f_port` is absent for port 0. `decoded_payload` is
//! there only when an uplink payload formatter ran (and succeeded) for the device.

use std::borrow::Cow;

use serde::Deserialize;

use super::{decode_base64, parse_time, FormatError, Uplink};
use crate::model::DevEui;

#[derive(Deserialize)]
struct TtnUplink<'a> {
    #[serde(borrow)]
    end_device_ids: EndDeviceIds<'a>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    received_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uplink_message: Option<UplinkMessage<'a>>,
}

#[derive(Deserialize)]
struct EndDeviceIds<'a> {
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    device_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    dev_eui: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UplinkMessage<'a> {
    #[serde(default)]
    f_port: Option<u32>,
    #[serde(default)]
    f_cnt: Option<u32>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    frm_payload: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    received_at: Option<Cow<'a, str>>,
    /// The payload formatter's output, unparsed; `null` reads as absent.
    #[serde(borrow, default)]
    decoded_payload: Option<&'a serde_json::value::RawValue>,
}

/// Parse a TTS v3 uplink.
pub fn parse(payload: &[u8]) -> Result<Uplink, FormatError> {
    let msg: TtnUplink = super::json(payload).map_err(|source| FormatError::Json { format: "ttn-v3", source })?;
    let up = msg.uplink_message.ok_or(FormatError::Field {
        field: "uplink_message",
        why: "missing: not an uplink (join, downlink or location messages go to other topics)".into(),
    })?;
    let dev_eui = match msg.end_device_ids.dev_eui.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DevEui::parse(s).map_err(|why| FormatError::Field { field: "end_device_ids.dev_eui", why })?),
    };
    let ns_device_id = msg.end_device_ids.device_id.filter(|id| !id.is_empty()).map(Cow::into_owned);
    if dev_eui.is_none() && ns_device_id.is_none() {
        return Err(FormatError::Field { field: "end_device_ids", why: "names neither device_id nor dev_eui".into() });
    }
    let f_port = match up.f_port {
        None => Some(0),
        Some(p) => Some(u8::try_from(p).map_err(|_| FormatError::Field {
            field: "uplink_message.f_port",
            why: format!("{p} is not a LoRaWAN port (0..=255)"),
        })?),
    };
    let decoded = up.decoded_payload.map(|raw| raw.get().to_owned());
    let payload = match up.frm_payload.as_deref().unwrap_or("") {
        // The formatter's output is the message's content; a JSON profile needs nothing else.
        "" if decoded.is_some() => Vec::new(),
        text => decode_base64("uplink_message.frm_payload", text)?,
    };
    // The network server's reception time is closer to the measurement than the application server's.
    let time = match (up.received_at.as_deref(), msg.received_at.as_deref()) {
        (Some(t), _) => Some(parse_time("uplink_message.received_at", t)?),
        (None, Some(t)) => Some(parse_time("received_at", t)?),
        (None, None) => None,
    };
    Ok(Uplink { dev_eui, ns_device_id, f_port, f_cnt: Some(up.f_cnt.unwrap_or(0)), payload, time, decoded })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the uplink message in The Things Stack's MQTT integration documentation.
    const UPLINK: &str = r#"{
      "end_device_ids": {
        "device_id": "dev1",
        "application_ids": {"application_id": "app1"},
        "dev_eui": "0004A30B001C0530",
        "join_eui": "800000000000000C",
        "dev_addr": "00BCB929"
      },
      "correlation_ids": ["as:up:01E0AXJP3XQ8MHPCDKYFC8A1YT"],
      "received_at": "2020-02-12T15:15:45.787Z",
      "uplink_message": {
        "session_key_id": "AXBSH1Pk6Z0G166",
        "f_port": 15,
        "f_cnt": 7,
        "frm_payload": "CBA=",
        "rx_metadata": [{"gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"}, "time": "2020-02-12T15:15:45.787Z", "rssi": -35, "channel_rssi": -35, "snr": 5.2}],
        "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "868500000"},
        "received_at": "2020-02-12T15:15:45.667Z"
      }
    }"#;

    #[test]
    fn documented_uplink_parses() {
        let up = parse(UPLINK.as_bytes()).unwrap();
        assert_eq!(up.dev_eui.unwrap().to_string(), "0004A30B001C0530");
        assert_eq!(up.ns_device_id.as_deref(), Some("dev1"));
        assert_eq!(up.f_port, Some(15));
        assert_eq!(up.f_cnt, Some(7));
        assert_eq!(up.payload, vec![0x08, 0x10]);
        assert_eq!(up.time.unwrap().to_rfc3339(), "2020-02-12T15:15:45.667+00:00");
    }

    #[test]
    fn strings_are_borrowed_from_the_message_unless_escaped() {
        let msg: TtnUplink = serde_json::from_str(UPLINK).unwrap();
        let up = msg.uplink_message.unwrap();
        for field in [&msg.end_device_ids.device_id, &msg.end_device_ids.dev_eui, &up.frm_payload, &up.received_at] {
            assert!(matches!(field, Some(Cow::Borrowed(_))), "{field:?}");
        }
        // An escape needs a copy; the text is the same.
        let escaped = UPLINK.replacen(r#""device_id": "dev1""#, r#""device_id": "dev\u0031""#, 1);
        assert_ne!(escaped, UPLINK);
        let msg: TtnUplink = serde_json::from_str(&escaped).unwrap();
        assert!(matches!(&msg.end_device_ids.device_id, Some(Cow::Owned(id)) if id == "dev1"));
        assert_eq!(parse(escaped.as_bytes()).unwrap().ns_device_id.as_deref(), Some("dev1"));
    }

    #[test]
    fn decoded_payload_is_kept_when_a_formatter_ran() {
        assert_eq!(parse(UPLINK.as_bytes()).unwrap().decoded, None, "no formatter, no decoded_payload");
        let msg = UPLINK.replace("\"f_cnt\": 7,", "\"f_cnt\": 7, \"decoded_payload\": {\"temperature\": 21.5},");
        let up = parse(msg.as_bytes()).unwrap();
        assert_eq!(up.decoded.as_deref(), Some(r#"{"temperature": 21.5}"#));
        assert_eq!(up.payload, vec![0x08, 0x10], "the bytes stay for binary profiles");
        let msg = UPLINK.replace("\"f_cnt\": 7,", "\"f_cnt\": 7, \"decoded_payload\": null,");
        assert_eq!(parse(msg.as_bytes()).unwrap().decoded, None);
        // Without bytes, the formatter's output alone is an uplink.
        let msg = r#"{"end_device_ids": {"device_id": "d"}, "uplink_message": {"f_port": 2, "decoded_payload": {"t": 1}}}"#;
        let up = parse(msg.as_bytes()).unwrap();
        assert_eq!((up.payload.len(), up.decoded.as_deref()), (0, Some(r#"{"t": 1}"#)));
        // A number no double holds is kept as text: only a profile that reads the object
        // fails on it (a dead letter), the bytes still decode for a binary profile.
        let msg = UPLINK.replace("\"f_cnt\": 7,", "\"f_cnt\": 7, \"decoded_payload\": {\"t\": 1e999},");
        let up = parse(msg.as_bytes()).unwrap();
        assert_eq!((up.payload, up.decoded.as_deref()), (vec![0x08, 0x10], Some(r#"{"t": 1e999}"#)));
    }

    #[test]
    fn first_uplink_without_f_cnt_counts_as_zero() {
        let msg = UPLINK.replace("\"f_cnt\": 7,", "");
        assert_eq!(parse(msg.as_bytes()).unwrap().f_cnt, Some(0));
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let cases = [
            ("not json", "not valid ttn-v3 JSON"),
            (r#"{"end_device_ids": {"device_id": "d"}}"#, "uplink_message"),
            (r#"{"end_device_ids": {"device_id": "d"}, "uplink_message": {"f_port": 2}}"#, "no application payload"),
            (r#"{"end_device_ids": {"device_id": "d"}, "uplink_message": {"f_port": 2, "frm_payload": "!!"}}"#, "base64"),
            (r#"{"end_device_ids": {"device_id": "d"}, "uplink_message": {"f_port": 300, "frm_payload": "AA=="}}"#, "f_port"),
            (r#"{"end_device_ids": {"dev_eui": "XYZ"}, "uplink_message": {"frm_payload": "AA=="}}"#, "dev_eui"),
            (
                r#"{"end_device_ids": {"device_id": "d"}, "uplink_message": {"frm_payload": "AA==", "received_at": "yesterday"}}"#,
                "RFC 3339",
            ),
            (r#"{"end_device_ids": {}, "uplink_message": {"frm_payload": "AA=="}}"#, "neither device_id nor dev_eui"),
            (r#"{"end_device_ids": [], "uplink_message": {"frm_payload": "AA=="}}"#, "neither device_id nor dev_eui"),
        ];
        for (msg, expected) in cases {
            let err = parse(msg.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{msg}: {err}");
        }
        // Bytes that are not UTF-8, inside a string or outside one: JSON's error, with where.
        for bytes in [&b"{\"end_device_ids\": {\"device_id\": \"d\xff\"}}"[..], b"{\xfe\"a\": 1}"] {
            let err = parse(bytes).unwrap_err().to_string();
            assert!(err.contains("not valid ttn-v3 JSON") && err.contains("column"), "{err}");
        }
    }
}
