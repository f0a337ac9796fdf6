//! One load-generator connection, whatever the server under test speaks: Locus (Phoenix frames
//! over WebSocket), Socket.IO (engine.io v4 over WebSocket), NATS (its text protocol over TCP)
//! or the bare broadcast peer (plain WebSocket text). Scenarios only join rooms, publish
//! timestamped payloads and read deliveries, so every peer runs the same scenario.
//!
//! Over 400 lines: one connection type per protocol the load generator speaks (Locus, Socket.IO,
//! NATS, bare), side by side so they measure the same thing.

use std::io;
use std::net::{IpAddr, SocketAddr};

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::report;

/// Bytes read from a NATS socket at once.
const NATS_READ_CHUNK_BYTES: usize = 64 * 1024;

/// The kind of server driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Locus, or any Supabase Realtime / Phoenix server.
    Locus,
    /// A Socket.IO 4 server with `join` (acked) and `pub` events (benches/peers/socketio).
    Socketio,
    /// A NATS server: rooms are subjects.
    Nats,
    /// The bare tokio-tungstenite broadcast peer (benches/peers/bare).
    Bare,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Locus => "locus",
            Target::Socketio => "socketio",
            Target::Nats => "nats",
            Target::Bare => "bare",
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub target: Target,
    /// The server's address, resolved once.
    pub addr: SocketAddr,
    /// The WebSocket URL (with query) for WebSocket targets.
    pub ws_url: String,
}

impl Endpoint {
    /// `url` is `ws://host:port/path` (Locus, bare), `ws://host:port` (Socket.IO, the
    /// engine.io path is added) or `nats://host:port`.
    pub async fn resolve(target: Target, url: &str, vsn: &str) -> Result<Endpoint, String> {
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{url}: expected scheme://host:port"))?;
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| format!("{host_port}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{host_port}: no IPv4 address"))?;
        let ws_url = match target {
            Target::Locus => format!("ws://{host_port}/{path}?vsn={vsn}"),
            Target::Socketio => format!("ws://{host_port}/socket.io/?EIO=4&transport=websocket"),
            Target::Bare => format!("ws://{host_port}/{path}"),
            Target::Nats => String::new(),
        };
        Ok(Endpoint {
            target,
            addr,
            ws_url,
        })
    }
}

/// Why a connection failed, for the `errors` map of the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Handshake,
    Join,
    Socket,
    /// The server closed the connection (or sent an error) while it was in use.
    Closed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Connect,
        ErrorKind::Handshake,
        ErrorKind::Join,
        ErrorKind::Socket,
        ErrorKind::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Join => "join",
            ErrorKind::Socket => "socket",
            ErrorKind::Closed => "closed",
        }
    }
}

/// What reading a connection yielded.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A published payload arrived; its send time when it carried one.
    Delivery(Option<u64>),
    /// A join (or NATS subscription) was confirmed.
    Joined,
    /// Anything else (replies, protocol chatter already answered).
    Other,
}

type Ws = WebSocketStream<TcpStream>;

pub enum Conn {
    Ws {
        // Boxed: a WebSocket stream is several times the size of the NATS variant.
        ws: Box<Ws>,
        target: Target,
        refs: u64,
    },
    Nats {
        stream: TcpStream,
        buf: Vec<u8>,
        out: Vec<u8>,
        sids: u64,
    },
}

