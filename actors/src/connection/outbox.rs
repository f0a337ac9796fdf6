//! The outbound queue of one connection, bounded in bytes, shared by everything that writes to it.
//!
//! Rooms push encoded frames straight into a member's outbox (no actor message per delivery) and
//! never wait: a push that would take the queue past `outbound_queue_bytes_max` fails, the outbox
//! turns *slow*, and the socket writer drops what is queued and closes the connection with
//! [`CloseCode::SlowConsumer`]. The writer task (in the server crate) is the only consumer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use locus_protocol::OutFrame;
use tokio::sync::mpsc;

use crate::close_code::CloseCode;
use crate::metrics as m;

/// Released bytes a receiver gathers before updating the global gauge (it also updates it
/// whenever its queue runs empty, so the gauge lags by at most this much per busy connection).
const GAUGE_BATCH_BYTES: usize = 64 * 1024;

/// A pong's WebSocket frame header, in bytes (payloads of control frames are ≤ 125 bytes).
const PONG_HEADER_BYTES: usize = 2;

/// What the socket writer receives.
#[derive(Debug)]
pub enum Outgoing {
    Frame(OutFrame),
    Pong(Bytes),
    /// Write the frames queued before this, then close with this code.
    Close(CloseCode),
}

impl Outgoing {
    /// What the item counts against the byte bound: a frame its bytes, a pong its payload and
    /// a frame header, a close nothing.
    fn queued_bytes(&self) -> usize {
        match self {
            Outgoing::Frame(f) => f.len(),
            Outgoing::Pong(data) => data.len() + PONG_HEADER_BYTES,
            Outgoing::Close(_) => 0,
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("outbound queue is full: slow consumer")]
    Overflow,
    #[error("connection is closing")]
    Closed,
}

struct Shared {
    queued_bytes: AtomicUsize,
    bytes_max: usize,
    slow: AtomicBool,
    closing: AtomicBool,
    /// Wakes the writer when the outbox turns slow, even if it is blocked on a send.
    slow_signal: tokio::sync::Notify,
}

/// Producer handle: cheap to clone, held by the session and by each room the session joined.
#[derive(Clone)]
pub struct Outbox {
    // The channel is unbounded in count on purpose: its bound is `bytes_max`, enforced in `push`
    // before anything is sent, which a count-bounded channel could not express.
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

/// Consumer handle, owned by the socket writer task.
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    /// Bytes released but not yet taken off the global gauge (see [`Outbox::push_batched`]).
    unreported_bytes: usize,
}

/// Creates an outbox holding at most `bytes_max` bytes of queued frames.
pub fn outbox(bytes_max: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        bytes_max,
        slow: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        slow_signal: tokio::sync::Notify::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver {
            rx,
            shared,
            unreported_bytes: 0,
        },
    )
}

impl Outbox {
    /// Queues a frame without waiting. On overflow the outbox turns slow (once) and the caller
    /// counts the drop; every later push fails with [`PushError::Closed`].
    pub fn push(&self, frame: OutFrame) -> Result<(), PushError> {
        let len = frame.len();
        self.push_batched(frame)?;
        m::outbound_queue_bytes().increment(len as f64);
        Ok(())
    }

    /// [`Outbox::push`] without the `locus_outbound_queue_bytes` update: a room fanning out
    /// adds its bytes to the gauge once per publication. One shared gauge updated per delivery
    /// would be a cache line every core fights over, millions of times a second.
    pub fn push_batched(&self, frame: OutFrame) -> Result<(), PushError> {
        self.enqueue(Outgoing::Frame(frame)).map(|_| ())
    }

    /// Queues `item` within the byte bound, or turns the outbox slow when it does not fit.
    /// Returns the bytes it counts for.
    fn enqueue(&self, item: Outgoing) -> Result<usize, PushError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Relaxed) {
            return Err(PushError::Closed);
        }
        let len = item.queued_bytes();
        let before = s.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > s.bytes_max {
            s.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.mark_slow();
            return Err(PushError::Overflow);
        }
        if self.tx.send(item).is_err() {
            s.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(PushError::Closed);
        }
        Ok(len)
    }

    /// Queues a pong. Pongs count against the byte bound like frames: a client that keeps
    /// pinging and never reads fills its queue with them and is closed as a slow consumer.
    pub fn pong(&self, data: Bytes) {
        if let Ok(len) = self.enqueue(Outgoing::Pong(data)) {
            m::outbound_queue_bytes().increment(len as f64);
        }
    }

    /// Bytes that can still be queued before the outbox turns slow.
    pub fn bytes_free(&self) -> usize {
        self.shared.bytes_max.saturating_sub(self.queued_bytes())
    }

    /// Asks the writer to flush what is queued and close with `code`. Idempotent.
    pub fn close(&self, code: CloseCode) {
        if !self.shared.closing.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Outgoing::Close(code));
        }
    }

    fn mark_slow(&self) {
        if !self.shared.slow.swap(true, Ordering::AcqRel) {
            self.shared.closing.store(true, Ordering::Release);
            m::dropped(m::DropReason::SlowConsumer);
            self.shared.slow_signal.notify_one();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Relaxed)
    }

    pub fn is_slow(&self) -> bool {
        self.shared.slow.load(Ordering::Relaxed)
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }
}

