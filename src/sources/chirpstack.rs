//! ChirpStack v4 uplink events (`application/{application_id}/device/{dev_eui}/event/up`, JSON encoding).
//!
//! `object` is there only when the device profile's codec ran and succeeded.

use std::borrow::Cow;

use serde::Deserialize;

use super::{decode_base64, parse_time, FormatError, Uplink};
use crate::model::DevEui;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChirpstackUplink<'a> {
    #[serde(borrow)]
    device_info: DeviceInfo<'a>,
    #[serde(default)]
    f_port: Option<u32>,
    #[serde(default)]
    f_cnt: Option<u32>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    data: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    time: Option<Cow<'a, str>>,
    /// The device profile codec's output, unparsed; `null` reads as absent.
    #[serde(borrow, default)]
    object: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceInfo<'a> {
    #[serde(borrow, default, deserialize_with = "super::borrowed_str")]
    device_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dev_eui: Cow<'a, str>,
}

/// Parse a ChirpStack v4 `up` event.
pub fn parse(payload: &[u8]) -> Result<Uplink, FormatError> {
    let msg: ChirpstackUplink = super::json(payload).map_err(|source| FormatError::Json { format: "chirpstack-v4", source })?;
    let dev_eui =
        DevEui::parse(&msg.device_info.dev_eui).map_err(|why| FormatError::Field { field: "deviceInfo.devEui", why })?;
    let f_port = match msg.f_port {
        None => None,
        Some(p) => Some(
            u8::try_from(p)
                .map_err(|_| FormatError::Field { field: "fPort", why: format!("{p} is not a LoRaWAN port (0..=255)") })?,
        ),
    };
    let decoded = msg.object.map(|raw| raw.get().to_owned());
    let payload = match msg.data.as_deref().unwrap_or("") {
        // The codec's output is the message's content; a JSON profile needs nothing else.
        "" if decoded.is_some() => Vec::new(),
        text => decode_base64("data", text)?,
    };
    let time = match msg.time.as_deref() {
        Some(t) => Some(parse_time("time", t)?),
        None => None,
    };
    Ok(Uplink {
        dev_eui: Some(dev_eui),
        ns_device_id: msg.device_info.device_name.map(Cow::into_owned),
        f_port,
        f_cnt: msg.f_cnt,
        payload,
        time,
        decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like the `up` event in ChirpStack v4's integration documentation (JSON marshaler).
    const UPLINK: &str = r#"{
      "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
      "time": "2022-07-18T09:33:28.823500726+00:00",
      "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile",
        "deviceName": "Test device",
        "devEui": "0101010101010101",
        "tags": {"key": "value"}
      },
      "devAddr": "00189440",
      "dr": 1,
      "fPort": 1,
      "data": "qg==",
      "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36, "snr": 10.5, "context": "E3OWOQ==", "metadata": {"region_name": "eu868", "region_common_name": "EU868"}}],
      "txInfo": {"frequency": 867100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11, "codeRate": "CR_4_5"}}}
    }"#;

    #[test]
    fn documented_uplink_parses() {
        let up = parse(UPLINK.as_bytes()).unwrap();
        assert_eq!(up.dev_eui.unwrap().to_string(), "0101010101010101");
        assert_eq!(up.ns_device_id.as_deref(), Some("Test device"));
        assert_eq!(up.f_port, Some(1));
        assert_eq!(up.f_cnt, None);
        assert_eq!(up.payload, vec![0xaa]);
        assert_eq!(up.time.unwrap().timestamp_millis(), 1658136808823);
    }

    #[test]
    fn object_is_kept_when_a_codec_ran() {
        assert_eq!(parse(UPLINK.as_bytes()).unwrap().decoded, None, "no codec, no object");
        let msg = UPLINK.replace("\"dr\": 1,", "\"dr\": 1, \"object\": {\"temperature\": 21.5, \"wind\": {\"speed\": 36}},");
        let up = parse(msg.as_bytes()).unwrap();
        assert_eq!(up.decoded.as_deref(), Some(r#"{"temperature": 21.5, "wind": {"speed": 36}}"#));
        assert_eq!(up.payload, vec![0xaa]);
        let msg = r#"{"deviceInfo": {"devEui": "0101010101010101"}, "object": {"t": 1}}"#;
        assert_eq!(parse(msg.as_bytes()).unwrap().payload, Vec::<u8>::new());
        let msg = r#"{"deviceInfo": {"devEui": "0101010101010101"}, "object": null}"#;
        assert!(parse(msg.as_bytes()).unwrap_err().to_string().contains("no application payload"));
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let cases = [
            ("[]", "chirpstack-v4 JSON"),
            (r#"{"deviceInfo": {"devEui": "01"}, "data": "qg=="}"#, "devEui"),
            (r#"{"deviceInfo": {"devEui": "0101010101010101"}}"#, "no application payload"),
            (r#"{"deviceInfo": {"devEui": "0101010101010101"}, "data": "qg==", "time": "x"}"#, "RFC 3339"),
        ];
        for (msg, expected) in cases {
            let err = parse(msg.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{msg}: {err}");
        }
    }
}
