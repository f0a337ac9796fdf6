//! Joining and leaving channels. A join is one chain of guards, each a refusal with its code:
//! the topic ([`Topic::parse`]) → the payload → the presence key bound → a token it carries →
//! the access check → the channel cap (or a rejoin replacing the old channel) → what it missed
//! (recovery, which may read the database) → the room, which answers the join itself.

use std::sync::Arc;

use actix::prelude::*;
use locus_protocol::InboundFrame;

use super::payloads::{json_payload, JoinPayload};
use super::{Channel, UserSession};
use crate::auth::Action;
use crate::metrics as m;
use crate::publish::recovery::{prepare_recovery, Wanted};
use crate::refusal::{Code, Refusal};
use crate::room::{Join, Leave, Room};
use crate::topic::Topic;
use crate::wire;
use crate::SessionId;

/// A join retries this many times when the room it found stopped in between.
const JOIN_ATTEMPTS_MAX: usize = 3;

/// Tells `room` that `session` left, without waiting.
pub(super) fn leave_room(room: &Addr<Room>, session: SessionId) {
    // Bounded: one leave per joined channel, sent once (at most channels_per_connection_max as
    // a session dies). It must not be dropped (the room would keep a ghost member), and the
    // callers cannot wait (`stopping`, a rejoin), hence `do_send`.
    room.do_send(Leave {
        session,
        reply_ref: None,
    });
}

impl UserSession {
    pub(super) fn join(
        &mut self,
        frame: &InboundFrame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Refusal> {
        let topic = Topic::parse(&frame.topic, self.limits().topic_bytes_max)?;
        let JoinPayload {
            mut config,
            access_token,
        } = json_payload(&frame.payload).map_err(|e| Refusal::new(Code::MalformedJoin, e))?;
        let presence_key = match config.presence.key.take() {
            Some(k) if k.len() > self.limits().presence_key_bytes_max => {
                let max = self.limits().presence_key_bytes_max;
                return Err(Refusal::new(
                    Code::PresenceKeyTooLong,
                    format!(
                        "presence keys are at most {max} bytes (session.presence_key_bytes_max)"
                    ),
                ));
            }
            Some(k) if !k.is_empty() => k,
            _ => crate::ids::generated_key(),
        };
        if let Some(token) = access_token.filter(|t| !t.is_empty()) {
            self.adopt_token(&token, ctx).map_err(|e| {
                m::auth_failure(e.code());
                Refusal::from(e)
            })?;
        }
        let private = config.private;
        self.authorize(&topic, private, Action::Join)?;
        if let Some(old) = self.channels.remove(topic.as_str()) {
            // A rejoin replaces the old channel, which the client sees closed.
            leave_room(&old.room, self.id);
            self.push(wire::close(
                self.vsn,
                old.join_ref.as_deref(),
                old.topic.as_str(),
            ));
        } else if self.channels.len() >= self.limits().channels_per_connection_max {
            let max = self.limits().channels_per_connection_max;
            return Err(Refusal::new(
                Code::TopicLimitReached,
                format!("at most {max} channels per connection"),
            ));
        }
        let key = topic.room_key(private);
        let mut join = Join {
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
        let wanted = match (config.recover, config.broadcast.replay) {
            (Some(r), _) => Some(Wanted::Recover(r)),
            (None, Some(r)) => Some(Wanted::Replay(r)),
            (None, None) => None,
        };
        let engine = self.engine.clone();
        let room_key = key.clone();
        let joining = async move {
            if let Some(wanted) = wanted {
                let durable = engine.is_durable(&room_key).then(|| {
                    (
                        engine.store(),
                        engine.history_window(),
                        engine.storage_limits(),
                    )
                });
                join.recovery = Some(prepare_recovery(durable, &room_key, wanted).await);
            }
            let rooms = engine.rooms();
            for _ in 0..JOIN_ATTEMPTS_MAX {
                let room = rooms.get_or_start(&room_key);
                match room.send(join.clone()).await {
                    Ok(true) => return Ok(Some(room)),
                    // The room refused the join and told the client why.
                    Ok(false) => return Ok(None),
                    // The room stopped between lookup and send (its last member just left).
                    Err(MailboxError::Closed) => rooms.remove(&room_key, &room),
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
                            topic,
                            room_key: key,
                            room,
                            join_ref,
                            ack,
                            private,
                        };
                        act.channels.insert(ch.topic.as_str().to_owned(), ch);
                    }
                    Err(e) => {
                        m::join("error");
                        act.push(wire::reply_error(
                            act.vsn,
                            join_ref.as_deref(),
                            msg_ref.as_deref(),
                            topic.as_str(),
                            &Refusal::new(Code::RoomUnavailable, e.to_string()),
                        ));
                    }
                }),
        );
        Ok(())
    }

    pub(super) fn leave(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) {
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

    /// The channel `frame` pushes to, or `UnmatchedTopic`.
    pub(super) fn joined(&self, frame: &InboundFrame) -> Result<&Channel, Refusal> {
        self.channels.get(&frame.topic).ok_or_else(|| {
            Refusal::new(
                Code::UnmatchedTopic,
                format!("join {} before pushing to it", frame.topic),
            )
        })
    }

    /// Leaves `topic`'s room and tells the client the channel is closed.
    pub(super) fn close_channel(&mut self, topic: &str) {
        if topic == crate::topic::NEARBY_TOPIC {
            if let Some(mut st) = self.nearby.take() {
                st.leave(self.id);
                self.push(wire::close(self.vsn, st.join_ref.as_deref(), topic));
            }
            return;
        }
        if let Some(ch) = self.channels.remove(topic) {
            leave_room(&ch.room, self.id);
            self.push(wire::close(self.vsn, ch.join_ref.as_deref(), topic));
        }
    }
}

/// The room key and topic of a channel, for the handlers that publish to it.
pub(super) struct Target {
    pub topic: Topic,
    pub room_key: Arc<str>,
    pub room: Addr<Room>,
    pub ack: bool,
    pub private: bool,
}

impl From<&Channel> for Target {
    fn from(ch: &Channel) -> Target {
        Target {
            topic: ch.topic.clone(),
            room_key: ch.room_key.clone(),
            room: ch.room.clone(),
            ack: ch.ack,
            private: ch.private,
        }
    }
}
