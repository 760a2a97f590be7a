//! What the gateway and a codec worker say to each other over the worker's stdin and stdout:
//! frames of a 4-byte little-endian length and a JSON document.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// No frame is larger: a script is at most 256 KiB, a result at most 1 MiB of text.
pub(crate) const MAX_FRAME_BYTES: usize = 8 << 20;

/// Identifies a script by its content (BLAKE2b), so that a worker keeps each script once.
pub(crate) type ScriptKey = [u8; 16];

pub(crate) fn script_key(source: &str) -> ScriptKey {
    use blake2::{digest::consts::U16, Blake2b, Digest};
    Blake2b::<U16>::digest(source.as_bytes()).into()
}

/// The first frame a worker sends, so that the gateway knows the program it started is one.
pub(crate) const HELLO: &str = "messnetz codec worker 1";

/// Evaluate a script, and call its entry point if `input` is given.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub key: ScriptKey,
    /// The script's text: sent when the worker asked for it ([`Response::NeedSource`]).
    pub source: Option<String>,
    /// The payload and the fPort; `None` only evaluates the script (a load-time check).
    pub input: Option<(Vec<u8>, Option<u8>)>,
    /// Also call `normalizeUplink` on the decoded data ([`super::engine::Input::normalize`]).
    #[serde(default)]
    pub normalize: bool,
    pub timeout_ms: u64,
    pub memory_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The result as JSON text.
    Ok(String),
    /// What went wrong in the script.
    Err(String),
    /// The worker does not hold the script: send the request again with its source.
    NeedSource,
}

pub(crate) fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!("a frame of {} bytes is over the limit", body.len())));
    }
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// `Ok(None)` at a clean end of the stream (the other side closed it between frames).
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!("a frame of {len} bytes is over the limit")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map(Some).map_err(io::Error::other)
}
