//! The writer task: the only place that touches a socket's write side. It drains the
//! session's outbox into the socket; when the outbox turns slow it abandons whatever send is
//! blocked, drops the queued frames, sends a `system` notice and closes with 4008 — bounded by
//! `session.close_grace_ms`, so a client that never reads again cannot hold the connection's
//! resources. When it ends it tells the session ([`WriterFinished`]).

use std::time::Duration;

use actix::prelude::*;
use locus_protocol::{OutFrame, Vsn, PHOENIX_TOPIC};

use super::outbox::{OutboxReceiver, Outgoing};
use crate::close_code::CloseCode;
use crate::metrics as m;
use crate::wire;

/// The socket writer has stopped (connection closed): the session ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriterFinished;

/// Drains the outbox into the socket until a close, a dead socket, or a slow consumer.
pub async fn write_loop(
    mut ws: actix_ws::Session,
    mut rx: OutboxReceiver,
    vsn: Vsn,
    session: Recipient<WriterFinished>,
    grace: Duration,
) {
    let slow = rx.slow_watch();
    // One wait for the connection's life, polled by every select: creating a fresh `Notified`
    // per frame (register, then deregister on drop) was ~7 % of a fan-out profile.
    let slow_wait = slow.wait();
    tokio::pin!(slow_wait);
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
            item = rx.recv() => item,
        };
        // Every send races the slow signal: a socket that takes nothing must not hold the
        // writer (pongs included: their queue is bounded like frames).
        let sent = match item {
            Some(Outgoing::Frame(frame)) => tokio::select! {
                biased;
                _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
                sent = send_frame(&mut ws, frame) => sent,
            },
            Some(Outgoing::Pong(data)) => tokio::select! {
                biased;
                _ = &mut slow_wait => break close_slow(ws, &mut rx, vsn, grace).await,
                sent = ws.pong(&data) => sent.is_ok(),
            },
            Some(Outgoing::Close(code)) => break close(ws, code, grace).await,
            // Every producer is gone: the session ended.
            None => break close(ws, CloseCode::Normal, grace).await,
        };
        if !sent {
            break;
        }
    }
    // Bounded: sent once per connection, when its writer ends.
    session.do_send(WriterFinished);
}

async fn send_frame(ws: &mut actix_ws::Session, frame: OutFrame) -> bool {
    if frame.binary {
        ws.binary(frame.data).await.is_ok()
    } else {
        // SAFETY: text frames are built by locus-protocol from serde_json output and &str
        // pieces only, so they are valid UTF-8; re-validating every copy of a fanned-out frame
        // for every member would cost a pass over each frame per recipient.
        let text = unsafe { bytestring::ByteString::from_bytes_unchecked(frame.data) };
        ws.text(text).await.is_ok()
    }
}

async fn close(ws: actix_ws::Session, code: CloseCode, grace: Duration) {
    let reason = if code == CloseCode::Normal {
        actix_ws::CloseReason {
            code: actix_ws::CloseCode::Normal,
            description: None,
        }
    } else {
        actix_ws::CloseReason {
            code: actix_ws::CloseCode::Other(code.code()),
            description: Some(code.reason().to_owned()),
        }
    };
    let _ = tokio::time::timeout(grace, ws.close(Some(reason))).await;
}

/// The slow-consumer path: drop what is queued, tell the client why, close with 4008.
async fn close_slow(mut ws: actix_ws::Session, rx: &mut OutboxReceiver, vsn: Vsn, grace: Duration) {
    rx.discard_queued();
    m::disconnect(CloseCode::SlowConsumer.name());
    let notice = wire::system(
        vsn,
        PHOENIX_TOPIC,
        false,
        "system",
        &format!(
            "{}: {}",
            CloseCode::SlowConsumer.name(),
            CloseCode::SlowConsumer.reason()
        ),
    );
    let _ = tokio::time::timeout(grace, async {
        if send_frame(&mut ws, notice).await {
            close(ws, CloseCode::SlowConsumer, grace).await;
        }
    })
    .await;
}
