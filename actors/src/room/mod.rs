//! The room actor: one per topic (with [`registry`], the room map, and the pure state of its
//! [`presence`] and [`typing`]). Owns the topic's members, presence and typing state, and fans
//! publications out to members.
//!
//! Takes [`Join`], [`Leave`], [`Deliver`], [`PresenceUpdate`], [`TypingUpdate`], and in a
//! cluster `Remote` and `LocalPresence` (cluster.rs: the other nodes' presence and typing, this
//! node's presence for them, durable offset order). Emits to member outboxes: join replies,
//! `presence_state`, `presence_diff`, `broadcast`, `typing`.
//!
//! Backpressure: a room never waits on a member. Each publication is encoded once per protocol
//! version in use and the bytes are pushed into each member's byte-bounded outbox; a member whose
//! outbox is full is dropped from the room on the spot (its session closes it with 4008).
//! The mailbox holds `room.mailbox_capacity` messages; publishers use `try_send` and get
//! `RoomBusy` when it is full. The room stops when its last member leaves.
//!
//! Over 400 lines: one actor with its five handlers and the fan-out loop; its pure state is in
//! presence.rs, typing.rs and sequence.rs, its cluster side in cluster.rs, and the tests are the
//! room's own.

mod cluster;
pub mod presence;
pub mod registry;
pub mod sequence;
pub mod typing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_protocol::{encode_message, OutFrame, Vsn};
use serde_json::{Map, Value};

use crate::broker::{Deliver, Durable, Publication};
use crate::config::RoomLimits;
use crate::connection::outbox::{Outbox, PushError};
use crate::metrics::{self as m, DropReason};
use crate::publish::history::{CachedPublication, Coverage};
pub use crate::publish::recovery::Recovery;
use crate::refusal::{Code, Refusal};
use crate::room::presence::{PresenceBounds, PresenceDiff, PresenceState};
use crate::room::registry::RoomRegistry;
use crate::room::sequence::Sequence;
use crate::room::typing::{TypingOutcome, TypingState};
use crate::wire::{self, encode_broadcast, raw};
use crate::SessionId;

/// Room for the join reply beside `presence_state` when checking that a joiner's queue can take
/// both, in bytes (the reply is `{"postgres_changes":[],"recovered":…}` plus the envelope).
const REPLY_BYTES_MAX: usize = 1024;

/// The refusal of a join or first track whose `presence_state` does not fit the member's queue.
fn presence_state_too_large() -> Refusal {
    Refusal::new(
        Code::PresenceStateTooLarge,
        "this room's presence state does not fit the connection's outbound queue; join with presence disabled",
    )
}

/// One joined session.
struct Member {
    outbox: Outbox,
    vsn: Vsn,
    join_ref: Option<String>,
    user_id: Arc<str>,
    /// `broadcast.self`: receive one's own broadcasts.
    self_broadcast: bool,
    presence_enabled: bool,
    presence_key: String,
    /// Durable publications up to this offset were already sent by a recovery or replay.
    delivered_through: u64,
}

pub struct Room {
    /// The registry key: the topic, prefixed when the room is a private channel's.
    key: Arc<str>,
    /// The channel topic members see in every frame.
    topic: Arc<str>,
    members: HashMap<SessionId, Member>,
    /// Members per protocol version, so a publication is encoded only for versions in use.
    members_by_vsn: [usize; 2],
    presence: PresenceState,
    typing: TypingState,
    typing_timer: Option<SpawnHandle>,
    registry: RoomRegistry,
    limits: RoomLimits,
    /// In a cluster, a durable topic's offset order (see [`sequence`]).
    sequence: Option<Sequence>,
    /// A gap is being waited for or read from the database.
    gap_pending: bool,
}

