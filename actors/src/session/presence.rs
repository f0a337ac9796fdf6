//! Presence `track`/`untrack` and typing: parsed and bounded here, applied by the room (which
//! replies). Both write to the channel, so both need `presence` / `broadcast` on its topic.

use locus_protocol::InboundFrame;
use serde_json::{Map, Value};

use super::channels::Target;
use super::payloads::{json_payload, PresencePayload, TypingPayload};
use super::UserSession;
use crate::auth::Action;
use crate::refusal::{Code, Refusal};
use crate::room::{PresenceUpdate, TypingUpdate};

/// The refusal when a room's mailbox is full.
fn room_busy() -> Refusal {
    Refusal::new(Code::RoomBusy, "the room is overloaded, retry later")
}

impl UserSession {
    pub(super) fn presence(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        let target = Target::from(self.joined(frame)?);
        self.authorize(&target.topic, target.private, Action::Presence)?;
        let p = json_payload::<PresencePayload>(&frame.payload)
            .map_err(|e| Refusal::new(Code::MalformedPresence, e))?;
        let track = match (p.event.as_str(), p.payload) {
            ("track", None) => Some(Map::new()),
            ("track", Some(Value::Object(meta))) => {
                let max = self.limits().presence_meta_bytes_max;
                if Value::Object(meta.clone()).to_string().len() > max {
                    return Err(Refusal::new(
                        Code::PresenceMetaTooLarge,
                        format!("presence meta is at most {max} bytes (session.presence_meta_bytes_max)"),
                    ));
                }
                Some(meta)
            }
            ("track", Some(_)) => {
                return Err(Refusal::new(
                    Code::MalformedPresence,
                    "presence meta must be an object",
                ))
            }
            ("untrack", _) => None,
            (other, _) => {
                return Err(Refusal::new(
                    Code::MalformedPresence,
                    format!("presence event {other:?} is not track or untrack"),
                ))
            }
        };
        let update = PresenceUpdate {
            session: self.id,
            msg_ref: frame.msg_ref.clone(),
            track,
        };
        target.room.try_send(update).map_err(|_| room_busy())
    }

    pub(super) fn typing(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        let target = Target::from(self.joined(frame)?);
        // Typing writes to the channel: a read-only member may not announce it.
        self.authorize(&target.topic, target.private, Action::Broadcast)?;
        let typing = json_payload::<TypingPayload>(&frame.payload)
            .ok()
            .and_then(|p| p.typing())
            .ok_or_else(|| {
                Refusal::new(Code::MalformedTyping, "payload must be {\"typing\": bool}")
            })?;
        let update = TypingUpdate {
            session: self.id,
            msg_ref: frame.msg_ref.clone(),
            typing,
        };
        target.room.try_send(update).map_err(|_| room_busy())
    }
}
