//! The session actor: one per connected client. Owns the client's channels and its outbound
//! queue (the write side of the socket, drained by the connection's writer task).
//!
//! Takes socket events as a stream ([`SocketEvent`]), plus [`Shutdown`] and [`WriterFinished`].
//! Every client frame passes one visible guard chain, [`UserSession::dispatch`]: bounded refs →
//! [`admit`](UserSession::admit) (rate limits, payload size) → [`route`](UserSession::route) to
//! the handler of its event; a refusal at any step is one error reply whose code is also the
//! metric label. Emits replies to its own outbox, joins/leaves/presence/typing to rooms, and
//! publications through [`Engine::publish`].
//!
//! # Layout
//! - [`channels`]: join (a chain of guards, then recovery and the room), leave, rejoin.
//! - [`publish`]: broadcasts and their acknowledgement after commit.
//! - [`presence`]: presence `track`/`untrack` and typing.
//! - [`token`]: adopting a new token, the expiry timer.
//! - [`nearby`]: `realtime:nearby` (location, post, nearby presence).
//! - [`payloads`]: the JSON shapes clients push.
//!
//! Limits: `session.channels_per_connection_max`, `session.topic_bytes_max`,
//! `session.payload_bytes_max`, `session.presence_meta_bytes_max`, `session.ref_bytes_max`,
//! `session.presence_key_bytes_max`, `session.client_timeout_ms` (silence closes with 4002),
//! `session.mailbox_capacity`, and the `[rate_limits]` buckets (refused frames get an error
//! reply; a connection that keeps flooding is closed with 4029).
//!
//! Auth: the session holds the connection's [`Identity`]; every action asks
//! [`Engine::authorize`]. Client frames are handled one at a time in arrival order; a join
//! waits for its room (the socket is not read meanwhile, which is the backpressure on a client
//! that joins in a loop).
//!
//! Over 400 lines: the actor's lifecycle and its one guard chain (dispatch → admit → route) belong
//! together; every action lives in its own file beside it.

mod channels;
mod nearby;
mod payloads;
mod presence;
mod publish;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use locus_protocol::{
    decode_binary, decode_text, salvage_binary_target, salvage_target, InboundFrame, Payload, Vsn,
    PHOENIX_TOPIC,
};

use crate::auth::{Action, Identity};
use crate::close_code::CloseCode;
use crate::connection::outbox::{outbox, Outbox};
use crate::connection::slots::ConnectionSlots;
use crate::connection::writer::{write_loop, WriterFinished};
use crate::connection::SocketEvent;
use crate::engine::{ConnectionPermit, Engine, Shutdown};
use crate::metrics as m;
use crate::rate_limit::ConnectionLimiter;
use crate::refusal::{Code, Refusal};
use crate::room::Room;
use crate::topic::{Topic, NEARBY_TOPIC};
use crate::wire;
use crate::SessionId;

/// Where a reply to a client frame goes: its refs and topic.
struct ReplyTo<'a> {
    join_ref: Option<&'a str>,
    msg_ref: Option<&'a str>,
    topic: &'a str,
}

impl<'a> ReplyTo<'a> {
    fn borrowed(frame: &'a InboundFrame) -> Self {
        ReplyTo {
            join_ref: frame.join_ref.as_deref(),
            msg_ref: frame.msg_ref.as_deref(),
            topic: &frame.topic,
        }
    }

    /// An owned copy, for a reply sent after an await.
    fn of(frame: &InboundFrame) -> OwnedReplyTo {
        OwnedReplyTo {
            join_ref: frame.join_ref.clone(),
            msg_ref: frame.msg_ref.clone(),
            topic: frame.topic.clone(),
        }
    }
}

/// [`ReplyTo`], owned.
struct OwnedReplyTo {
    join_ref: Option<String>,
    msg_ref: Option<String>,
    topic: String,
}

impl OwnedReplyTo {
    fn borrow(&self) -> ReplyTo<'_> {
        ReplyTo {
            join_ref: self.join_ref.as_deref(),
            msg_ref: self.msg_ref.as_deref(),
            topic: &self.topic,
        }
    }
}

