//! The bare broadcast peer: the least a WebSocket room fan-out can do on this machine, to
//! measure Locus against. No protocol beyond two text commands, no auth, no presence, no
//! backpressure (unbounded queues), no metrics.
//!
//! Client → server: `join <room>` (answered `joined`), `pub <room> <payload>` (the payload is
//! sent as a text frame to every other member of the room). Usage: `locus-peer-bare [ADDR]`
//! (default 127.0.0.1:4600).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Member = (u64, mpsc::UnboundedSender<Message>);
type Rooms = Arc<RwLock<HashMap<String, Vec<Member>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4600".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("bare peer listening on {addr}");
    let rooms: Rooms = Arc::default();
    let ids = AtomicU64::new(0);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, id, rooms.clone()));
    }
}

async fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            // Write everything already queued with one flush.
            while let Ok(msg) = rx.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else { continue };
        if let Some(room) = text.strip_prefix("join ") {
            rooms
                .write()
                .expect("rooms lock")
                .entry(room.to_owned())
                .or_default()
                .push((id, tx.clone()));
            joined.push(room.to_owned());
            let _ = tx.send(Message::text("joined"));
        } else if let Some((room, payload)) =
            text.strip_prefix("pub ").and_then(|r| r.split_once(' '))
        {
            // One allocation per publication; members share its bytes.
            let frame = Message::text(payload);
            if let Some(members) = rooms.read().expect("rooms lock").get(room) {
                for (member, out) in members {
                    if *member != id {
                        let _ = out.send(frame.clone());
                    }
                }
            }
        }
    }
    let mut rooms = rooms.write().expect("rooms lock");
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.retain(|(m, _)| *m != id);
        }
    }
    drop(rooms);
    writer.abort();
}
