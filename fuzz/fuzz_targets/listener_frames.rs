//! Fuzz target: any byte stream on a connection to the embedded MQTT listener, cut into reads anywhere, must give frames or an error, never a panic or a frame larger than the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use messnetz::sources::listener::{Frame, Framer};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the read size, so frames are split at every kind of boundary.
    let Some((&step, stream)) = data.split_first() else { return };
    let mut framer = Framer::new(4096);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(usize::from(step).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&mut buf) {
                Ok(Some(Frame::Oversized(o))) => assert!(o.kept.len() <= messnetz::sources::KEPT_OF_OVERSIZED),
                Ok(Some(Frame::Packet(_))) => {}
                Ok(None) => break,
                // The listener closes the connection here.
                Err(_) => return,
            }
        }
        // What waits in the buffer is at most one packet under the limit, or the header and
        // kept bytes of an oversized PUBLISH.
        assert!(buf.len() <= 5 + 65_535 + 2 + 2 + messnetz::sources::KEPT_OF_OVERSIZED + usize::from(step).max(1));
    }
});