impl OutboxReceiver {
    /// Next item to write. Returns `None` when every producer is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await;
        if let Some(item) = &item {
            self.release(item.queued_bytes());
        }
        if self.rx.is_empty() || self.unreported_bytes >= GAUGE_BATCH_BYTES {
            self.report();
        }
        item
    }

    fn release(&mut self, len: usize) {
        self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.unreported_bytes += len;
    }

    /// Takes the released bytes off the global gauge.
    fn report(&mut self) {
        if self.unreported_bytes > 0 {
            m::outbound_queue_bytes().decrement(self.unreported_bytes as f64);
            self.unreported_bytes = 0;
        }
    }

    /// A handle that resolves when the outbox turns slow; the writer races it against its
    /// socket sends (it is separate so it can be awaited while `recv` borrows the receiver).
    pub fn slow_watch(&self) -> SlowWatch {
        SlowWatch {
            shared: self.shared.clone(),
        }
    }

    pub fn is_slow(&self) -> bool {
        self.shared.slow.load(Ordering::Acquire)
    }

    /// Drops every queued frame (the slow-consumer path) and returns how many were dropped.
    pub fn discard_queued(&mut self) -> usize {
        let mut dropped = 0;
        while let Ok(item) = self.rx.try_recv() {
            if matches!(item, Outgoing::Close(_)) {
                continue;
            }
            self.release(item.queued_bytes());
            dropped += 1;
        }
        self.report();
        dropped
    }
}

/// See [`OutboxReceiver::slow_watch`].
pub struct SlowWatch {
    shared: Arc<Shared>,
}

impl SlowWatch {
    /// Resolves once the outbox is slow (at once if it already is).
    pub async fn wait(&self) {
        loop {
            let notified = self.shared.slow_signal.notified();
            if self.shared.slow.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Stop producers and give the gauge back what is still queued.
        self.shared.closing.store(true, Ordering::Release);
        self.rx.close();
        self.discard_queued();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> OutFrame {
        OutFrame {
            data: Bytes::from(vec![b'x'; n]),
            binary: false,
        }
    }

    #[tokio::test]
    async fn push_past_the_byte_bound_turns_the_outbox_slow() {
        let (tx, mut rx) = outbox(100);
        tx.push(frame(60)).unwrap();
        assert_eq!(tx.push(frame(50)), Err(PushError::Overflow));
        assert!(tx.is_slow());
        assert_eq!(tx.push(frame(1)), Err(PushError::Closed));
        rx.slow_watch().wait().await;
        assert_eq!(rx.discard_queued(), 1);
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn receiving_releases_bytes_and_close_is_sent_once() {
        let (tx, mut rx) = outbox(100);
        tx.push(frame(60)).unwrap();
        assert!(matches!(rx.recv().await, Some(Outgoing::Frame(_))));
        tx.push(frame(60)).unwrap();
        tx.close(CloseCode::Normal);
        tx.close(CloseCode::Normal);
        assert!(matches!(rx.recv().await, Some(Outgoing::Frame(_))));
        assert!(matches!(
            rx.recv().await,
            Some(Outgoing::Close(CloseCode::Normal))
        ));
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    /// F3: pongs count against the byte bound, so a client that pings and never reads turns
    /// slow instead of growing an unbounded queue.
    #[tokio::test]
    async fn unread_pongs_fill_the_bound_and_turn_the_outbox_slow() {
        let (tx, mut rx) = outbox(1_000);
        let ping = Bytes::from(vec![b'p'; 125]);
        for _ in 0..7 {
            tx.pong(ping.clone());
        }
        assert!(!tx.is_slow());
        assert_eq!(tx.queued_bytes(), 7 * 127);
        tx.pong(ping.clone());
        assert!(tx.is_slow(), "the 8th pong does not fit in 1,000 bytes");
        rx.slow_watch().wait().await;
        assert_eq!(rx.discard_queued(), 7);
        assert_eq!(tx.queued_bytes(), 0);
    }
}