impl Room {
    pub fn new(key: Arc<str>, registry: RoomRegistry, limits: RoomLimits) -> Self {
        let topic = Arc::from(crate::topic::wire_topic(&key));
        let typing = TypingState::new(
            Duration::from_millis(limits.typing_ttl_ms),
            Duration::from_millis(limits.typing_throttle_ms),
        );
        Room {
            key,
            topic,
            members: HashMap::new(),
            members_by_vsn: [0, 0],
            presence: PresenceState::default(),
            typing,
            typing_timer: None,
            registry,
            limits,
            sequence: None,
            gap_pending: false,
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.mailbox_capacity);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.registry.remove(&self.key, &ctx.address());
        // Members left behind (the room is being torn down, e.g. at shutdown) must rejoin.
        for m in self.members.values() {
            let _ = m.outbox.push(wire::channel_error(
                m.vsn,
                m.join_ref.as_deref(),
                &self.topic,
            ));
        }
        Running::Stop
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        m::rooms().decrement(1.0);
    }
}

/// Adds a session to the room; the room sends the join reply (then `presence_state`) itself so
/// that the reply always precedes the room's first message to the member. Answers whether the
/// session joined: `false` when the room refused it (and sent the error reply itself) or the
/// member's queue could not take the join.
#[derive(Message, Clone)]
#[rtype(result = "bool")]
pub struct Join {
    pub session: SessionId,
    pub user_id: Arc<str>,
    pub outbox: Outbox,
    pub vsn: Vsn,
    pub join_ref: Option<String>,
    /// The `ref` of the `phx_join` push, echoed in the reply.
    pub msg_ref: Option<String>,
    pub self_broadcast: bool,
    pub presence_enabled: bool,
    /// Presence key of this member (the client's `presence.key`, or a generated one).
    pub presence_key: String,
    /// Missed publications to send after the join reply (`config.recover`, `broadcast.replay`).
    pub recovery: Option<Recovery>,
}

/// Removes a session from the room (a `phx_leave`, a rejoin or a disconnect).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: SessionId,
    /// `Some(ref)` for a client `phx_leave`: reply ok and send `phx_close`.
    pub reply_ref: Option<Option<String>>,
}

/// A presence `track` (with meta) or `untrack` from a member.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceUpdate {
    pub session: SessionId,
    pub msg_ref: Option<String>,
    /// `Some(meta)` to track, `None` to untrack.
    pub track: Option<Map<String, Value>>,
}

/// A typing indicator from a member.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TypingUpdate {
    pub session: SessionId,
    pub msg_ref: Option<String>,
    pub typing: bool,
}

impl Handler<Join> for Room {
    type Result = bool;

    /// Registers the member, replies ok, sends `presence_state` when presence is enabled, then
    /// what the member missed when it asked to recover or replay. A `presence_state` the
    /// member's queue cannot take is a refusal of the join with a reason, not a slow-consumer
    /// kill of the joiner.
    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) -> bool {
        let joined = self.join(msg);
        if !joined {
            // A room started for a join it refused must not linger (in a cluster it holds a
            // subscription to the topic).
            self.stop_if_empty(ctx);
        }
        joined
    }
}

