//! The raw-protocol WebSocket client: speaks vsn 1.0.0 (objects) and 2.0.0 (arrays and binary
//! pushes) to the server, one message at a time, with waits bounded by [`RECV_TIMEOUT`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::RECV_TIMEOUT;

/// A protocol version to speak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// A server message, whatever its encoding.
#[derive(Debug, Clone)]
pub struct Msg {
    pub join_ref: Value,
    pub msg_ref: Value,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// Set for vsn 2.0.0 binary user broadcasts (type 4): the raw payload bytes.
    pub binary_payload: Option<Vec<u8>>,
}

/// What a client saw instead of a message.
#[derive(Debug)]
pub enum Received {
    Msg(Msg),
    Closed(Option<u16>),
    Timeout,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub vsn: Vsn,
    next_ref: u64,
}

impl Client {
    pub async fn connect(url: &str, vsn: Vsn) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client {
            ws,
            vsn,
            next_ref: 1,
        }
    }

    fn take_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Sends a message in this client's protocol version; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.take_ref();
        let text = match self.vsn {
            Vsn::V1 => {
                json!({"join_ref": join_ref, "ref": r, "topic": topic, "event": event, "payload": payload})
            }
            Vsn::V2 => json!([join_ref, r, topic, event, payload]),
        };
        self.send_text(&text.to_string()).await;
        r
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws.send(Message::binary(data)).await.expect("send");
    }

    /// Joins `topic` with `config` and returns the join ref after checking the ok reply.
    pub async fn join(&mut self, topic: &str, config: Value) -> String {
        let join_ref = self.take_ref();
        let reply = self.join_raw(&join_ref, topic, config).await;
        assert_eq!(
            reply.payload["status"], "ok",
            "join of {topic} failed: {reply:?}"
        );
        join_ref
    }

    /// Joins and returns the reply, whatever its status.
    pub async fn join_raw(&mut self, join_ref: &str, topic: &str, config: Value) -> Msg {
        let r = self
            .push(Some(join_ref), topic, "phx_join", json!({"config": config}))
            .await;
        self.reply_to(&r).await
    }

    /// Waits for the `phx_reply` to `r`, skipping other messages.
    pub async fn reply_to(&mut self, r: &str) -> Msg {
        self.next_where(|m| m.event == "phx_reply" && m.msg_ref == json!(r))
            .await
    }

    /// Waits for the next message with `event`, skipping others.
    pub async fn next_event(&mut self, event: &str) -> Msg {
        self.next_where(|m| m.event == event).await
    }

    pub async fn next_where(&mut self, pred: impl Fn(&Msg) -> bool) -> Msg {
        loop {
            match self.recv(RECV_TIMEOUT).await {
                Received::Msg(m) if pred(&m) => return m,
                Received::Msg(_) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Asserts no message matching `pred` arrives within `wait`.
    pub async fn assert_none(&mut self, wait: Duration, pred: impl Fn(&Msg) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Received::Msg(m) if pred(&m) => panic!("unexpected message {m:?}"),
                Received::Msg(_) => continue,
                Received::Timeout => return,
                Received::Closed(c) => panic!("closed ({c:?}) while waiting"),
            }
        }
    }

    pub async fn recv(&mut self, wait: Duration) -> Received {
        loop {
            let next = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Received::Timeout,
                Ok(None) => return Received::Closed(None),
                Ok(Some(Err(_))) => return Received::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match next {
                Message::Text(t) => return Received::Msg(parse_text(&t)),
                Message::Binary(b) => return Received::Msg(parse_binary(&b)),
                Message::Close(frame) => return Received::Closed(frame.map(|f| u16::from(f.code))),
                _ => continue,
            }
        }
    }

    /// Reads until the socket closes; returns the close code and the events seen on the way.
    pub async fn until_closed(&mut self, wait: Duration) -> (Option<u16>, Vec<Msg>) {
        let mut seen = Vec::new();
        loop {
            match self.recv(wait).await {
                Received::Msg(m) => seen.push(m),
                Received::Closed(code) => return (code, seen),
                Received::Timeout => panic!(
                    "socket did not close within {wait:?}; saw {} messages",
                    seen.len()
                ),
            }
        }
    }

    /// Joins `realtime:nearby` with `radius_m`, locates the member at (`lat`, `lng`) and returns
    /// the join ref.
    pub async fn join_nearby(&mut self, lat: f64, lng: f64, radius_m: f64) -> String {
        let topic = "realtime:nearby";
        let jr = self
            .join(topic, json!({"nearby": {"radius_m": radius_m}}))
            .await;
        let at = json!({"lat": lat, "lng": lng});
        let r = self.push(Some(&jr), topic, "location", at).await;
        assert_eq!(self.reply_to(&r).await.payload["status"], "ok");
        jr
    }

    pub async fn heartbeat(&mut self) -> Msg {
        let r = self.push(None, "phoenix", "heartbeat", json!({})).await;
        self.reply_to(&r).await
    }
}

