//! The session actor: one per connected client. Owns the client's channels and its outbound
//! queue (the write side of the socket, drained by the server's writer task).
//!
//! Takes socket events as a stream ([`SocketEvent`]), plus [`Shutdown`] and [`WriterFinished`].
//! Emits replies to its own outbox, joins/leaves/presence/typing to rooms, publications to the
//! broker.
//!
//! Limits: `session.channels_per_connection_max`, `session.topic_bytes_max`,
//! `session.payload_bytes_max`, `session.presence_meta_bytes_max`, `session.ref_bytes_max`,
//! `session.presence_key_bytes_max`,
//! `session.client_timeout_ms` (silence closes with 4002), `session.mailbox_capacity`, and the
//! `[rate_limits]` buckets (refused frames get an error reply; a connection that keeps flooding
//! is closed with 4029).
//!
//! Auth: the session holds the connection's [`Identity`]. A join's `access_token` or an
//! `access_token` event replaces it (same user only); when the token expires, every channel
//! gets a `system` error and `phx_close`, as Supabase does. Each join, broadcast, presence and
//! post is checked against the topic rules of [`crate::auth`].
//! Client frames are handled one at a time in arrival order; a join waits for its room (the
//! socket is not read meanwhile, which is the backpressure on a client that joins in a loop).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use locus_protocol::{
    decode_binary, decode_text, salvage_binary_target, salvage_target, InboundFrame, Payload, Vsn,
    PHOENIX_TOPIC,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::auth::{now_s, Action, AuthError, Identity};
use crate::broker::{Body, Publication};
use crate::cell::NEARBY_TOPIC;
use crate::close_code::CloseCode;
use crate::engine::Engine;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::rate_limit::ConnectionLimiter;
use crate::recovery::{prepare_recovery, RecoverConfig, ReplayConfig, Wanted};
use crate::registry::room_key;
use crate::room::{Join, Leave, PresenceUpdate, Room, TypingUpdate};
use crate::slots::ConnectionSlots;
use crate::storage_writer::DurableError;
use crate::wire::{self, raw};
use crate::SessionId;

/// Longest single wait of the token-expiry timer, in seconds (it re-arms until `exp`).
const EXPIRY_TIMER_S_MAX: u64 = 24 * 3600;
/// A join retries this many times when the room it found stopped in between.
const JOIN_ATTEMPTS_MAX: usize = 3;
/// The prefix every channel topic carries.
pub const TOPIC_PREFIX: &str = "realtime:";

/// The name of an anonymous connection (and of one opened with a key without `sub`).
pub fn anon_name(id: SessionId) -> Arc<str> {
    Arc::from(format!("anon-{id}"))
}

/// What the socket reader hands the session.
#[derive(Debug)]
pub enum SocketEvent {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    /// The client sent a close frame.
    Close,
    /// A frame over `session.frame_bytes_max`.
    FrameTooBig,
    /// The WebSocket framing itself was broken.
    ProtocolError(String),
}

/// Close the connection: the server is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The socket writer has stopped (connection closed): the session ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriterFinished;

/// One joined channel.
struct Channel {
    topic: Arc<str>,
    /// The room (and stored history) this channel belongs to: private joins are apart.
    room_key: Arc<str>,
    room: Addr<Room>,
    join_ref: Option<String>,
    /// `broadcast.ack`: reply to each broadcast once accepted.
    ack: bool,
    /// Broadcasts are stored (and acknowledged after commit).
    durable: bool,
    /// Joined with `config.private`: only authenticated users, under the topic policies.
    private: bool,
}

pub struct UserSession {
    pub(crate) id: SessionId,
    pub(crate) identity: Identity,
    /// The connection slots this session holds (server, IP, user); released when it stops.
    slots: ConnectionSlots,
    limiter: ConnectionLimiter,
    expiry_timer: Option<SpawnHandle>,
    pub(crate) vsn: Vsn,
    pub(crate) outbox: Outbox,
    channels: HashMap<String, Channel>,
    pub(crate) engine: Engine,
    last_seen: Instant,
    /// The `realtime:nearby` subscription, when joined.
    pub(crate) nearby: Option<crate::nearby::NearbyState>,
}

