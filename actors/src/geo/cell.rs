//! The cell actor: one per active geohash cell (`geo.cell_len`). Owns the `realtime:nearby`
//! members whose last location lies in the cell, and serves them geo messages and beacons.
//!
//! Takes [`Enter`], [`Leave`], [`Move`], [`Fanout`], [`Beacons`], [`NearbyMembers`].
//! Emits `geo_message` (each member within the message's radius, with `distance_m`) and
//! `location` (beacons of members within the subscriber's radius, at most one per user per
//! `geo.beacon_interval_ms`, latest position wins). Stops when its last member leaves.
//!
//! Exactly-once: a member lives in one cell, and a post is sent once to each active cell of its
//! cover, so a member can receive it only from its own cell.
//!
//! Privacy: anonymous subscribers see other members' positions snapped to the centre of their
//! `geo.anonymous_cell_len` cell (and distances to that centre); authenticated ones see them
//! exactly.
//!
//! Limits: a beacon travels as far as the widest live subscription ([`ReachGuard`]), to at most
//! `geo.beacon_cells_max` cells, nearest first; a cell checks at most `geo.cell_checks_max`
//! member distances per beacon batch or presence list, rotating over its members.
//!
//! Over 400 lines: one actor with six handlers (enter, leave, move, fan-out, beacons, nearby
//! members) and the beacon flush; the registry and its tests are in registry.rs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_geo::{haversine_m, Point};
use locus_protocol::{encode_message, Vsn};
use serde_json::json;

use super::registry::CellRegistry;
use crate::config::GeoLimits;
use crate::connection::outbox::Outbox;
use crate::metrics::{self as m, DropReason, GeoCap};
use crate::topic::NEARBY_TOPIC;
use crate::wire::raw;
use crate::SessionId;

struct CellMember {
    outbox: Outbox,
    vsn: Vsn,
    join_ref: Option<String>,
    user_id: Arc<str>,
    point: Point,
    /// `point` as anonymous subscribers see it.
    coarse: Point,
    radius_m: f64,
    /// Authenticated when it joined: sees others' exact positions.
    exact: bool,
    located_at: Instant,
}

/// A stored geo message being fanned out.
#[derive(Debug)]
pub struct GeoPost {
    pub id: String,
    pub user_id: String,
    pub content: String,
    pub point: Point,
    pub radius_m: f64,
    pub created_at_ms: i64,
    /// When the post was accepted; geo fan-out latency is measured from here.
    pub accepted_at: Instant,
}

impl GeoPost {
    /// The `geo_message` payload, with `distance_m` when known.
    pub fn payload(&self, distance_m: Option<f64>) -> String {
        json!({
            "id": self.id,
            "user_id": self.user_id,
            "content": self.content,
            "lat": self.point.lat,
            "lng": self.point.lng,
            "radius_m": self.radius_m,
            "distance_m": distance_m,
            "created_at": locus_storage::time::rfc3339_ms(self.created_at_ms),
        })
        .to_string()
    }
}

/// One member's latest position, on its way to subscribers.
#[derive(Debug, Clone)]
pub struct Beacon {
    pub session: SessionId,
    pub user_id: Arc<str>,
    pub point: Point,
    /// `point` snapped to its `geo.anonymous_cell_len` cell, for anonymous subscribers.
    pub coarse: Point,
}

/// A member nearby, for presence lists.
#[derive(Debug, Clone)]
pub struct NearbyMember {
    pub session: SessionId,
    pub user_id: Arc<str>,
    /// Exact or coarse, as the asking subscriber may see it.
    pub point: Point,
    /// From the subscriber to `point`.
    pub distance_m: f64,
}