impl Room {
    fn join(&mut self, msg: Join) -> bool {
        let jr = msg.join_ref.as_deref();
        let state = if msg.presence_enabled {
            let Some(frame) = self.presence_state_frame(msg.vsn, jr, &msg.outbox) else {
                m::join("presence_state_too_large");
                let r = msg.msg_ref.as_deref();
                let refusal = presence_state_too_large();
                let _ = msg
                    .outbox
                    .push(wire::reply_error(msg.vsn, jr, r, &self.topic, &refusal));
                return false;
            };
            Some(frame)
        } else {
            None
        };
        let (recovered, missed, delivered_through) = match &msg.recovery {
            Some(r) => self.plan_recovery(r),
            None => (None, Vec::new(), 0),
        };
        let response = match recovered {
            Some(r) => format!(r#"{{"postgres_changes":[],"recovered":{r}}}"#),
            None => r#"{"postgres_changes":[]}"#.to_owned(),
        };
        let mut ok = msg
            .outbox
            .push(wire::reply(
                msg.vsn,
                jr,
                msg.msg_ref.as_deref(),
                &self.topic,
                true,
                &raw(response),
            ))
            .is_ok();
        if let Some(state) = state.filter(|_| ok) {
            ok = msg.outbox.push(state).is_ok();
        }
        let replay = msg.recovery.as_ref().is_some_and(|r| r.replay);
        let epoch = msg.recovery.as_ref().and_then(|r| r.epoch.clone());
        for p in &missed {
            if !ok {
                break;
            }
            let durable = p.durable(epoch.clone().unwrap_or_else(|| Arc::from("")), replay);
            let meta = durable.meta_json();
            ok = match encode_broadcast(msg.vsn, &self.topic, &p.event, &p.body, Some(&meta)) {
                Some(frame) => msg.outbox.push(frame).is_ok(),
                None => true,
            };
        }
        if !ok {
            return false;
        }
        let member = Member {
            outbox: msg.outbox,
            vsn: msg.vsn,
            join_ref: msg.join_ref,
            user_id: msg.user_id,
            self_broadcast: msg.self_broadcast,
            presence_enabled: msg.presence_enabled,
            presence_key: msg.presence_key,
            delivered_through,
        };
        self.members_by_vsn[member.vsn.index()] += 1;
        if let Some(old) = self.members.insert(msg.session, member) {
            // The session rejoined without leaving; the newest join wins.
            self.members_by_vsn[old.vsn.index()] -= 1;
        }
        debug_assert_eq!(
            self.members_by_vsn.iter().sum::<usize>(),
            self.members.len()
        );
        true
    }
}

impl Handler<Leave> for Room {
    type Result = ();

    /// Removes the member (with its presence and typing), replying when the client asked.
    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        if let Some(member) = self.remove_member(msg.session) {
            if let Some(msg_ref) = msg.reply_ref {
                let jr = member.join_ref.as_deref();
                let _ = member.outbox.push(wire::reply_ok(
                    member.vsn,
                    jr,
                    msg_ref.as_deref(),
                    &self.topic,
                ));
                let _ = member.outbox.push(wire::close(member.vsn, jr, &self.topic));
            }
        }
        self.stop_if_empty(ctx);
    }
}

impl Handler<Deliver> for Room {
    type Result = ();

    /// Fans the publication out to every member; in a cluster, a durable topic's publications
    /// in offset order.
    fn handle(&mut self, Deliver { publication }: Deliver, ctx: &mut Self::Context) {
        match &mut self.sequence {
            Some(seq) if publication.durable.is_some() => {
                for p in seq.offer(publication) {
                    self.fan_out(&p);
                }
                self.watch_gap(ctx);
            }
            _ => self.fan_out(&publication),
        }
        self.stop_if_empty(ctx);
    }
}

impl Room {
    /// Encodes the publication once per version in use and pushes it to every member.
    fn fan_out(&mut self, publication: &Publication) {
        if self.sequence.is_some() {
            self.remember(publication);
        }
        let frames = self.encode_publication(publication);
        let mut delivered = 0u64;
        let mut queued_bytes = 0usize;
        let mut failed: Vec<SessionId> = Vec::new();
        let offset = publication.durable.as_ref().map_or(u64::MAX, |d| d.offset);
        for (&id, member) in &self.members {
            if publication.sender == Some(id) && !member.self_broadcast {
                continue;
            }
            if offset <= member.delivered_through {
                // Already sent to this member by its recovery.
                continue;
            }
            let Some(frame) = &frames[member.vsn.index()] else {
                m::dropped(DropReason::BinaryToJsonMember);
                continue;
            };
            match member.outbox.push_batched(frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    queued_bytes += frame.len();
                }
                Err(e) => {
                    if e == PushError::Closed {
                        m::dropped(DropReason::RecipientClosed);
                    }
                    failed.push(id);
                }
            }
        }
        m::broadcast_out().increment(delivered);
        m::outbound_queue_bytes().increment(queued_bytes as f64);
        m::fanout_recipients().record(delivered as f64);
        m::fanout_latency().record(publication.accepted_at.elapsed().as_secs_f64());
        // A member that cannot take more is shed at once, so the room keeps serving the others.
        for id in failed {
            self.remove_member(id);
        }
    }
}

