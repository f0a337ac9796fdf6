//! The session's side of `realtime:nearby`: joining with a radius, `location` updates that
//! home the member in a cell actor (with hysteresis), `post` (handed to the engine, which
//! stores it and fans it out through the covering cells after commit, whether or not the
//! poster is still connected), and the per-subscriber presence list of members within the
//! radius (asking at most `geo.presence_cells_max` cells, nearest first).
//!
//! Whether the subscriber sees exact or coarse positions is decided at join, from whether its
//! identity is authenticated then.
//!
//! Over 400 lines: join, location (with re-homing), nearby presence and post of one subscription;
//! the cell side is in geo/.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_geo::{haversine_m, BBox, Point};
use locus_protocol::{encode_message, InboundFrame};
use serde_json::{json, Value};

use super::payloads::json_payload;
use super::{ReplyTo, UserSession};
use crate::auth::Action;
use crate::engine::{OnStored, Outgoing};
use crate::geo::{self as cell, Cell, Enter, GeoPost, Move, NearbyQuery, ReachGuard};
use crate::metrics::{self as m, DropReason};
use crate::refusal::{Code, Refusal};
use crate::topic::{Topic, NEARBY_TOPIC};
use crate::wire::{self, raw};

/// Longest client id of a geo message.
const POST_ID_BYTES_MAX: usize = 128;

/// The cell a member lives in.
pub(super) struct HomeCell {
    addr: Addr<Cell>,
    bbox: BBox,
}

/// One connection's nearby subscription.
pub(super) struct NearbyState {
    pub(super) join_ref: Option<String>,
    radius_m: f64,
    /// Authenticated at join: sees others' exact positions.
    exact: bool,
    home: Option<HomeCell>,
    point: Option<Point>,
    presence_sent_at: Option<Instant>,
    /// Keeps `radius_m` in the beacon reach for as long as this subscription lives.
    _reach: ReachGuard,
}

impl NearbyState {
    /// Leaves the home cell (the session is leaving or closing).
    pub(super) fn leave(&mut self, session: crate::SessionId) {
        if let Some(home) = self.home.take() {
            // Bounded: one leave per home cell, and a session has at most one.
            home.addr.do_send(cell::Leave { session });
        }
    }
}

fn number(payload: &Value, key: &str) -> Result<f64, String> {
    match payload.get(key) {
        None | Some(Value::Null) => Err(format!("{key} is missing")),
        Some(v) => v.as_f64().ok_or_else(|| format!("{key} must be a number")),
    }
}

fn point(payload: &Value) -> Result<Point, String> {
    let (lat, lng) = (number(payload, "lat")?, number(payload, "lng")?);
    Point::new(lat, lng).map_err(|e| e.to_string())
}

/// How far `p` lies outside `b`, in metres (0 inside). An upper bound of the true distance,
/// which is what the re-home rule needs: a member is never further out than the fan-out
/// covers assume.
fn outside_m(b: &BBox, p: Point) -> f64 {
    if b.contains(p) {
        return 0.0;
    }
    let lat = p.lat.clamp(b.lat_min, b.lat_max);
    if (b.lng_min..=b.lng_max).contains(&p.lng) {
        return haversine_m(p, Point { lat, lng: p.lng });
    }
    let west = haversine_m(
        p,
        Point {
            lat,
            lng: b.lng_min,
        },
    );
    let east = haversine_m(
        p,
        Point {
            lat,
            lng: b.lng_max,
        },
    );
    west.min(east)
}

impl UserSession {
    /// `phx_join` on `realtime:nearby` with `{"config":{"nearby":{"radius_m":R}}}`.
    pub(super) fn join_nearby(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        self.authorize(&NEARBY, false, Action::Join)?;
        let limits = self.engine.cells().limits().clone();
        let payload = json_payload::<Value>(&frame.payload)
            .map_err(|e| Refusal::new(Code::MalformedJoin, e))?;
        let radius_m = match payload.pointer("/config/nearby/radius_m") {
            None | Some(Value::Null) => limits.radius_m_default,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Refusal::new(Code::InvalidRadius, "radius_m must be a number"))?,
        };
        let radius_m = locus_geo::radius(radius_m, limits.radius_m_min, limits.radius_m_max)
            .map_err(|e| Refusal::new(Code::InvalidRadius, e.to_string()))?;
        if let Some(mut old) = self.nearby.take() {
            old.leave(self.id);
            self.push(wire::close(self.vsn, old.join_ref.as_deref(), NEARBY_TOPIC));
        }
        let response = raw(r#"{"postgres_changes":[]}"#.into());
        self.push(wire::reply(
            self.vsn,
            frame.join_ref.as_deref(),
            frame.msg_ref.as_deref(),
            NEARBY_TOPIC,
            true,
            &response,
        ));
        m::join("ok");
        self.nearby = Some(NearbyState {
            join_ref: frame.join_ref.clone(),
            radius_m,
            exact: self.identity.is_user(),
            home: None,
            point: None,
            presence_sent_at: None,
            _reach: self.engine.cells().subscribe(radius_m),
        });
        Ok(())
    }