/// Up to `max` of the entries passing `keep`, starting where the previous cut-short scan
/// stopped (`cursor`), so that under a cap every entry gets its turn; and whether some were
/// left out. Walks each entry at most once (plus `cursor` skipped ones), checking none.
pub(super) fn window<'a, K, V>(
    entries: &'a HashMap<K, V>,
    cursor: &mut usize,
    max: usize,
    keep: impl Fn(&V) -> bool,
) -> (Vec<(&'a K, &'a V)>, bool) {
    let n = entries.len();
    if n == 0 {
        return (Vec::new(), false);
    }
    let start = *cursor % n;
    let mut out = Vec::with_capacity(max.min(n));
    for (i, (k, v)) in entries.iter().cycle().skip(start).take(n).enumerate() {
        if !keep(v) {
            continue;
        }
        if out.len() == max {
            *cursor = start + i;
            return (out, true);
        }
        out.push((k, v));
    }
    (out, false)
}

pub struct Cell {
    name: Arc<str>,
    /// The centre of the cell: beacon flushes search for targets around it.
    centre: Point,
    members: HashMap<SessionId, CellMember>,
    registry: CellRegistry,
    /// Latest position per member since the last beacon flush.
    pending: HashMap<SessionId, Beacon>,
    flush_timer: Option<SpawnHandle>,
    /// Where the next member scan starts after one was cut short by `geo.cell_checks_max`.
    scan_cursor: usize,
}

impl Cell {
    pub(super) fn new(name: Arc<str>, registry: CellRegistry) -> Self {
        let b = locus_geo::bbox(&name).expect("cells are named by encode");
        Cell {
            name,
            centre: Point {
                lat: (b.lat_min + b.lat_max) / 2.0,
                lng: (b.lng_min + b.lng_max) / 2.0,
            },
            members: HashMap::new(),
            registry,
            pending: HashMap::new(),
            flush_timer: None,
            scan_cursor: 0,
        }
    }

    fn coarse(&self, p: Point) -> Point {
        coarse(self.registry.limits(), p)
    }
}

/// `p` as anonymous subscribers see it.
pub(crate) fn coarse(limits: &GeoLimits, p: Point) -> Point {
    match limits.anonymous_cell_len {
        0 => p,
        len => locus_geo::snap(p, len),
    }
}

/// The farthest [`coarse`] moves a point, in metres.
pub fn coarse_offset_m_max(limits: &GeoLimits) -> f64 {
    match limits.anonymous_cell_len {
        0 => 0.0,
        len => locus_geo::snap_offset_m_max(len),
    }
}

impl Actor for Cell {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.registry.limits().cell_mailbox_capacity);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.registry.remove(&self.name, &ctx.address());
        if let Some(r) = self.registry.remote() {
            r.cell_stopped(&self.name);
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        m::cells().decrement(1.0);
    }
}

/// A member arrives in this cell (first location, or a re-home).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enter {
    pub session: SessionId,
    pub outbox: Outbox,
    pub vsn: Vsn,
    pub join_ref: Option<String>,
    pub user_id: Arc<str>,
    pub point: Point,
    pub radius_m: f64,
    /// The subscriber was authenticated when it joined: it sees exact positions.
    pub exact: bool,
}

/// A member leaves this cell (re-home, leave, disconnect).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub session: SessionId,
}

/// A member moved within (or near) this cell.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Move {
    pub session: SessionId,
    pub point: Point,
}

/// A stored geo message to deliver to members within its radius.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fanout(pub Arc<GeoPost>);

/// Beacons from a cell's flush, to deliver to members within their own radius.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Beacons(pub Arc<Vec<Beacon>>);

/// The members of this cell with a fresh location within `radius_m` of `point`, closest
/// `limit` only.
#[derive(Message)]
#[rtype(result = "Vec<NearbyMember>")]
pub struct NearbyMembers {
    pub point: Point,
    pub radius_m: f64,
    /// The asker sees exact positions (else coarse ones, also used for the radius test).
    pub exact: bool,
    pub limit: usize,
    /// The asking session, never listed.
    pub exclude: SessionId,
}

impl Handler<Enter> for Cell {
    type Result = ();