impl UserSession {
    pub fn new(
        id: SessionId,
        identity: Identity,
        vsn: Vsn,
        outbox: Outbox,
        engine: Engine,
    ) -> Self {
        UserSession {
            id,
            identity,
            slots: ConnectionSlots::default(),
            limiter: ConnectionLimiter::new(&engine.security.rate_limits),
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
        &self.engine.session_limits
    }

    /// The connection slots the caller took when it admitted the connection; this session
    /// gives them back when it stops.
    pub fn holding(mut self, slots: ConnectionSlots) -> Self {
        self.slots = slots;
        self
    }
}

impl Actor for UserSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits().mailbox_capacity);
        self.engine.sessions.insert(self.id, ctx.address());
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
            // Bounded: at most channels_per_connection_max leaves, once, as the session dies. It
            // must not be dropped (the room would keep a ghost member), and waiting is not
            // possible in `stopping`, hence `do_send`.
            ch.room.do_send(Leave {
                session: self.id,
                reply_ref: None,
            });
        }
        if let Some(mut st) = self.nearby.take() {
            st.leave(self.id);
        }
        self.outbox.close(CloseCode::Normal);
        self.engine.sessions.remove(self.id);
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

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close(CloseCode::ServerShutdown, ctx);
    }
}

impl Handler<WriterFinished> for UserSession {
    type Result = ();