/// Opens a TCP connection, from `src` when given: each loopback source address has its own
/// ~28,000 ephemeral ports, which is what lets one machine hold more connections than that.
async fn dial(addr: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    // Small frames must not wait for delayed ACKs, as on the server side.
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Connects and completes the protocol's handshake.
    pub async fn open(ep: &Endpoint, src: Option<IpAddr>) -> Result<Conn, ErrorKind> {
        let stream = dial(ep.addr, src).await.map_err(|_| ErrorKind::Connect)?;
        if ep.target == Target::Nats {
            let mut conn = Conn::Nats {
                stream,
                buf: Vec::with_capacity(NATS_READ_CHUNK_BYTES),
                out: Vec::new(),
                sids: 0,
            };
            // echo off: a publisher never receives its own messages, as with the other targets.
            conn.nats_write(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n")
                .await?;
            return Ok(conn);
        }
        let (ws, _) = tokio_tungstenite::client_async_with_config(ep.ws_url.as_str(), stream, None)
            .await
            .map_err(|_| ErrorKind::Handshake)?;
        let mut conn = Conn::Ws {
            ws: Box::new(ws),
            target: ep.target,
            refs: 0,
        };
        if ep.target == Target::Socketio {
            // engine.io open packet ("0{…}"), then connect the default namespace ("40").
            conn.expect_text(|t| t.starts_with('0')).await?;
            conn.send_text("40".to_owned()).await?;
            conn.expect_text(|t| t.starts_with("40")).await?;
        }
        Ok(conn)
    }

    /// Joins `room` and waits for the server to confirm it.
    pub async fn join(&mut self, room: &str) -> Result<(), ErrorKind> {
        let frame = match self {
            Conn::Nats { sids, .. } => {
                *sids += 1;
                // PONG after the SUB proves the server processed it.
                let sub = format!("SUB {room} {sids}\r\nPING\r\n");
                self.nats_write(sub.as_bytes()).await?;
                return self.wait_joined().await;
            }
            Conn::Ws { target, refs, .. } => {
                *refs += 1;
                match target {
                    Target::Locus => format!(
                        r#"["{refs}","{refs}","{room}","phx_join",{{"config":{{"broadcast":{{"self":false}}}}}}]"#
                    ),
                    Target::Socketio => format!(r#"42{refs}["join","{room}"]"#),
                    Target::Bare => format!("join {room}"),
                    Target::Nats => unreachable!("NATS is not a WebSocket target"),
                }
            }
        };
        self.send_text(frame).await?;
        self.wait_joined().await
    }

    async fn wait_joined(&mut self) -> Result<(), ErrorKind> {
        loop {
            match self.next_event().await {
                Ok(Event::Joined) => return Ok(()),
                Ok(_) => continue,
                Err(ErrorKind::Closed) => return Err(ErrorKind::Join),
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues one publication of `payload` (a JSON object) to `room`; [`Conn::flush`] sends.
    pub async fn feed_publish(&mut self, room: &str, payload: &str) -> Result<(), ErrorKind> {
        match self {
            Conn::Nats { out, .. } => {
                out.extend_from_slice(format!("PUB {room} {}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(payload.as_bytes());
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Conn::Ws { ws, target, .. } => {
                let frame = match target {
                    Target::Locus => format!(
                        r#"[null,null,"{room}","broadcast",{{"type":"broadcast","event":"m","payload":{payload}}}]"#
                    ),
                    Target::Socketio => format!(r#"42["pub","{room}",{payload}]"#),
                    Target::Bare => format!("pub {room} {payload}"),
                    Target::Nats => unreachable!("NATS is not a WebSocket target"),
                };
                ws.feed(Message::text(frame))
                    .await
                    .map_err(|_| ErrorKind::Socket)
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), ErrorKind> {
        match self {
            Conn::Nats { stream, out, .. } => {
                let r = stream.write_all(out).await;
                out.clear();
                r.map_err(|_| ErrorKind::Socket)
            }
            Conn::Ws { ws, .. } => ws.flush().await.map_err(|_| ErrorKind::Socket),
        }
    }

    /// Keeps an otherwise silent connection alive where the protocol needs the client to speak
    /// (Phoenix heartbeats); the other protocols' pings are answered in [`Conn::next_event`].
    pub async fn keepalive(&mut self) -> Result<(), ErrorKind> {
        if let Conn::Ws {
            target: Target::Locus,
            ..
        } = self
        {
            self.send_text(r#"[null,"hb","phoenix","heartbeat",{}]"#.to_owned())
                .await?;
        }
        Ok(())
    }

    /// Reads until something happens; answers protocol pings on the way. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Event, ErrorKind> {
        match self {
            Conn::Nats { .. } => self.next_nats_event().await,
            Conn::Ws { ws, target, .. } => {
                let msg = match ws.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(_)) => return Err(ErrorKind::Socket),
                    None => return Err(ErrorKind::Closed),
                };
                let target = *target;
                let bytes: &[u8] = match &msg {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) => b,
                    Message::Close(_) => return Err(ErrorKind::Closed),
                    _ => return Ok(Event::Other),
                };
                let event = classify_ws(target, bytes);
                if target == Target::Socketio && bytes == b"2" {
                    self.send_text("3".to_owned()).await?;
                }
                event
            }
        }
    }

    async fn next_nats_event(&mut self) -> Result<Event, ErrorKind> {
        loop {
            let Conn::Nats { stream, buf, .. } = self else {
                unreachable!("called on a NATS connection")
            };
            if let Some((event, used, ping)) = parse_nats(buf)? {
                buf.drain(..used);
                if ping {
                    self.nats_write(b"PONG\r\n").await?;
                }
                return Ok(event);
            }
            buf.reserve(NATS_READ_CHUNK_BYTES);
            // `read_buf` is cancel-safe: bytes read stay in `buf` for the next call.
            match stream.read_buf(buf).await {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(_) => {}
                Err(_) => return Err(ErrorKind::Socket),
            }
        }
    }

    async fn nats_write(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
        let Conn::Nats { stream, .. } = self else {
            unreachable!("called on a NATS connection")
        };
        stream.write_all(bytes).await.map_err(|_| ErrorKind::Socket)
    }

    async fn send_text(&mut self, text: String) -> Result<(), ErrorKind> {
        let Conn::Ws { ws, .. } = self else {
            unreachable!("called on a WebSocket connection")
        };
        ws.send(Message::text(text))
            .await
            .map_err(|_| ErrorKind::Socket)
    }

    async fn expect_text(&mut self, ok: impl Fn(&str) -> bool) -> Result<(), ErrorKind> {
        let Conn::Ws { ws, .. } = self else {
            unreachable!("called on a WebSocket connection")
        };
        match ws.next().await {
            Some(Ok(Message::Text(t))) if ok(t.as_str()) => Ok(()),
            _ => Err(ErrorKind::Handshake),
        }
    }

    /// Closes cleanly and reads until the server closes: dropping a socket with unread data
    /// makes the kernel reset it, and a reset discards what the server had not read yet.
    pub async fn close(mut self, drain: std::time::Duration) {
        let drain_all = async {
            match &mut self {
                Conn::Ws { ws, .. } => {
                    let _ = ws.as_mut().close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
                Conn::Nats { stream, .. } => {
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            }
        };
        let _ = tokio::time::timeout(drain, drain_all).await;
    }
}

/// What a WebSocket frame from `target` means.
fn classify_ws(target: Target, frame: &[u8]) -> Result<Event, ErrorKind> {
    let has = |needle: &[u8]| frame.windows(needle.len()).any(|w| w == needle);
    match target {
        Target::Locus if has(b"phx_reply") => {
            if has(br#""status":"ok""#) {
                // Heartbeat replies carry the "phoenix" topic; only join replies count.
                Ok(if has(b"\"phoenix\"") {
                    Event::Other
                } else {
                    Event::Joined
                })
            } else {
                Err(ErrorKind::Join)
            }
        }
        Target::Locus if has(b"phx_error") || has(b"phx_close") => Err(ErrorKind::Closed),
        Target::Socketio if frame.starts_with(b"43") => Ok(Event::Joined),
        Target::Socketio if frame.starts_with(b"41") => Err(ErrorKind::Closed),
        Target::Bare if frame == b"joined" => Ok(Event::Joined),
        _ => Ok(match report::extract_t(frame) {
            Some(t) => Event::Delivery(Some(t)),
            None => Event::Other,
        }),
    }
}

/// Parses one NATS server operation from the front of `buf`: the event, the bytes it used,
/// and whether it was a PING to answer. `None` when more bytes are needed.
fn parse_nats(buf: &[u8]) -> Result<Option<(Event, usize, bool)>, ErrorKind> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let after_line = eol + 2;
    if line.starts_with(b"MSG ") {
        let len: usize = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or(ErrorKind::Socket)?;
        let end = after_line + len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        let payload = &buf[after_line..after_line + len];
        return Ok(Some((
            Event::Delivery(report::extract_t(payload)),
            end,
            false,
        )));
    }
    if line.starts_with(b"-ERR") {
        return Err(ErrorKind::Closed);
    }
    let event = if line == b"PONG" {
        Event::Joined
    } else {
        Event::Other
    };
    Ok(Some((event, after_line, line == b"PING")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_parser_waits_for_whole_messages_and_answers_pings() {
        assert_eq!(parse_nats(b"MSG r 1 9\r\n{\"t\":42}").unwrap(), None);
        let (event, used, ping) = parse_nats(b"MSG r 1 8\r\n{\"t\":42}\r\nPING\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((event, used, ping), (Event::Delivery(Some(42)), 21, false));
        let (event, _, ping) = parse_nats(b"PING\r\n").unwrap().unwrap();
        assert_eq!((event, ping), (Event::Other, true));
        assert_eq!(parse_nats(b"PONG\r\n").unwrap().unwrap().0, Event::Joined);
        assert_eq!(parse_nats(b"-ERR 'x'\r\n"), Err(ErrorKind::Closed));
    }

    #[test]
    fn websocket_frames_are_classified_per_protocol() {
        let join_ok = br#"["1","1","realtime:r","phx_reply",{"status":"ok","response":{}}]"#;
        assert_eq!(classify_ws(Target::Locus, join_ok), Ok(Event::Joined));
        let hb = br#"[null,"hb","phoenix","phx_reply",{"status":"ok","response":{}}]"#;
        assert_eq!(classify_ws(Target::Locus, hb), Ok(Event::Other));
        assert_eq!(
            classify_ws(Target::Socketio, br#"431["ok"]"#),
            Ok(Event::Joined)
        );
        assert_eq!(
            classify_ws(Target::Socketio, br#"42["m",{"t":7,"pad":"x"}]"#),
            Ok(Event::Delivery(Some(7)))
        );
        assert_eq!(classify_ws(Target::Bare, b"joined"), Ok(Event::Joined));
        assert_eq!(
            classify_ws(Target::Bare, br#"{"t":9}"#),
            Ok(Event::Delivery(Some(9)))
        );
    }
}