    /// Adds the member and queues its beacon.
    fn handle(&mut self, msg: Enter, ctx: &mut Self::Context) {
        let member = CellMember {
            outbox: msg.outbox,
            vsn: msg.vsn,
            join_ref: msg.join_ref,
            user_id: msg.user_id,
            point: msg.point,
            coarse: self.coarse(msg.point),
            radius_m: msg.radius_m,
            exact: msg.exact,
            located_at: Instant::now(),
        };
        self.queue_beacon(msg.session, &member, ctx);
        self.members.insert(msg.session, member);
        m::cell_members().record(self.members.len() as f64);
    }
}

impl Handler<Leave> for Cell {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        self.members.remove(&msg.session);
        self.pending.remove(&msg.session);
        if self.members.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<Move> for Cell {
    type Result = ();

    /// Updates the member's position and queues its beacon (coalesced until the next flush).
    fn handle(&mut self, msg: Move, ctx: &mut Self::Context) {
        let coarse = self.coarse(msg.point);
        let Some(member) = self.members.get_mut(&msg.session) else {
            return;
        };
        member.point = msg.point;
        member.coarse = coarse;
        member.located_at = Instant::now();
        let user_id = member.user_id.clone();
        m::beacon("in");
        if self
            .pending
            .insert(
                msg.session,
                Beacon {
                    session: msg.session,
                    user_id,
                    point: msg.point,
                    coarse,
                },
            )
            .is_some()
        {
            m::beacon("coalesced");
        }
        self.arm_flush(ctx);
    }
}

impl Handler<Fanout> for Cell {
    type Result = ();

    /// Sends the post to every member within its radius, with the member's distance.
    fn handle(&mut self, Fanout(post): Fanout, _: &mut Self::Context) {
        let mut sent = 0;
        for member in self.members.values() {
            let distance = haversine_m(post.point, member.point);
            if distance > post.radius_m {
                continue;
            }
            let payload = raw(post.payload(Some(distance)));
            let frame = encode_message(
                member.vsn,
                member.join_ref.as_deref(),
                None,
                NEARBY_TOPIC,
                "geo_message",
                &payload,
            );
            if member.outbox.push(frame).is_ok() {
                sent += 1;
            } else {
                m::dropped(DropReason::RecipientClosed);
            }
        }
        m::messages_out("geo_message", sent);
        m::geo_fanout_latency().record(post.accepted_at.elapsed().as_secs_f64());
    }
}

impl Handler<Beacons> for Cell {
    type Result = ();

    /// Delivers each beacon to the members (other than its sender) whose radius holds it, as
    /// each may see it; at most `geo.cell_checks_max` member-beacon checks.
    fn handle(&mut self, Beacons(beacons): Beacons, _: &mut Self::Context) {
        let limits = self.registry.limits();
        let (now, ttl) = (Instant::now(), Duration::from_millis(limits.beacon_ttl_ms));
        let members_max = (limits.cell_checks_max / beacons.len().max(1)).max(1);
        let (members, capped) = window(&self.members, &mut self.scan_cursor, members_max, |m| {
            now.saturating_duration_since(m.located_at) <= ttl
        });
        if capped {
            m::geo_capped(GeoCap::BeaconChecks);
        }
        let mut sent = 0;
        for (_, member) in members {
            for b in beacons.iter() {
                if b.user_id == member.user_id {
                    continue;
                }
                let shown = if member.exact { b.point } else { b.coarse };
                let distance = haversine_m(member.point, shown);
                if distance > member.radius_m {
                    continue;
                }
                let payload = json!({"user_id": &*b.user_id, "lat": shown.lat, "lng": shown.lng, "distance_m": distance});
                let frame = encode_message(
                    member.vsn,
                    member.join_ref.as_deref(),
                    None,
                    NEARBY_TOPIC,
                    "location",
                    &raw(payload.to_string()),
                );
                if member.outbox.push(frame).is_ok() {
                    sent += 1;
                }
            }
        }
        m::beacons_out(sent);
    }
}

impl Handler<NearbyMembers> for Cell {
    type Result = MessageResult<NearbyMembers>;

