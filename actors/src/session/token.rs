//! The connection's token: adopting a new one (a join's `access_token`, or the `access_token`
//! event) and the timer that closes every channel when it expires, as Supabase does.

use std::time::Duration;

use actix::prelude::*;
use locus_protocol::InboundFrame;

use super::payloads::{json_payload, TokenPayload};
use super::UserSession;
use crate::auth::{now_s, AuthError};
use crate::metrics as m;
use crate::topic::NEARBY_TOPIC;
use crate::wire;

/// Longest single wait of the token-expiry timer, in seconds (it re-arms until `exp`).
const EXPIRY_TIMER_S_MAX: u64 = 24 * 3600;

impl UserSession {
    /// Verifies `token` and makes it the connection's identity. A connection may move from
    /// anonymous (or a key without `sub`) to a user, taking one of that user's connection
    /// slots, and refresh its token, but not switch users.
    pub(super) fn adopt_token(
        &mut self,
        token: &str,
        ctx: &mut Context<Self>,
    ) -> Result<(), AuthError> {
        let id = self
            .engine
            .security()
            .auth
            .verify(token)?
            .or_named(self.engine.anon_name(self.id));
        if self.identity.has_user && id.has_user && id.user_id != self.identity.user_id {
            return Err(AuthError::Invalid(
                "the token is for another user than this connection's".into(),
            ));
        }
        if !id.has_user {
            self.slots.user = None;
        } else if self.slots.user.is_none() {
            self.slots.user = Some(self.engine.user_slot(&id.user_id)?);
        }
        self.identity = id;
        self.schedule_expiry(ctx);
        Ok(())
    }

    /// `access_token`: no reply on success; a bad token gets a `system` error and closes the
    /// channel it was sent on (Supabase's behaviour).
    pub(super) fn access_token(&mut self, frame: &InboundFrame, ctx: &mut Context<Self>) {
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

    /// Arms the timer that closes every channel when the token expires.
    pub(super) fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
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
            let message = AuthError::Expired(now_s().saturating_sub(exp)).detail();
            let mut topics: Vec<String> = act.channels.keys().cloned().collect();
            if act.nearby.is_some() {
                topics.push(NEARBY_TOPIC.to_owned());
            }
            for topic in topics {
                m::auth_failure(crate::refusal::Code::InvalidJwtExpiration.as_str());
                act.push(wire::system(act.vsn, &topic, false, "system", &message));
                act.close_channel(&topic);
            }
        }));
    }
}
