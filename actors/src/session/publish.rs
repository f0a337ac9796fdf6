//! A client's `broadcast`: checked, built into a publication and handed to
//! [`Engine::publish`](crate::engine::Engine::publish). With `broadcast.ack` the reply comes
//! once the engine accepted it — after commit on a durable topic, carrying `{"offset","epoch"}`
//! — and a publication refused after it was accepted (the commit failed) gets an error reply
//! whether or not `ack` was asked.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use locus_protocol::{InboundFrame, Payload};
use serde_json::value::RawValue;

use super::channels::Target;
use super::payloads::BroadcastPayload;
use super::{ReplyTo, UserSession};
use crate::auth::Action;
use crate::broker::{Body, Publication};
use crate::engine::{Author, Outgoing, Published};
use crate::refusal::{Code, Refusal};
use crate::wire::{self, raw};

impl UserSession {
    pub(super) fn broadcast(
        &mut self,
        frame: &InboundFrame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Refusal> {
        let target = Target::from(self.joined(frame)?);
        self.authorize(&target.topic, target.private, Action::Broadcast)?;
        let (event, body, client_id) = match &frame.payload {
            Payload::Json(raw_payload) => {
                let b = serde_json::from_str::<BroadcastPayload>(raw_payload.get())
                    .map_err(|e| Refusal::new(Code::MalformedBroadcast, e.to_string()))?;
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
            topic: target.room_key,
            event,
            body,
            sender: Some(self.id),
            accepted_at: Instant::now(),
            durable: None,
        };
        let author = Author {
            user_id: Some(self.identity.user_id.clone()),
            client_id,
        };
        let pending = self.engine.publish(Outgoing::Channel {
            publication,
            author,
        })?;
        if let Some(done) = pending.ready() {
            if target.ack {
                self.ack(&ReplyTo::borrowed(frame), done);
            }
            return Ok(());
        }
        let to = ReplyTo::of(frame);
        let ack = target.ack;
        ctx.spawn(
            pending
                .wait()
                .into_actor(self)
                .map(move |result, act, _| match result {
                    Ok(done) if ack => act.ack(&to.borrow(), &done),
                    Ok(_) => {}
                    Err(e) => act.refused(&to.borrow(), &Refusal::from(e)),
                }),
        );
        Ok(())
    }

    /// The `ack` reply: empty for an ephemeral publication, `{"offset","epoch"}` once stored.
    fn ack(&self, to: &ReplyTo<'_>, done: &Published) {
        let reply = match (done.offset, &done.epoch) {
            (Some(offset), Some(epoch)) => {
                let response = serde_json::json!({ "offset": offset, "epoch": epoch });
                wire::reply(
                    self.vsn,
                    to.join_ref,
                    to.msg_ref,
                    to.topic,
                    true,
                    &raw(response.to_string()),
                )
            }
            _ => wire::reply_ok(self.vsn, to.join_ref, to.msg_ref, to.topic),
        };
        self.push(reply);
    }
}