impl Handler<PresenceUpdate> for Room {
    type Result = ();

    /// Tracks or untracks the member's presence, replies (an error when the room's presence
    /// is full), and sends the diff.
    fn handle(&mut self, msg: PresenceUpdate, _ctx: &mut Self::Context) {
        let Some(member) = self.members.get(&msg.session) else {
            return;
        };
        // Tracking turns presence on for this member, as it does in Supabase.
        let first_enable = msg.track.is_some() && !member.presence_enabled;
        let (vsn, jr, key) = (
            member.vsn,
            member.join_ref.clone(),
            member.presence_key.clone(),
        );
        let outbox = member.outbox.clone();
        let refuse = |refusal: Refusal| {
            m::protocol_error(refusal.code.as_str());
            let (jr, r) = (jr.as_deref(), msg.msg_ref.as_deref());
            let _ = outbox.push(wire::reply_error(vsn, jr, r, &self.topic, &refusal));
        };
        let state_before = if first_enable {
            let Some(frame) = self.presence_state_frame(vsn, jr.as_deref(), &outbox) else {
                return refuse(presence_state_too_large());
            };
            Some(frame)
        } else {
            None
        };
        let bounds = self.presence_bounds();
        let diff = match msg.track {
            Some(meta) => self.presence.try_track(msg.session, &key, meta, &bounds),
            None => Ok(self.presence.untrack(msg.session, &key)),
        };
        let diff = match diff {
            Ok(diff) => diff,
            Err(full) => return refuse(Refusal::new(Code::PresenceLimitReached, full.to_string())),
        };
        if let Some(member) = self.members.get_mut(&msg.session) {
            member.presence_enabled |= first_enable;
        }
        let _ = outbox.push(wire::reply_ok(
            vsn,
            jr.as_deref(),
            msg.msg_ref.as_deref(),
            &self.topic,
        ));
        if let Some(state) = state_before {
            let _ = outbox.push(state);
        }
        self.send_presence_diff(&diff);
    }
}

impl Handler<TypingUpdate> for Room {
    type Result = ();

    /// Applies the typing update, replies ok, and announces it to the other members.
    fn handle(&mut self, msg: TypingUpdate, ctx: &mut Self::Context) {
        let Some(member) = self.members.get(&msg.session) else {
            return;
        };
        let _ = member.outbox.push(wire::reply_ok(
            member.vsn,
            member.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &self.topic,
        ));
        let user = member.user_id.clone();
        match self.typing.update(&user, msg.typing, Instant::now()) {
            TypingOutcome::Announce(typing) => self.announce_typing(&user, typing),
            TypingOutcome::Absorbed => m::dropped(DropReason::TypingThrottled),
        }
        self.schedule_typing_expiry(ctx);
    }
}

impl Room {
    /// The `presence_state` frame for a member, or `None` when it would not fit what is left of
    /// the member's queue beside a reply: the caller refuses with [`presence_state_too_large`]
    /// rather than shed the member as a slow consumer.
    fn presence_state_frame(
        &self,
        vsn: Vsn,
        jr: Option<&str>,
        outbox: &Outbox,
    ) -> Option<OutFrame> {
        let state = raw(self.presence.state_json());
        let frame = encode_message(vsn, jr, None, &self.topic, "presence_state", &state);
        (frame.len() + REPLY_BYTES_MAX <= outbox.bytes_free()).then_some(frame)
    }

