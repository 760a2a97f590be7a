//! The embedded MQTT listener of the zero-setup default: sensors and bridges publish to the gateway itself, and a QoS 1 message is acknowledged only once it is durably stored.
//!
//! A broker in the same process would acknowledge a publisher as soon as the message sat in its
//! memory, before the gateway had stored it: a crash or `kill -9` then lost acknowledged
//! messages (measured with rumqttd: 85 to 13,654 of 20,000; see RELIABILITY.md). This listener
//! is not a broker. It speaks MQTT 3.1.1 to publishers and hands every PUBLISH straight to the
//! ingest stage; the PUBACK (QoS 1) or PUBREC (QoS 2) goes out when ingest has committed the
//! batch holding the message. A publisher whose connection breaks before that sends the message
//! again, and writes are idempotent. Nothing is kept in memory that a crash could lose.
//!
//! It takes data in only: SUBSCRIBE is answered with a failure for every filter. Publishers
//! are held back by TCP when ingest is busy (each connection waits for room in the bounded
//! ingest queue before it reads on). Packets are framed with rumqttc's MQTT 3.1.1 codec, the
//! same one the broker connection uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use chrono::Utc;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Ack, AckError, Inbound, InputMetrics, Routes, KEPT_OF_OVERSIZED};
use crate::config::BrokerSettings;
use crate::status::InputStatus;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("broker.listen: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What the connection's writer sends, in the order it was asked to.
#[derive(Debug)]
enum Reply {
    ConnAck(ConnectReturnCode),
    /// The message with this packet id is stored: PUBACK for QoS 1, PUBREC for QoS 2.
    Stored {
        pkid: u16,
        qos: QoS,
    },
    PubComp(u16),
    SubAck(SubAck),
    UnsubAck(u16),
    PingResp,
}

/// Acknowledges one stored message on the connection it came from.
#[derive(Debug)]
pub struct AckHandle {
    /// The connection's writer. Unbounded because it must never make ingest wait; it holds at
    /// most one entry per message of this connection still in the (bounded) ingest queue or
    /// batch, so its length is bounded by theirs.
    replies: mpsc::UnboundedSender<Reply>,
    pkid: u16,
    qos: QoS,
}

impl AckHandle {
    pub(super) fn send(&self) -> Result<(), AckError> {
        self.replies.send(Reply::Stored { pkid: self.pkid, qos: self.qos }).map_err(|_| AckError::Gone)
    }
}

/// Bind the listener's socket; done before anything else starts, so a taken port stops the start.
pub async fn bind(settings: &BrokerSettings) -> Result<TcpListener, ListenerError> {
    TcpListener::bind(settings.listen).await.map_err(|source| ListenerError::Bind { addr: settings.listen, source })
}

/// Accept publishers until `cancel` fires; returns when every connection has ended (each ends
/// once the acknowledgements of its messages in ingest are written).
pub async fn run(
    tcp: TcpListener,
    settings: BrokerSettings,
    routes: Routes,
    out: mpsc::Sender<Inbound>,
    metrics: Arc<InputMetrics>,
    status: Arc<InputStatus>,
    cancel: CancellationToken,
) {
    status.ready();
    let addr = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
    info!(listen = %addr, "embedded MQTT listener accepting publishers (acknowledged after storage)");
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    let settings = Arc::new(settings);
    let routes = Arc::new(routes);
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    warn!(error = %e, "embedded MQTT listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = settings.max_connections, "embedded MQTT listener at broker.max_connections; connection refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            Connection { settings: settings.clone(), routes: routes.clone(), out: out.clone(), metrics: metrics.clone(), peer };
        let cancel = cancel.clone();
        connections.spawn(async move {
            connection.serve(stream, cancel).await;
            drop(slot);
        });
    }
    drop(out);
    connections.close();
    connections.wait().await;
}

/// One publisher's connection.
struct Connection {
    settings: Arc<BrokerSettings>,
    routes: Arc<Routes>,
    out: mpsc::Sender<Inbound>,
    metrics: Arc<InputMetrics>,
    peer: SocketAddr,
}

/// Why a connection was closed by the listener.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("a packet a client does not send")]
    Unexpected,
    #[error("expected CONNECT as the first packet")]
    NotConnected,
    #[error("a second CONNECT")]
    ConnectedTwice,
    #[error("the client speaks MQTT 5; this listener speaks MQTT 3.1.1")]
    Mqtt5,
    #[error("no packet within the keep-alive time")]
    KeepAlive,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Connection {
    async fn serve(self, stream: TcpStream, cancel: CancellationToken) {
        let (mut reader, mut writer) = stream.into_split();
        let (replies, mut pending) = mpsc::unbounded_channel::<Reply>();
        // The writer outlives the reader: acknowledgements of messages still in ingest go out
        // after the publisher stopped sending (or shutdown stopped reading).
        let write = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            while let Some(reply) = pending.recv().await {
                encode(&reply, &mut buf);
                while let Ok(reply) = pending.try_recv() {
                    encode(&reply, &mut buf);
                }
                if writer.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
            }
            let _ = writer.shutdown().await;
        });
        let peer = self.peer;
        match self.read(&mut reader, replies, &cancel).await {
            Ok(()) => debug!(%peer, "MQTT publisher disconnected"),
            Err(e) => warn!(%peer, error = %e, "MQTT publisher connection closed"),
        }
        let _ = write.await;
    }

    /// Read packets until the publisher disconnects, breaks the protocol, or shutdown.
    async fn read(
        &self,
        reader: &mut tokio::net::tcp::OwnedReadHalf,
        replies: mpsc::UnboundedSender<Reply>,
        cancel: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        let mut buf = BytesMut::with_capacity(8192);
        let mut connected = false;
        // Until CONNECT: the connect timeout; then 1.5 times the client's keep-alive (MQTT 3.1.1
        // §3.1.2.10), or no limit for a keep-alive of 0.
        let mut idle_limit = Some(Duration::from_millis(self.settings.connect_timeout_ms));
        let mut framer = Framer::new(self.settings.max_packet_bytes);
        loop {
            // Act on every whole packet in the buffer.
            while let Some(frame) = framer.next(&mut buf)? {
                let packet = match frame {
                    Frame::Packet(packet) => packet,
                    Frame::Oversized(_) if !connected => return Err(ConnectionError::NotConnected),
                    Frame::Oversized(big) => {
                        warn!(peer = %self.peer, topic = ?big.topic, bytes = big.size, "oversized message: its first bytes go to a dead letter");
                        let inbound = self.inbound(big.topic, big.kept, big.size, big.qos, big.pkid, &replies);
                        if !self.hand_over(inbound, cancel).await {
                            return Ok(());
                        }
                        continue;
                    }
                };
                match packet {
                    Packet::Connect(connect) => {
                        if connected {
                            return Err(ConnectionError::ConnectedTwice);
                        }
                        if connect.protocol != Protocol::V4 {
                            let _ = replies.send(Reply::ConnAck(ConnectReturnCode::RefusedProtocolVersion));
                            return Err(ConnectionError::Mqtt5);
                        }
                        connected = true;
                        idle_limit =
                            (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
                        debug!(peer = %self.peer, client_id = ?connect.client_id, "MQTT publisher connected");
                        let _ = replies.send(Reply::ConnAck(ConnectReturnCode::Success));
                    }
                    _ if !connected => return Err(ConnectionError::NotConnected),
                    Packet::Publish(publish) => {
                        let size = publish.payload.len();
                        let inbound = self.inbound(publish.topic, publish.payload, size, publish.qos, publish.pkid, &replies);
                        if !self.hand_over(inbound, cancel).await {
                            return Ok(());
                        }
                    }
                    // QoS 2, second half: the message was stored before its PUBREC went out.
                    Packet::PubRel(rel) => {
                        let _ = replies.send(Reply::PubComp(rel.pkid));
                    }
                    Packet::Subscribe(sub) => {
                        warn!(peer = %self.peer, "SUBSCRIBE refused: the embedded listener only takes messages in");
                        let codes = sub.filters.iter().map(|_| SubscribeReasonCode::Failure).collect();
                        let _ = replies.send(Reply::SubAck(SubAck::new(sub.pkid, codes)));
                    }
                    Packet::Unsubscribe(unsub) => {
                        let _ = replies.send(Reply::UnsubAck(unsub.pkid));
                    }
                    Packet::PingReq => {
                        let _ = replies.send(Reply::PingResp);
                    }
                    Packet::Disconnect => return Ok(()),
                    // Acknowledgements of messages sent to a client: this listener sends none.
                    Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                    Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                        return Err(ConnectionError::Unexpected);
                    }
                }
            }
            let read = async {
                match idle_limit {
                    Some(limit) => tokio::time::timeout(limit, reader.read_buf(&mut buf)).await.map_err(|_| ()),
                    None => Ok(reader.read_buf(&mut buf).await),
                }
            };
            let n = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                n = read => match n {
                    Ok(n) => n?,
                    Err(()) if connected => return Err(ConnectionError::KeepAlive),
                    Err(()) => return Err(ConnectionError::NotConnected),
                },
            };
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// A PUBLISH (whole, or the kept part of an oversized one) as ingest takes it, with the
    /// acknowledgement its QoS asks for.
    fn inbound(
        &self,
        topic: String,
        payload: bytes::Bytes,
        size: usize,
        qos: QoS,
        pkid: u16,
        replies: &mpsc::UnboundedSender<Reply>,
    ) -> Inbound {
        let ack = match qos {
            QoS::AtMostOnce => Ack::None,
            qos => Ack::Listener(AckHandle { replies: replies.clone(), pkid, qos }),
        };
        let format = self.routes.format_of(&topic);
        Inbound { topic, payload, size, format, received_at: Utc::now(), ack }
    }

    /// Pass a message to ingest, waiting for room (the publisher waits with it). `false` at shutdown.
    async fn hand_over(&self, inbound: Inbound, cancel: &CancellationToken) -> bool {
        InputMetrics::inc(&self.metrics.messages_received, 1);
        tokio::select! {
            _ = cancel.cancelled() => false,
            sent = self.out.send(inbound) => sent.is_ok(),
        }
    }
}