    /// Checks at most `geo.cell_checks_max` members; answers the closest `limit` in range.
    fn handle(&mut self, msg: NearbyMembers, _: &mut Self::Context) -> Self::Result {
        let limits = self.registry.limits();
        let (now, ttl) = (Instant::now(), Duration::from_millis(limits.beacon_ttl_ms));
        let (members, capped) = window(
            &self.members,
            &mut self.scan_cursor,
            limits.cell_checks_max,
            |m| now.saturating_duration_since(m.located_at) <= ttl,
        );
        if capped {
            m::geo_capped(GeoCap::PresenceChecks);
        }
        let mut found: Vec<NearbyMember> = members
            .into_iter()
            .filter(|(&session, _)| session != msg.exclude)
            .filter_map(|(&session, m)| {
                let shown = if msg.exact { m.point } else { m.coarse };
                let distance_m = haversine_m(msg.point, shown);
                (distance_m <= msg.radius_m).then(|| NearbyMember {
                    session,
                    user_id: m.user_id.clone(),
                    point: shown,
                    distance_m,
                })
            })
            .collect();
        if found.len() > msg.limit {
            // The asker keeps the closest `limit` of all cells, so each cell's closest suffice.
            found.select_nth_unstable_by(msg.limit, |a, b| a.distance_m.total_cmp(&b.distance_m));
            found.truncate(msg.limit);
        }
        MessageResult(found)
    }
}

impl Cell {
    fn queue_beacon(&mut self, session: SessionId, member: &CellMember, ctx: &mut Context<Self>) {
        m::beacon("in");
        self.pending.insert(
            session,
            Beacon {
                session,
                user_id: member.user_id.clone(),
                point: member.point,
                coarse: member.coarse,
            },
        );
        self.arm_flush(ctx);
    }

    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_timer.is_some() {
            return;
        }
        let every = Duration::from_millis(self.registry.limits().beacon_interval_ms);
        self.flush_timer = Some(ctx.run_later(every, |cell, _| {
            cell.flush_timer = None;
            cell.flush_beacons();
        }));
    }

    /// Sends the pending beacons, once, to the cells (nearest first, at most
    /// `geo.beacon_cells_max`) that can hold a subscriber in range.
    fn flush_beacons(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch: Arc<Vec<Beacon>> = Arc::new(self.pending.drain().map(|(_, b)| b).collect());
        let spread_m = spread_m(self.centre, &batch);
        if let Some(r) = self.registry.remote() {
            r.beacons(self.centre, spread_m, &batch);
        }
        let (targets, capped) = flush_targets(&self.registry, self.centre, spread_m, "");
        if capped {
            m::geo_capped(GeoCap::BeaconCells);
        }
        for t in targets {
            if t.try_send(Beacons(batch.clone())).is_err() {
                m::dropped(DropReason::CellMailboxFull);
            }
        }
    }
}

/// The cells a batch of beacons from the cell centred on `centre` must reach. Every beacon,
/// exact or coarse, lies within `spread` of the centre, so one nearest-first search of radius
/// `spread + reach` holds every cell any beacon could reach: one cover per ring for the whole
/// batch rather than one per beacon, and no duplicate targets to remove.
/// Beacons from another node arrive with their cell's centre and spread and reach the cells
/// under `prefix` (the area they were routed to).
pub fn flush_targets(
    registry: &CellRegistry,
    centre: Point,
    spread_m: f64,
    prefix: &str,
) -> (Vec<Addr<Cell>>, bool) {
    registry.nearest_targets(
        centre,
        spread_m + registry.reach_m(),
        registry.limits().beacon_cells_max,
        prefix,
    )
}

/// How far from `centre` the farthest beacon of `batch` lies (exact or coarse), in metres.
pub fn spread_m(centre: Point, batch: &[Beacon]) -> f64 {
    batch
        .iter()
        .map(|b| haversine_m(centre, b.point).max(haversine_m(centre, b.coarse)))
        .fold(0.0, f64::max)
}