    fn presence_bounds(&self) -> PresenceBounds {
        PresenceBounds {
            metas_per_key_max: self.limits.presence_metas_per_key_max,
            metas_max: self.limits.presence_metas_max,
            state_bytes_max: self.limits.presence_state_bytes_max,
        }
    }

    /// Frames for a publication, per version (`None`: cannot be sent to that version).
    fn encode_publication(&self, p: &Publication) -> [Option<OutFrame>; 2] {
        let meta = p.durable.as_ref().map(Durable::meta_json);
        let mut frames = [None, None];
        for vsn in Vsn::ALL {
            if self.members_by_vsn[vsn.index()] > 0 {
                frames[vsn.index()] =
                    encode_broadcast(vsn, &self.topic, &p.event, &p.body, meta.as_deref());
            }
        }
        frames
    }

    /// Decides what a joining member gets: `(recovered flag for the reply, publications to
    /// send, offset through which live deliveries are skipped)`. Publications committed after
    /// the session read the database are taken from the history window, and the watermark
    /// keeps the ones still in this room's mailbox from arriving twice.
    fn plan_recovery(&self, r: &Recovery) -> (Option<bool>, Vec<Arc<CachedPublication>>, u64) {
        let flag = |ok: bool| if r.replay { None } else { Some(ok) };
        if !r.possible {
            m::recovery("not_recovered");
            return (flag(false), Vec::new(), 0);
        }
        let mut list = r.entries.clone();
        let through = list.last().map_or(r.after_offset, |p| p.offset);
        if let (Some(cache), Some(epoch)) = (self.registry.cache(), &r.epoch) {
            match cache.after(&self.key, epoch, through) {
                Coverage::Covered(more) => list.extend(more),
                Coverage::Unknown => {}
                Coverage::Gap if r.replay => {}
                Coverage::Gap => {
                    m::recovery("not_recovered");
                    return (flag(false), Vec::new(), 0);
                }
            }
        }
        m::recovery(if r.replay { "replayed" } else { "recovered" });
        let through = list.last().map_or(through, |p| p.offset);
        (flag(true), list, through)
    }

    fn remove_member(&mut self, session: SessionId) -> Option<Member> {
        let member = self.members.remove(&session)?;
        self.members_by_vsn[member.vsn.index()] -= 1;
        let diff = self.presence.untrack(session, &member.presence_key);
        self.send_presence_diff(&diff);
        // Only announce a stop when no other session of the same user remains typing here.
        let others = self.members.values().any(|m| m.user_id == member.user_id);
        if !others && self.typing.is_typing(&member.user_id) {
            self.typing.update(&member.user_id, false, Instant::now());
            self.announce_typing(&member.user_id, false);
        }
        debug_assert_eq!(
            self.members_by_vsn.iter().sum::<usize>(),
            self.members.len()
        );
        Some(member)
    }

    fn stop_if_empty(&mut self, ctx: &mut Context<Self>) {
        if self.members.is_empty() {
            ctx.stop();
        }
    }

    fn send_presence_diff(&self, diff: &PresenceDiff) {
        if diff.is_empty() {
            return;
        }
        let broker = self.registry.broker();
        if broker.is_clustered() {
            let delta = diff.local_delta();
            if !delta.is_empty() {
                broker.publish_presence(&self.key, delta);
            }
        }
        let payload = raw(diff.to_json());
        self.push_to_members(
            "presence_diff",
            |_, m| m.presence_enabled,
            |vsn| encode_message(vsn, None, None, &self.topic, "presence_diff", &payload),
        );
    }

    /// Tells every member except the user's own sessions that `user` is (not) typing.
    fn announce_typing(&self, user: &str, typing: bool) {
        let broker = self.registry.broker();
        if broker.is_clustered() {
            broker.publish_typing(&self.key, user, typing);
        }
        self.announce_typing_here(user, typing);
    }