/// One unit read off a publisher's connection.
#[derive(Debug)]
pub enum Frame {
    /// A whole MQTT 3.1.1 packet.
    Packet(Packet),
    /// A PUBLISH over the size limit: its header and first bytes (the rest is read past).
    Oversized(OversizedPublish),
}

/// A PUBLISH too large to be read whole.
#[derive(Debug)]
pub struct OversizedPublish {
    pub qos: QoS,
    pub pkid: u16,
    pub topic: String,
    /// The first [`KEPT_OF_OVERSIZED`] bytes of the body (fewer if the body is shorter).
    pub kept: bytes::Bytes,
    /// The body's size as published.
    pub size: usize,
}

/// Why a connection's bytes are not MQTT 3.1.1 this listener takes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("malformed MQTT packet: {0:?}")]
    Codec(CodecError),
    #[error("a {0} packet larger than broker.max_packet_bytes")]
    Oversized(&'static str),
}

/// Cuts a connection's byte stream into [`Frame`]s. Packets up to `max_packet_bytes` are
/// framed whole by rumqttc's codec; a larger PUBLISH is framed from its header, and its body
/// past the kept bytes is dropped as it arrives, so memory stays bounded by the limit.
#[derive(Debug)]
pub struct Framer {
    max_packet_bytes: usize,
    /// Bytes of an oversized packet still to be read past.
    skip: usize,
}