/// One joined channel.
struct Channel {
    topic: Topic,
    /// The room (and stored history) this channel belongs to: private joins are apart.
    room_key: Arc<str>,
    room: Addr<Room>,
    join_ref: Option<String>,
    /// `broadcast.ack`: reply to each broadcast once accepted.
    ack: bool,
    /// Joined with `config.private`: only authenticated users, under the topic policies.
    private: bool,
}

pub struct UserSession {
    id: SessionId,
    identity: Identity,
    /// The connection slots this session holds (server, IP, user); released when it stops.
    slots: ConnectionSlots,
    limiter: ConnectionLimiter,
    expiry_timer: Option<SpawnHandle>,
    vsn: Vsn,
    outbox: Outbox,
    /// Wire topic → channel.
    channels: HashMap<String, Channel>,
    engine: Engine,
    last_seen: Instant,
    /// The `realtime:nearby` subscription, when joined.
    nearby: Option<nearby::NearbyState>,
}

impl UserSession {
    /// Serves an admitted connection over an upgraded socket: starts its session, fed by the
    /// socket's read side, and the writer task that drains the session's outbox.
    pub fn serve(
        engine: Engine,
        permit: ConnectionPermit,
        vsn: Vsn,
        ws: actix_ws::Session,
        stream: actix_ws::MessageStream,
    ) -> Addr<UserSession> {
        let limits = engine.session_limits().clone();
        let events = stream
            .max_frame_size(limits.frame_bytes_max)
            .aggregate_continuations()
            .max_continuation_size(limits.frame_bytes_max)
            .filter_map(|item| std::future::ready(SocketEvent::from_ws(item)));
        let (tx, rx) = outbox(limits.outbound_queue_bytes_max);
        let session = UserSession::create(move |ctx| {
            ctx.add_stream(events);
            UserSession::new(permit, vsn, tx, engine)
        });
        metrics::counter!(m::CONNECTIONS_OPENED).increment(1);
        let grace = Duration::from_millis(limits.close_grace_ms);
        actix::spawn(write_loop(ws, rx, vsn, session.clone().recipient(), grace));
        session
    }

    fn new(permit: ConnectionPermit, vsn: Vsn, outbox: Outbox, engine: Engine) -> Self {
        UserSession {
            id: permit.id,
            identity: permit.identity,
            slots: permit.slots,
            limiter: ConnectionLimiter::new(&engine.security().rate_limits),
            expiry_timer: None,
            vsn,
            outbox,
            channels: HashMap::new(),
            engine,
            last_seen: Instant::now(),
            nearby: None,
        }
    }

    fn limits(&self) -> &crate::config::SessionLimits {
        self.engine.session_limits()
    }
}

impl Actor for UserSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits().mailbox_capacity);
        self.engine
            .session_started(self.id, ctx.address().recipient());
        m::connections().increment(1.0);
        let every = Duration::from_millis(self.limits().timeout_check_interval_ms);
        ctx.run_interval(every, |act, ctx| {
            let silent_ms = act.last_seen.elapsed().as_millis() as u64;
            if silent_ms > act.limits().client_timeout_ms && !act.outbox.is_closing() {
                act.close(CloseCode::HeartbeatTimeout, ctx);
            }
        });
        self.schedule_expiry(ctx);
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        for (_, ch) in self.channels.drain() {
            channels::leave_room(&ch.room, self.id);
        }
        if let Some(mut st) = self.nearby.take() {
            st.leave(self.id);
        }
        self.outbox.close(CloseCode::Normal);
        self.engine.session_stopped(self.id);
        self.slots = ConnectionSlots::default();
        m::connections().decrement(1.0);
        Running::Stop
    }
}