    /// [`announce_typing`](Self::announce_typing) to this node's members only (another node's
    /// announcement).
    fn announce_typing_here(&self, user: &str, typing: bool) {
        let payload = raw(serde_json::json!({ "user_id": user, "typing": typing }).to_string());
        self.push_to_members(
            "typing",
            |_, m| &*m.user_id != user,
            |vsn| encode_message(vsn, None, None, &self.topic, "typing", &payload),
        );
    }

    /// Encodes lazily once per version and pushes to the members `filter` selects.
    fn push_to_members(
        &self,
        event: &str,
        filter: impl Fn(SessionId, &Member) -> bool,
        encode: impl Fn(Vsn) -> OutFrame,
    ) {
        let mut frames: [Option<OutFrame>; 2] = [None, None];
        let mut sent = 0;
        for (_, m) in self.members.iter().filter(|(id, m)| filter(**id, m)) {
            let frame = frames[m.vsn.index()].get_or_insert_with(|| encode(m.vsn));
            if m.outbox.push(frame.clone()).is_ok() {
                sent += 1;
            }
        }
        m::messages_out(event, sent);
    }

    fn schedule_typing_expiry(&mut self, ctx: &mut Context<Self>) {
        if self.typing_timer.is_some() {
            return;
        }
        let Some(at) = self.typing.next_expiry() else {
            return;
        };
        let delay = at.saturating_duration_since(Instant::now());
        self.typing_timer = Some(ctx.run_later(delay, |room, ctx| {
            room.typing_timer = None;
            for user in room.typing.expire(Instant::now()) {
                room.announce_typing(&user, false);
            }
            room.schedule_typing_expiry(ctx);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::outbox::{outbox, Outgoing};

    fn join(session: SessionId, outbox: Outbox, presence_enabled: bool) -> Join {
        Join {
            session,
            user_id: Arc::from(format!("u{session}")),
            outbox,
            vsn: Vsn::V1,
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            self_broadcast: false,
            presence_enabled,
            presence_key: format!("k{session}"),
            recovery: None,
        }
    }

    /// F5: a joiner whose queue cannot take the room's `presence_state` is refused with a
    /// reason (and is not a member), instead of being shed as a slow consumer.
    #[actix::test]
    async fn a_presence_state_too_large_for_the_joiner_is_a_refusal() {
        let broker = Arc::new(crate::broker::InProcessBroker::default());
        let registry = RoomRegistry::new(RoomLimits::default(), None, broker);
        let mut room = Room::new(Arc::from("realtime:p"), registry, RoomLimits::default());
        let mut ctx = Context::<Room>::new();
        for session in 0..3 {
            let (tx, _rx) = outbox(1 << 20);
            assert!(<Room as Handler<Join>>::handle(
                &mut room,
                join(session, tx, true),
                &mut ctx
            ));
            let meta = serde_json::json!({ "blob": "x".repeat(1_000) });
            let update = PresenceUpdate {
                session,
                msg_ref: None,
                track: Some(meta.as_object().unwrap().clone()),
            };
            <Room as Handler<PresenceUpdate>>::handle(&mut room, update, &mut ctx);
        }
        let (small, mut rx) = outbox(3_000);
        assert!(!<Room as Handler<Join>>::handle(
            &mut room,
            join(9, small.clone(), true),
            &mut ctx
        ));
        assert!(!small.is_slow(), "refused, not shed");
        let Some(Outgoing::Frame(reply)) = rx.recv().await else {
            panic!("no reply");
        };
        let text = String::from_utf8(reply.data.to_vec()).unwrap();
        assert!(text.contains("PresenceStateTooLarge"), "{text}");
        assert_eq!(room.members.len(), 3);
        // Without presence the same joiner is welcome.
        assert!(<Room as Handler<Join>>::handle(
            &mut room,
            join(9, small, false),
            &mut ctx
        ));
    }
}