impl Framer {
    pub fn new(max_packet_bytes: usize) -> Self {
        Self { max_packet_bytes, skip: 0 }
    }

    /// The next frame at the front of `buf`, consuming it; `None` until more bytes arrive.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        match Packet::read(buf, self.max_packet_bytes) {
            Ok(packet) => Ok(Some(Frame::Packet(packet))),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(CodecError::PayloadSizeLimitExceeded(_)) => self.oversized(buf),
            Err(e) => Err(FrameError::Codec(e)),
        }
    }

    fn oversized(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(head) = PublishHead::parse(buf)? else { return Ok(None) };
        let kept_end = head.body_start + head.body_len.min(KEPT_OF_OVERSIZED);
        if buf.len() < kept_end {
            return Ok(None);
        }
        let mut frame = buf.split_to(kept_end);
        let kept = frame.split_off(head.body_start).freeze();
        self.skip = head.frame_len - kept_end;
        Ok(Some(Frame::Oversized(OversizedPublish {
            qos: head.qos,
            pkid: head.pkid,
            topic: head.topic,
            kept,
            size: head.body_len,
        })))
    }
}

/// The fixed and variable header of a PUBLISH.
#[derive(Debug)]
struct PublishHead {
    qos: QoS,
    pkid: u16,
    topic: String,
    /// Offset of the message body from the start of the packet, and its length.
    body_start: usize,
    body_len: usize,
    /// The whole packet's length.
    frame_len: usize,
}