    /// `phx_leave` on `realtime:nearby`.
    pub(super) fn leave_nearby(&mut self, frame: &InboundFrame) {
        if let Some(mut st) = self.nearby.take() {
            st.leave(self.id);
        }
        self.push(wire::reply_ok(
            self.vsn,
            frame.join_ref.as_deref(),
            frame.msg_ref.as_deref(),
            NEARBY_TOPIC,
        ));
        self.push(wire::close(
            self.vsn,
            frame.join_ref.as_deref(),
            NEARBY_TOPIC,
        ));
    }

    /// `location` `{"lat","lng","accuracy_m"?}`: moves the member, re-homing it when it left its
    /// cell by more than the hysteresis; replies ok (or error, changing nothing). Sharing one's
    /// position with the subscribers around is a write: it needs `broadcast` on the topic.
    pub(super) fn location(
        &mut self,
        frame: &InboundFrame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Refusal> {
        self.authorize(&NEARBY, false, Action::Broadcast)?;
        let payload = json_payload::<Value>(&frame.payload)
            .map_err(|e| Refusal::new(Code::InvalidLocation, e))?;
        let p = point(&payload).map_err(|e| Refusal::new(Code::InvalidLocation, e))?;
        if let Some(acc) = payload.get("accuracy_m") {
            if !acc.as_f64().is_some_and(|a| a >= 0.0) {
                return Err(Refusal::new(
                    Code::InvalidLocation,
                    "accuracy_m must be a non-negative number",
                ));
            }
        }
        let limits = self.engine.cells().limits().clone();
        let (id, vsn, outbox, user_id) = (
            self.id,
            self.vsn,
            self.outbox.clone(),
            self.identity.user_id.clone(),
        );
        let st = self
            .nearby
            .as_mut()
            .ok_or_else(|| Refusal::new(Code::UnmatchedTopic, "join realtime:nearby first"))?;
        st.point = Some(p);
        let stays = st
            .home
            .as_ref()
            .is_some_and(|h| outside_m(&h.bbox, p) <= limits.rehome_hysteresis_m);
        if stays {
            let home = st.home.as_ref().expect("checked above");
            if home
                .addr
                .try_send(Move {
                    session: id,
                    point: p,
                })
                .is_err()
            {
                m::dropped(DropReason::CellMailboxFull);
            }
        } else {
            st.leave(id);
            let name = locus_geo::encode(p, limits.cell_len);
            let bbox = locus_geo::bbox(&name).expect("encode yields valid cells");
            let addr = self.engine.cells().get_or_start(&name);
            let enter = Enter {
                session: id,
                outbox,
                vsn,
                join_ref: st.join_ref.clone(),
                user_id,
                point: p,
                radius_m: st.radius_m,
                exact: st.exact,
            };
            st.home = Some(HomeCell {
                addr: addr.clone(),
                bbox,
            });
            // Waiting keeps this member's later moves behind its arrival in the new cell.
            ctx.wait(addr.send(enter).into_actor(self).map(|_, _, _| ()));
        }
        self.push(wire::reply_ok(
            self.vsn,
            frame.join_ref.as_deref(),
            frame.msg_ref.as_deref(),
            NEARBY_TOPIC,
        ));
        self.send_nearby_presence(ctx);
        Ok(())
    }

    /// Sends `presence_state` listing the members within this subscriber's radius, closest
    /// first, at most once per beacon interval.
    fn send_nearby_presence(&mut self, ctx: &mut Context<Self>) {
        let limits = self.engine.cells().limits().clone();
        let Some(st) = self.nearby.as_mut() else {
            return;
        };
        let Some(p) = st.point else { return };
        let interval = Duration::from_millis(limits.beacon_interval_ms);
        if st.presence_sent_at.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        st.presence_sent_at = Some(Instant::now());
        let (radius, exact, join_ref) = (st.radius_m, st.exact, st.join_ref.clone());
        let q = NearbyQuery {
            point: p,
            radius_m: radius,
            exact,
            limit: limits.presence_members_max,
        };
        let cells = self.engine.cells();
        let here = cells.members_near(q, self.id);
        let elsewhere = cells.remote().map(|r| r.members_near(q));
        let query = async move {
            let elsewhere = async {
                match elsewhere {
                    Some(asked) => asked.await,
                    None => Vec::new(),
                }
            };
            let (mut found, more) = futures_util::future::join(here, elsewhere).await;
            found.extend(more);
            found
        };
        let max = q.limit;
        ctx.spawn(query.into_actor(self).map(move |mut members, act, _| {
            members.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
            members.truncate(max);
            let mut state = serde_json::Map::new();
            for n in members {
                let meta = json!({
                    // Session ids repeat across nodes; with the user they do not.
                    "phx_ref": format!("nearby-{}-{}", n.user_id, n.session),
                    "user_id": &*n.user_id,
                    "lat": n.point.lat,
                    "lng": n.point.lng,
                    "distance_m": n.distance_m,
                });
                let entry = state
                    .entry(n.user_id.to_string())
                    .or_insert_with(|| json!({"metas": []}));
                if let Some(metas) = entry["metas"].as_array_mut() {
                    metas.push(meta);
                }
            }
            let payload = raw(Value::Object(state).to_string());
            act.push(encode_message(
                act.vsn,
                join_ref.as_deref(),
                None,
                NEARBY_TOPIC,
                "presence_state",
                &payload,
            ));
        }));
    }

    /// `post` `{"id","content","lat","lng","radius_m"}`: stored, replied `{"id","created_at"}`
    /// after commit, then delivered to every member within `radius_m` exactly once. A re-post
    /// of the same id gets the same reply and no second delivery.
    pub(super) fn post(&mut self, frame: &InboundFrame) -> Result<(), Refusal> {
        if self.nearby.is_none() {
            return Err(Refusal::new(
                Code::UnmatchedTopic,
                "join realtime:nearby first",
            ));
        }
        self.authorize(&NEARBY, false, Action::Post)?;
        let limits = self.engine.cells().limits().clone();
        let payload = json_payload::<Value>(&frame.payload)
            .map_err(|e| Refusal::new(Code::InvalidPost, e))?;
        let id = match payload.get("id") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= POST_ID_BYTES_MAX => s.clone(),
            _ => {
                return Err(Refusal::new(
                    Code::InvalidPost,
                    format!("id must be a string of 1..={POST_ID_BYTES_MAX} bytes"),
                ))
            }
        };
        let content = match payload.get("content") {
            Some(Value::String(s)) if s.len() <= limits.content_bytes_max => s.clone(),
            _ => {
                let max = limits.content_bytes_max;
                return Err(Refusal::new(
                    Code::InvalidPost,
                    format!("content must be a string of at most {max} bytes"),
                ));
            }
        };
        let p = point(&payload).map_err(|e| Refusal::new(Code::InvalidPost, e))?;
        let radius_m = number(&payload, "radius_m")
            .and_then(|r| {
                locus_geo::radius(r, limits.radius_m_min, limits.radius_m_max)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| Refusal::new(Code::InvalidPost, e))?;
        let post = GeoPost {
            id: id.clone(),
            user_id: self.identity.user_id.to_string(),
            content,
            point: p,
            radius_m,
            created_at_ms: 0,
            accepted_at: Instant::now(),
        };
        // The reply is pushed by the writer right after the commit, before the fan-out, so the
        // poster reads it before its own message, and it is sent even if this session is busy.
        let (outbox, vsn, to) = (self.outbox.clone(), self.vsn, ReplyTo::of(frame));
        let on_stored: OnStored = Box::new(move |result| {
            let to = to.borrow();
            let frame = match result {
                Ok(stored) => {
                    let created_at = locus_storage::time::rfc3339_ms(stored.created_at_ms);
                    let response = json!({ "id": id, "created_at": created_at }).to_string();
                    wire::reply(
                        vsn,
                        to.join_ref,
                        to.msg_ref,
                        NEARBY_TOPIC,
                        true,
                        &raw(response),
                    )
                }
                Err(e) => {
                    let refusal = Refusal::from(e.clone());
                    m::protocol_error(refusal.code.as_str());
                    wire::reply_error(vsn, to.join_ref, to.msg_ref, NEARBY_TOPIC, &refusal)
                }
            };
            let _ = outbox.push(frame);
        });
        self.engine.publish(Outgoing::Geo {
            post,
            on_stored: Some(on_stored),
        })?;
        Ok(())
    }
}

/// The topic of the nearby subscription, for the access check: parsed once, not on every
/// `location` frame (the beacon hot path).
static NEARBY: LazyLock<Topic> = LazyLock::new(|| {
    Topic::parse(NEARBY_TOPIC, NEARBY_TOPIC.len()).expect("realtime:nearby is a valid topic")
});