fn parse_text(text: &str) -> Msg {
    let v: Value = serde_json::from_str(text).expect("server sends JSON");
    match v {
        Value::Object(o) => Msg {
            join_ref: o["join_ref"].clone(),
            msg_ref: o["ref"].clone(),
            topic: o["topic"].as_str().unwrap().to_owned(),
            event: o["event"].as_str().unwrap().to_owned(),
            payload: o["payload"].clone(),
            binary_payload: None,
        },
        Value::Array(a) => Msg {
            join_ref: a[0].clone(),
            msg_ref: a[1].clone(),
            topic: a[2].as_str().unwrap().to_owned(),
            event: a[3].as_str().unwrap().to_owned(),
            payload: a[4].clone(),
            binary_payload: None,
        },
        other => panic!("unexpected frame {other}"),
    }
}

/// Parses a type-4 user broadcast into the same shape a JSON broadcast has.
fn parse_binary(b: &[u8]) -> Msg {
    assert_eq!(b[0], 4, "server binary frames are user broadcasts");
    let (tl, el, ml, enc) = (b[1] as usize, b[2] as usize, b[3] as usize, b[4]);
    let mut at = 5;
    let topic = std::str::from_utf8(&b[at..at + tl]).unwrap().to_owned();
    at += tl;
    let event = std::str::from_utf8(&b[at..at + el]).unwrap().to_owned();
    at += el + ml;
    let body = b[at..].to_vec();
    let payload = if enc == 1 {
        serde_json::from_slice(&body).unwrap()
    } else {
        Value::Null
    };
    Msg {
        join_ref: Value::Null,
        msg_ref: Value::Null,
        topic,
        event: "broadcast".into(),
        payload: json!({"type": "broadcast", "event": event, "payload": payload}),
        binary_payload: Some(body),
    }
}

/// Builds a type-3 user broadcast push.
pub fn binary_push(
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    event: &str,
    json_payload: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![
        3,
        join_ref.len() as u8,
        msg_ref.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        json_payload as u8,
    ];
    for part in [join_ref, msg_ref, topic, event] {
        f.extend_from_slice(part.as_bytes());
    }
    f.extend_from_slice(payload);
    f
}

impl Client {
    /// Sends a close frame and waits for the server to end the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(RECV_TIMEOUT, self.ws.next()).await {}
    }
}

impl Client {
    /// Reads until `count` replies arrived (in any order), keyed by ref; other messages are skipped.
    pub async fn replies(
        &mut self,
        count: usize,
        wait: Duration,
    ) -> std::collections::HashMap<String, Msg> {
        let mut out = std::collections::HashMap::new();
        while out.len() < count {
            match self.recv(wait).await {
                Received::Msg(m) if m.event == "phx_reply" => {
                    out.insert(m.msg_ref.as_str().unwrap_or_default().to_owned(), m);
                }
                Received::Msg(_) => {}
                other => panic!(
                    "waiting for {count} replies, got {} then {other:?}",
                    out.len()
                ),
            }
        }
        out
    }
}