    fn handle(&mut self, _: WriterFinished, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinPayload {
    config: JoinConfig,
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinConfig {
    broadcast: BroadcastConfig,
    presence: PresenceConfig,
    recover: Option<RecoverConfig>,
    private: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BroadcastConfig {
    #[serde(rename = "self")]
    self_broadcast: bool,
    ack: bool,
    replay: Option<ReplayConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PresenceConfig {
    key: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct BroadcastPayload {
    event: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    /// A client id making a durable broadcast idempotent.
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct PresencePayload {
    event: String,
    #[serde(default)]
    payload: Option<Value>,
}

#[derive(Deserialize)]
struct TypingPayload {
    typing: Option<bool>,
    #[serde(default)]
    payload: Option<Box<TypingPayload>>,
}

/// A client push that cannot be served; `code` is the stable CamelCase reason prefix.
pub(crate) struct Refusal {
    code: &'static str,
    message: String,
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl UserSession {
    /// Routes one decoded client frame.
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
            m::protocol_error(refusal.code);
            self.push(wire::reply_error(
                self.vsn,
                frame.join_ref.as_deref(),
                frame.msg_ref.as_deref(),
                &frame.topic,
                refusal.code,
                &refusal.message,
            ));
        }
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
            return Err(refuse(
                "PayloadTooLarge",
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
        let security = self.engine.security.clone();
        // Anonymous connections have no user bucket: their connection bucket is the same
        // thing, and a key per anonymous connection would only grow the keyed map.
        let users = security.users.as_deref().filter(|_| self.identity.has_user);
        let Err(limited) = self.limiter.check(event, &self.identity.user_id, users) else {
            return Ok(());
        };
        m::rate_limited(limited.reason());
        let (code, message) = limited.message();
        if self.limiter.rejected() {
            self.push(wire::system(self.vsn, topic, false, "system", message));
            self.close(CloseCode::Flooding, ctx);
        }
        Err(refuse(code, message))
    }

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
            (NEARBY_TOPIC, "post") => self.post(frame, ctx),
            (_, "location" | "post") => Err(refuse(
                "UnmatchedTopic",
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
            (_, other) => {
                let message = format!("event {other:?} is not supported");
                Err(refuse("UnknownEvent", message))
            }
        }
    }

    fn join(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) -> Result<(), Refusal> {
        self.check_topic(&frame.topic)?;
        let (mut config, token) = match json_payload::<JoinPayload>(&frame.payload) {
            Ok(p) => (p.config, p.access_token),
            Err(e) => return Err(refuse("MalformedJoin", e)),
        };
        let presence_key = match config.presence.key.take() {
            Some(k) if k.len() > self.limits().presence_key_bytes_max => {
                let max = self.limits().presence_key_bytes_max;
                return Err(refuse(
                    "PresenceKeyTooLong",
                    format!(
                        "presence keys are at most {max} bytes (session.presence_key_bytes_max)"
                    ),
                ));
            }
            Some(k) if !k.is_empty() => k,
            _ => crate::presence::generated_key(),
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            self.adopt_token(&token, ctx).map_err(|e| {
                m::auth_failure(e.code());
                refuse(
                    e.code(),
                    e.to_string()
                        .split_once(": ")
                        .map_or(String::new(), |(_, m)| m.to_owned()),
                )
            })?;
        }
        let private = config.private;
        self.authorize(&frame.topic, private, Action::Join)?;
        if let Some(old) = self.channels.remove(&frame.topic) {
            // A rejoin replaces the old channel, which the client sees closed.
            old.room.do_send(Leave {
                session: self.id,
                reply_ref: None,
            });
            self.push(wire::close(self.vsn, old.join_ref.as_deref(), &old.topic));
        } else if self.channels.len() >= self.limits().channels_per_connection_max {
            let max = self.limits().channels_per_connection_max;
            return Err(refuse(
                "TopicLimitReached",
                format!("at most {max} channels per connection"),
            ));
        }
        let join = Join {
            session: self.id,
            user_id: self.identity.user_id.clone(),
            outbox: self.outbox.clone(),
            vsn: self.vsn,
            join_ref: frame.join_ref.clone(),
            msg_ref: frame.msg_ref.clone(),
            self_broadcast: config.broadcast.self_broadcast,
            presence_enabled: config.presence.enabled.unwrap_or(true),
            presence_key,
            recovery: None,
        };
        let key = room_key(&frame.topic, private);
        let durable = self.engine.durable(&key).cloned();
        let is_durable = durable.is_some();
        let wanted = match (config.recover, config.broadcast.replay) {
            (Some(r), _) => Some(Wanted::Recover(r)),
            (None, Some(r)) => Some(Wanted::Replay(r)),
            (None, None) => None,
        };
        let rooms = self.engine.rooms.clone();
        let topic = frame.topic.clone();
        let room_topic = key.clone();
        let mut join = join;
        let joining = async move {
            if let Some(wanted) = wanted {
                join.recovery = Some(prepare_recovery(durable.as_ref(), &room_topic, wanted).await);
            }
            for _ in 0..JOIN_ATTEMPTS_MAX {
                let room = rooms.get_or_start(&room_topic);
                match room.send(join.clone()).await {
                    Ok(true) => return Ok(Some(room)),
                    // The room refused the join and told the client why.
                    Ok(false) => return Ok(None),
                    // The room stopped between lookup and send (its last member just left).
                    Err(MailboxError::Closed) => rooms.remove(&room_topic, &room),
                    Err(e) => return Err(e),
                }
            }
            Err(MailboxError::Closed)
        };
        let ack = config.broadcast.ack;
        let (join_ref, msg_ref) = (frame.join_ref.clone(), frame.msg_ref.clone());
        ctx.wait(
            joining
                .into_actor(self)
                .map(move |result, act, _ctx| match result {
                    Ok(None) => {}
                    Ok(Some(room)) => {
                        m::join("ok");
                        let ch = Channel {
                            topic: Arc::from(topic.as_str()),
                            room_key: key,
                            room,
                            join_ref,
                            ack,
                            durable: is_durable,
                            private,
                        };
                        act.channels.insert(topic, ch);
                    }
                    Err(e) => {
                        m::join("error");
                        act.push(wire::reply_error(
                            act.vsn,
                            join_ref.as_deref(),
                            msg_ref.as_deref(),
                            &topic,
                            "RoomUnavailable",
                            &e.to_string(),
                        ));
                    }
                }),
        );
        Ok(())
    }

    fn check_topic(&self, topic: &str) -> Result<(), Refusal> {
        let max = self.limits().topic_bytes_max;
        if topic.len() > max {
            return Err(refuse(
                "TopicTooLong",
                format!("topics are at most {max} bytes"),
            ));
        }
        if let Some(cell) = topic.strip_prefix(crate::nearby::GEO_TOPIC_PREFIX) {
            return match locus_geo::cell::parse(cell) {
                Ok(c) if c == cell && c.len() <= 9 => Ok(()),
                _ => Err(refuse(
                    "InvalidTopic",
                    "geo rooms are realtime:geo:<geohash of 1..=9 lower-case characters>",
                )),
            };
        }
        match topic.strip_prefix(TOPIC_PREFIX) {
            Some(name) if !name.is_empty() => Ok(()),
            _ => Err(refuse("InvalidTopic", "topics are realtime:<name>")),
        }
    }

    fn leave(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) {
        let Some(ch) = self.channels.remove(&frame.topic) else {
            // Leaving a channel that is not joined is a no-op that still completes.
            self.push(wire::reply_ok(
                self.vsn,
                frame.join_ref.as_deref(),
                frame.msg_ref.as_deref(),
                &frame.topic,
            ));
            self.push(wire::close(
                self.vsn,
                frame.join_ref.as_deref(),
                &frame.topic,
            ));
            return;
        };
        // Waiting (rather than try_send) so a leave is never lost; the room replies and closes.
        let leave = Leave {
            session: self.id,
            reply_ref: Some(frame.msg_ref.clone()),
        };
        ctx.wait(ch.room.send(leave).into_actor(self).map(|_, _, _| ()));
    }

    fn joined(&self, frame: &InboundFrame) -> Result<&Channel, Refusal> {
        self.channels.get(&frame.topic).ok_or_else(|| {
            refuse(
                "UnmatchedTopic",
                format!("join {} before pushing to it", frame.topic),
            )
        })
    }

    fn broadcast(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) -> Result<(), Refusal> {
        let (topic, key, ack, durable, private) = {
            let ch = self.joined(frame)?;
            (
                ch.topic.clone(),
                ch.room_key.clone(),
                ch.ack,
                ch.durable,
                ch.private,
            )
        };
        self.authorize(&topic, private, Action::Broadcast)?;
        let (event, body, client_id) = match &frame.payload {
            Payload::Json(raw_payload) => {
                let b = serde_json::from_str::<BroadcastPayload>(raw_payload.get())
                    .map_err(|e| refuse("MalformedBroadcast", e.to_string()))?;
                let payload: Arc<RawValue> = b
                    .payload
                    .map(Arc::from)
                    .unwrap_or_else(|| Arc::from(raw("{}".into())));
                (b.event, Body::Json(payload), b.id)
            }
            Payload::UserBroadcast(b) => (
                b.event.clone(),
                Body::Binary {
                    encoding: b.encoding,
                    data: b.payload.clone(),
                },
                None,
            ),
        };
        let publication = Publication {
            topic: key,
            event,
            body,
            sender: Some(self.id),
            accepted_at: Instant::now(),
            durable: None,
        };
        if durable {
            return self.broadcast_durable(frame, publication, client_id, ack, ctx);
        }
        match self.engine.broker.publish(publication) {
            Ok(()) if ack => {
                self.push(wire::reply_ok(
                    self.vsn,
                    frame.join_ref.as_deref(),
                    frame.msg_ref.as_deref(),
                    &frame.topic,
                ));
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) => Err(refuse("RoomBusy", e.to_string())),
        }
    }

    /// Hands a durable broadcast to the storage writer; the reply comes after commit:
    /// `{"offset","epoch"}` with `ack`, and an error reply whether or not `ack` was asked.
    fn broadcast_durable(
        &mut self,
        frame: &InboundFrame,
        publication: Publication,
        client_id: Option<String>,
        ack: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), Refusal> {
        let storage = self
            .engine
            .durable(&publication.topic)
            .ok_or_else(|| refuse("StorageError", "storage is off"))?;
        let completion = storage
            .append(publication, Some(&self.identity.user_id), client_id)
            .map_err(|e| {
                refuse(
                    e.code(),
                    "too many durable publications in flight, retry later",
                )
            })?;
        let (join_ref, msg_ref, topic) = (
            frame.join_ref.clone(),
            frame.msg_ref.clone(),
            frame.topic.clone(),
        );
        ctx.spawn(completion.into_actor(self).map(move |result, act, _| {
            let outcome = result.unwrap_or_else(|_| {
                Err(DurableError::Unavailable("storage writer stopped".into()))
            });
            let frame = match outcome {
                Ok(a) if ack => {
                    let response =
                        serde_json::json!({ "offset": a.offset, "epoch": a.epoch }).to_string();
                    wire::reply(
                        act.vsn,
                        join_ref.as_deref(),
                        msg_ref.as_deref(),
                        &topic,
                        true,
                        &raw(response),
                    )
                }
                Ok(_) => return,
                Err(e) => {
                    m::protocol_error(e.code());
                    let message = e.to_string();
                    let detail = message
                        .split_once(": ")
                        .map_or(message.as_str(), |(_, d)| d);
                    wire::reply_error(
                        act.vsn,
                        join_ref.as_deref(),
                        msg_ref.as_deref(),
                        &topic,
                        e.code(),
                        detail,
                    )
                }
            };
            act.push(frame);
        }));
        Ok(())
    }

    fn presence(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        let (room, private) = {
            let ch = self.joined(frame)?;
            (ch.room.clone(), ch.private)
        };
        self.authorize(&frame.topic, private, Action::Presence)?;
        let p = match json_payload::<PresencePayload>(&frame.payload) {
            Ok(p) => p,
            Err(e) => return Err(refuse("MalformedPresence", e)),
        };
        let track = match (p.event.as_str(), p.payload) {
            ("track", None) => Some(Map::new()),
            ("track", Some(Value::Object(meta))) => {
                let max = self.limits().presence_meta_bytes_max;
                if Value::Object(meta.clone()).to_string().len() > max {
                    return Err(refuse(
                        "PresenceMetaTooLarge",
                        format!("presence meta is at most {max} bytes (session.presence_meta_bytes_max)"),
                    ));
                }
                Some(meta)
            }
            ("track", Some(_)) => {
                return Err(refuse(
                    "MalformedPresence",
                    "presence meta must be an object",
                ))
            }
            ("untrack", _) => None,
            (other, _) => {
                return Err(refuse(
                    "MalformedPresence",
                    format!("presence event {other:?} is not track or untrack"),
                ))
            }
        };
        let update = PresenceUpdate {
            session: self.id,
            msg_ref: frame.msg_ref.clone(),
            track,
        };
        room.try_send(update)
            .map_err(|_| refuse("RoomBusy", "the room is overloaded, retry later"))
    }

    fn typing(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        let (room, private) = {
            let ch = self.joined(frame)?;
            (ch.room.clone(), ch.private)
        };
        // Typing writes to the channel: a read-only member may not announce it.
        self.authorize(&frame.topic, private, Action::Broadcast)?;
        // Accept `{"typing": b}` and realtime-js's `send({type: "typing", payload: {typing: b}})`.
        let typing = match json_payload::<TypingPayload>(&frame.payload) {
            Ok(TypingPayload {
                typing: Some(t), ..
            }) => t,
            Ok(TypingPayload {
                payload: Some(inner),
                ..
            }) if inner.typing.is_some() => inner.typing.unwrap_or(false),
            _ => {
                return Err(refuse(
                    "MalformedTyping",
                    "payload must be {\"typing\": bool}",
                ))
            }
        };
        let update = TypingUpdate {
            session: self.id,
            msg_ref: frame.msg_ref.clone(),
            typing,
        };
        room.try_send(update)
            .map_err(|_| refuse("RoomBusy", "the room is overloaded, retry later"))
    }

    /// Answers a frame that could not be decoded: an error reply where the frame names a topic
    /// and ref, a `system` message otherwise. The connection stays open.
    /// Whether this connection's user may do `action` on `topic`.
    pub(crate) fn authorize(
        &self,
        topic: &str,
        private: bool,
        action: Action,
    ) -> Result<(), Refusal> {
        self.engine
            .security
            .auth
            .authorize(&self.identity, topic, private, action)
            .map_err(|denied| {
                m::auth_failure("Unauthorized");
                refuse("Unauthorized", denied.0)
            })
    }

    /// Verifies `token` and makes it the connection's identity. A connection may move from
    /// anonymous (or a key without `sub`) to a user, taking one of that user's connection
    /// slots, and refresh its token, but not switch users.
    fn adopt_token(&mut self, token: &str, ctx: &mut Context<Self>) -> Result<(), AuthError> {
        let id = self
            .engine
            .security
            .auth
            .verify(token)?
            .or_named(anon_name(self.id));
        if self.identity.has_user && id.has_user && id.user_id != self.identity.user_id {
            return Err(AuthError::Invalid(
                "the token is for another user than this connection's".into(),
            ));
        }
        if !id.has_user {
            self.slots.user = None;
        } else if self.slots.user.is_none() {
            let max = self.limits().connections_per_user_max;
            let slot = self
                .engine
                .security
                .user_slots
                .take(id.user_id.clone(), max);
            self.slots.user = Some(slot.ok_or(AuthError::ConnectionLimitReached(max))?);
        }
        self.identity = id;
        self.schedule_expiry(ctx);
        Ok(())
    }

    /// `access_token`: no reply on success; a bad token gets a `system` error and closes the
    /// channel it was sent on (Supabase's behaviour).
    fn access_token(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) {
        #[derive(Deserialize)]
        struct TokenPayload {
            access_token: Option<String>,
        }
        let token = json_payload::<TokenPayload>(&frame.payload)
            .ok()
            .and_then(|p| p.access_token)
            .unwrap_or_default();
        let result = if token.is_empty() {
            Err(AuthError::Malformed("access_token is missing".into()))
        } else {
            self.adopt_token(&token, ctx)
        };
        if let Err(e) = result {
            m::auth_failure(e.code());
            self.push(wire::system(
                self.vsn,
                &frame.topic,
                false,
                "system",
                &e.to_string(),
            ));
            self.close_channel(&frame.topic);
        }
    }

    /// Leaves `topic`'s room and tells the client the channel is closed.
    fn close_channel(&mut self, topic: &str) {
        if topic == NEARBY_TOPIC {
            if let Some(mut st) = self.nearby.take() {
                st.leave(self.id);
                self.push(wire::close(self.vsn, st.join_ref.as_deref(), topic));
            }
            return;
        }
        if let Some(ch) = self.channels.remove(topic) {
            // Bounded: one leave per joined channel, sent once.
            ch.room.do_send(Leave {
                session: self.id,
                reply_ref: None,
            });
            self.push(wire::close(self.vsn, ch.join_ref.as_deref(), topic));
        }
    }

    /// Arms the timer that closes every channel when the token expires.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.expiry_timer.take() {
            ctx.cancel_future(t);
        }
        let Some(exp) = self.identity.exp_s else {
            return;
        };
        // Capped: `exp` is whatever the token says, and a timer far in the future would
        // overflow the clock; a capped timer that fires early just re-arms.
        let after = Duration::from_secs(exp.saturating_sub(now_s()).min(EXPIRY_TIMER_S_MAX));
        self.expiry_timer = Some(ctx.run_later(after, move |act, ctx| {
            act.expiry_timer = None;
            if now_s() < exp {
                act.schedule_expiry(ctx);
                return;
            }
            let message = format!(
                "Token has expired {} seconds ago",
                now_s().saturating_sub(exp)
            );
            let mut topics: Vec<String> = act.channels.keys().cloned().collect();
            if act.nearby.is_some() {
                topics.push(NEARBY_TOPIC.to_owned());
            }
            for topic in topics {
                m::auth_failure("InvalidJWTExpiration");
                act.push(wire::system(act.vsn, &topic, false, "system", &message));
                act.close_channel(&topic);
            }
        }));
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
        m::protocol_error("MalformedMessage");
        tracing::debug!(session = self.id, error, "malformed frame");
        let (code, detail) = match self.take_token("malformed", PHOENIX_TOPIC, ctx) {
            Ok(()) => ("MalformedMessage", error.to_owned()),
            Err(refusal) => (refusal.code, refusal.message),
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
                    code,
                    &detail,
                )
            }
            _ => {
                let message = format!("{code}: {detail}");
                wire::system(self.vsn, PHOENIX_TOPIC, false, "system", &message)
            }
        };
        self.push(frame);
    }

    pub(crate) fn push(&self, frame: locus_protocol::OutFrame) {
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

/// Parses a JSON payload into `T`; binary payloads are refused.
fn json_payload<T: for<'de> Deserialize<'de>>(payload: &Payload) -> Result<T, String> {
    match payload {
        Payload::Json(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
        Payload::UserBroadcast(_) => Err("a binary frame is only accepted for broadcast".into()),
    }
}