impl PublishHead {
    /// Parse the header at the front of `buf`; `None` until it is all there.
    fn parse(buf: &[u8]) -> Result<Option<Self>, FrameError> {
        let Some(&byte1) = buf.first() else { return Ok(None) };
        if byte1 >> 4 != 3 {
            return Err(FrameError::Oversized(packet_name(byte1 >> 4)));
        }
        let qos = rumqttc::mqttbytes::qos((byte1 >> 1) & 0b11).map_err(FrameError::Codec)?;
        // Remaining length: a variable byte integer of at most 4 bytes.
        let (mut remaining, mut pos) = (0usize, 1usize);
        loop {
            let Some(&b) = buf.get(pos) else { return Ok(None) };
            remaining |= usize::from(b & 0x7f) << (7 * (pos - 1));
            pos += 1;
            if b & 0x80 == 0 {
                break;
            }
            if pos > 4 {
                return Err(FrameError::Codec(CodecError::MalformedRemainingLength));
            }
        }
        let Some(len) = buf.get(pos..pos + 2) else { return Ok(None) };
        let topic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(topic) = buf.get(pos + 2..pos + 2 + topic_len) else { return Ok(None) };
        let topic = std::str::from_utf8(topic).map_err(|_| FrameError::Codec(CodecError::TopicNotUtf8))?.to_owned();
        let mut body_start = pos + 2 + topic_len;
        let mut pkid = 0;
        if qos != QoS::AtMostOnce {
            let Some(id) = buf.get(body_start..body_start + 2) else { return Ok(None) };
            pkid = u16::from_be_bytes([id[0], id[1]]);
            if pkid == 0 {
                return Err(FrameError::Codec(CodecError::PacketIdZero));
            }
            body_start += 2;
        }
        let frame_len = pos + remaining;
        let body_len = frame_len.checked_sub(body_start).ok_or(FrameError::Codec(CodecError::MalformedPacket))?;
        Ok(Some(Self { qos, pkid, topic, body_start, body_len, frame_len }))
    }
}

fn packet_name(kind: u8) -> &'static str {
    match kind {
        1 => "CONNECT",
        8 => "SUBSCRIBE",
        10 => "UNSUBSCRIBE",
        _ => "control",
    }
}

fn encode(reply: &Reply, buf: &mut BytesMut) {
    // The packets written here are a few bytes each: writing them cannot fail.
    let _ = match reply {
        Reply::ConnAck(code) => ConnAck::new(*code, false).write(buf),
        Reply::Stored { pkid, qos: QoS::ExactlyOnce } => PubRec::new(*pkid).write(buf),
        Reply::Stored { pkid, .. } => PubAck::new(*pkid).write(buf),
        Reply::PubComp(pkid) => PubComp::new(*pkid).write(buf),
        Reply::SubAck(ack) => ack.write(buf),
        Reply::UnsubAck(pkid) => UnsubAck::new(*pkid).write(buf),
        Reply::PingResp => rumqttc::mqttbytes::v4::PingResp.write(buf),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Publish;

    fn publish(topic: &str, pkid: u16, body: &[u8]) -> BytesMut {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, body.to_vec());
        p.pkid = pkid;
        let mut buf = BytesMut::new();
        Packet::Publish(p).write(&mut buf, usize::MAX).unwrap();
        buf
    }

    /// Feed `stream` to a framer in pieces of `step` bytes, as reads would deliver it.
    fn frames(stream: &[u8], step: usize, max: usize) -> Vec<Frame> {
        let mut framer = Framer::new(max);
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(f) = framer.next(&mut buf).expect("valid stream") {
                out.push(f);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        out
    }

    #[test]
    fn an_oversized_publish_keeps_its_first_bytes_and_the_next_packet_is_framed_whole() {
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut stream = publish("a/b", 7, &big);
        stream.extend_from_slice(&publish("a/c", 8, b"small"));
        for step in [1, 3, 1000, 65536, stream.len()] {
            let got = frames(&stream, step, 10_000);
            assert_eq!(got.len(), 2, "step {step}");
            let Frame::Oversized(o) = &got[0] else { panic!("step {step}: {:?}", got[0]) };
            assert_eq!((o.topic.as_str(), o.pkid, o.size), ("a/b", 7, big.len()));
            assert_eq!(&o.kept[..], &big[..KEPT_OF_OVERSIZED]);
            let Frame::Packet(Packet::Publish(p)) = &got[1] else { panic!("step {step}: {:?}", got[1]) };
            assert_eq!((p.topic.as_str(), p.pkid, &p.payload[..]), ("a/c", 8, &b"small"[..]));
        }
    }

    #[test]
    fn oversized_packets_other_than_publish_and_lying_headers_are_errors() {
        // A SUBSCRIBE claiming 2 MB.
        let mut buf = BytesMut::from(&[0x82u8, 0x80, 0x80, 0x80, 0x01, 0, 1][..]);
        assert!(matches!(Framer::new(1024).next(&mut buf), Err(FrameError::Oversized("SUBSCRIBE"))));
        // A PUBLISH whose topic is longer than the packet.
        let mut buf = BytesMut::from(&[0x32u8, 0x80, 0x10, 0xff, 0xff][..]);
        buf.extend_from_slice(&vec![b'a'; 65535 + 2]);
        assert!(Framer::new(1024).next(&mut buf).is_err());
        // A remaining length of five bytes.
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(Framer::new(1024).next(&mut buf).is_err());
    }
}