impl StreamHandler<SocketEvent> for UserSession {
    fn handle(&mut self, event: SocketEvent, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match event {
            SocketEvent::Text(text) => match decode_text(&text) {
                Ok(frame) => self.dispatch(frame, ctx),
                Err(e) => self.malformed(salvage_target(&text), &e.to_string(), ctx),
            },
            SocketEvent::Binary(_) if self.vsn == Vsn::V1 => {
                self.malformed(None, "binary frames need vsn=2.0.0", ctx)
            }
            SocketEvent::Binary(data) => match decode_binary(&data) {
                Ok(frame) => self.dispatch(frame, ctx),
                Err(e) => self.malformed(salvage_binary_target(&data), &e.to_string(), ctx),
            },
            // Pings take a token like any frame: a ping flood is refused (no pong) and counts
            // toward the flood rule.
            SocketEvent::Ping(data) => {
                if self.take_token("ping", PHOENIX_TOPIC, ctx).is_ok() {
                    self.outbox.pong(data);
                }
            }
            SocketEvent::Close => self.close(CloseCode::Normal, ctx),
            SocketEvent::FrameTooBig => {
                self.malformed(None, "frame larger than session.frame_bytes_max", ctx);
                self.close(CloseCode::MessageTooBig, ctx);
            }
            SocketEvent::ProtocolError(e) => {
                self.malformed(None, &e, ctx);
                self.close(CloseCode::Normal, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for UserSession {
    type Result = ();

    /// Closes the connection with 4001: the server is shutting down.
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close(CloseCode::ServerShutdown, ctx);
    }
}

impl Handler<WriterFinished> for UserSession {
    type Result = ();

    /// The socket is gone: the session ends.
    fn handle(&mut self, _: WriterFinished, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl UserSession {
    /// The guard chain every decoded client frame passes: bounded refs, then
    /// [`admit`](Self::admit), then [`route`](Self::route). A refusal is one error reply.
    fn dispatch(&mut self, frame: InboundFrame, ctx: &mut Context<Self>) {
        m::message_in(&frame.event);
        let max = self.limits().ref_bytes_max;
        let ref_len = |r: &Option<String>| r.as_ref().map_or(0, String::len);
        if ref_len(&frame.join_ref).max(ref_len(&frame.msg_ref)) > max {
            // Not echoed back: a reply carrying the oversized ref is what must not be built.
            let error = format!("ref and join_ref are at most {max} bytes (session.ref_bytes_max)");
            return self.malformed(None, &error, ctx);
        }
        let result = self
            .admit(&frame, ctx)
            .and_then(|()| self.route(&frame, ctx));
        if let Err(refusal) = result {
            self.refused(&ReplyTo::borrowed(&frame), &refusal);
        }
    }

    /// Tells the client why its push was refused, and counts it.
    fn refused(&self, to: &ReplyTo<'_>, refusal: &Refusal) {
        m::protocol_error(refusal.code.as_str());
        tracing::debug!(session = self.id, topic = to.topic, code = %refusal.code, detail = %refusal.detail, "refused");
        self.push(wire::reply_error(
            self.vsn,
            to.join_ref,
            to.msg_ref,
            to.topic,
            refusal,
        ));
    }

    /// Rate limits and payload size, before any routing. Heartbeats are exempt: refusing one
    /// would only get a well-behaved client disconnected for silence. Every other frame on
    /// `phoenix` (`access_token` verifies a signature) is limited like the rest.
    fn admit(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) -> Result<(), Refusal> {
        if frame.topic == PHOENIX_TOPIC && frame.event == "heartbeat" {
            return Ok(());
        }
        self.take_token(&frame.event, &frame.topic, ctx)?;
        let size = match &frame.payload {
            Payload::Json(raw) => raw.get().len(),
            Payload::UserBroadcast(b) => b.payload.len(),
        };
        let max = self.limits().payload_bytes_max;
        if size > max && matches!(frame.event.as_str(), "broadcast" | "presence" | "post") {
            return Err(Refusal::new(
                Code::PayloadTooLarge,
                format!("payloads are at most {max} bytes (session.payload_bytes_max)"),
            ));
        }
        Ok(())
    }

    /// Takes one token of the connection's (and its user's) buckets for `event`; a connection
    /// that keeps being refused is told why on `topic` and closed with 4029.
    fn take_token(
        &mut self,
        event: &str,
        topic: &str,
        ctx: &mut Context<Self>,
    ) -> Result<(), Refusal> {
        let engine = self.engine.clone();
        let security = engine.security();
        // Anonymous connections have no user bucket: their connection bucket is the same
        // thing, and a key per anonymous connection would only grow the keyed map.
        let users = security.users.as_deref().filter(|_| self.identity.has_user);
        let Err(limited) = self.limiter.check(event, &self.identity.user_id, users) else {
            return Ok(());
        };
        m::rate_limited(limited.reason());
        let refusal = limited.refusal();
        if self.limiter.rejected() {
            self.push(wire::system(
                self.vsn,
                topic,
                false,
                "system",
                &refusal.detail,
            ));
            self.close(CloseCode::Flooding, ctx);
        }
        Err(refusal)
    }

    /// Hands the frame to the handler of its topic and event.
    fn route(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) -> Result<(), Refusal> {
        match (frame.topic.as_str(), frame.event.as_str()) {
            (PHOENIX_TOPIC, "heartbeat") => {
                self.push(wire::reply_ok(
                    self.vsn,
                    None,
                    frame.msg_ref.as_deref(),
                    PHOENIX_TOPIC,
                ));
                Ok(())
            }
            (NEARBY_TOPIC, "phx_join") => self.join_nearby(frame),
            (NEARBY_TOPIC, "phx_leave") => {
                self.leave_nearby(frame);
                Ok(())
            }
            (NEARBY_TOPIC, "location") => self.location(frame, ctx),
            (NEARBY_TOPIC, "post") => self.post(frame),
            (_, "location" | "post") => Err(Refusal::new(
                Code::UnmatchedTopic,
                "location and post go to realtime:nearby",
            )),
            (_, "phx_join") => self.join(frame, ctx),
            (_, "phx_leave") => {
                self.leave(frame, ctx);
                Ok(())
            }
            (_, "access_token") => {
                self.access_token(frame, ctx);
                Ok(())
            }
            (_, "broadcast") => self.broadcast(frame, ctx),
            (_, "presence") => self.presence(frame),
            (_, "typing") => self.typing(frame),
            (_, other) => Err(Refusal::new(
                Code::UnknownEvent,
                format!("event {other:?} is not supported"),
            )),
        }
    }

    /// Whether this connection's user may do `action` on `topic` (the engine's one check).
    fn authorize(&self, topic: &Topic, private: bool, action: Action) -> Result<(), Refusal> {
        self.engine
            .authorize(&self.identity, topic, private, action)
    }

    /// Answers a frame that could not be decoded: an error reply where the frame names a topic
    /// and ref, a `system` message otherwise. The connection stays open. Malformed frames take
    /// a rate-limit token too, so a stream of garbage ends in 4029 like any flood.
    fn malformed(
        &mut self,
        target: Option<(Option<String>, Option<String>, String)>,
        error: &str,
        ctx: &mut Context<Self>,
    ) {
        m::protocol_error(Code::MalformedMessage.as_str());
        tracing::debug!(session = self.id, error, "malformed frame");
        let refusal = match self.take_token("malformed", PHOENIX_TOPIC, ctx) {
            Ok(()) => Refusal::new(Code::MalformedMessage, error),
            Err(refusal) => refusal,
        };
        // Only a target within the bounds is echoed back.
        let l = self.limits();
        let fits = |r: &Option<String>| r.as_ref().is_none_or(|r| r.len() <= l.ref_bytes_max);
        let frame = match target {
            Some((join_ref, msg_ref, topic))
                if msg_ref.is_some()
                    && fits(&msg_ref)
                    && fits(&join_ref)
                    && topic.len() <= l.topic_bytes_max =>
            {
                wire::reply_error(
                    self.vsn,
                    join_ref.as_deref(),
                    msg_ref.as_deref(),
                    &topic,
                    &refusal,
                )
            }
            _ => wire::system(
                self.vsn,
                PHOENIX_TOPIC,
                false,
                "system",
                &refusal.to_string(),
            ),
        };
        self.push(frame);
    }

    fn push(&self, frame: locus_protocol::OutFrame) {
        // A refused push means the connection is already closing (slow or closed): nothing to do.
        let _ = self.outbox.push(frame);
    }

    /// Closes the connection with `code`; the session stops when the writer is done, or after
    /// `close_grace_ms` at the latest.
    fn close(&mut self, code: CloseCode, ctx: &mut Context<Self>) {
        m::disconnect(code.name());
        self.outbox.close(code);
        ctx.run_later(
            Duration::from_millis(self.limits().close_grace_ms),
            |_, ctx| ctx.stop(),
        );
    }
}
