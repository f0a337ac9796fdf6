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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_geo::{haversine_m, Point};
use locus_protocol::{encode_message, Vsn};
use serde_json::json;

use crate::config::GeoLimits;
use crate::metrics::{self as m, DropReason};
use crate::outbox::Outbox;
use crate::wire::raw;
use crate::SessionId;

/// The topic of the moving subscription.
pub const NEARBY_TOPIC: &str = "realtime:nearby";

struct CellMember {
    outbox: Outbox,
    vsn: Vsn,
    join_ref: Option<String>,
    user_id: Arc<str>,
    point: Point,
    radius_m: f64,
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
}

/// A member nearby, for presence lists.
#[derive(Debug, Clone)]
pub struct NearbyMember {
    pub session: SessionId,
    pub user_id: Arc<str>,
    pub point: Point,
    pub distance_m: f64,
}

/// Active cells by name, sorted so that the cells under a prefix are one range.
#[derive(Clone)]
pub struct CellRegistry {
    cells: Arc<RwLock<BTreeMap<String, Addr<Cell>>>>,
    limits: Arc<GeoLimits>,
    /// The largest subscription radius seen (f64 bits): how far a beacon must travel.
    radius_max_bits: Arc<AtomicU64>,
}

impl CellRegistry {
    pub fn new(limits: GeoLimits) -> Self {
        CellRegistry {
            cells: Arc::new(RwLock::new(BTreeMap::new())),
            limits: Arc::new(limits),
            radius_max_bits: Arc::new(AtomicU64::new(0f64.to_bits())),
        }
    }

    pub fn limits(&self) -> &GeoLimits {
        &self.limits
    }

    /// The cell `name`, started on the current arbiter if needed.
    pub fn get_or_start(&self, name: &str) -> Addr<Cell> {
        if let Some(c) = self.cells.read().expect("cell map lock").get(name) {
            if c.connected() {
                return c.clone();
            }
        }
        let mut cells = self.cells.write().expect("cell map lock");
        match cells.get(name) {
            Some(c) if c.connected() => c.clone(),
            _ => {
                let addr = Cell::new(Arc::from(name), self.clone()).start();
                cells.insert(name.to_owned(), addr.clone());
                m::cells().increment(1.0);
                addr
            }
        }
    }

    fn remove(&self, name: &str, addr: &Addr<Cell>) {
        let mut cells = self.cells.write().expect("cell map lock");
        if cells.get(name) == Some(addr) {
            cells.remove(name);
        }
    }

    /// Records a subscription radius (beacons then travel at least that far).
    pub fn note_radius(&self, radius_m: f64) {
        let mut cur = self.radius_max_bits.load(Ordering::Relaxed);
        while f64::from_bits(cur) < radius_m {
            match self.radius_max_bits.compare_exchange_weak(
                cur,
                radius_m.to_bits(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    fn radius_max(&self) -> f64 {
        f64::from_bits(self.radius_max_bits.load(Ordering::Relaxed))
    }

    /// The active cells that can hold a member within `radius_m` of `point` (members may sit
    /// up to the re-home hysteresis outside their cell, so the cover is widened by it).
    /// Cost: one cover plus one range scan per covering cell — proportional to active cells.
    pub fn targets(&self, point: Point, radius_m: f64) -> Vec<Addr<Cell>> {
        let l = &self.limits;
        let (_, prefixes) = locus_geo::cover(
            point,
            radius_m + l.rehome_hysteresis_m,
            l.cell_len,
            l.cover_cells_max,
        );
        let cells = self.cells.read().expect("cell map lock");
        let mut out = Vec::new();
        for p in &prefixes {
            out.extend(
                cells
                    .range(p.clone()..)
                    .take_while(|(k, _)| k.starts_with(p.as_str()))
                    .map(|(_, a)| a.clone()),
            );
        }
        out
    }

    /// Number of active cells.
    pub fn len(&self) -> usize {
        self.cells.read().expect("cell map lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Cell {
    name: Arc<str>,
    members: HashMap<SessionId, CellMember>,
    registry: CellRegistry,
    /// Latest position per member since the last beacon flush.
    pending: HashMap<SessionId, Beacon>,
    flush_timer: Option<SpawnHandle>,
}

impl Cell {
    fn new(name: Arc<str>, registry: CellRegistry) -> Self {
        Cell {
            name,
            members: HashMap::new(),
            registry,
            pending: HashMap::new(),
            flush_timer: None,
        }
    }
}

impl Actor for Cell {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.registry.limits.cell_mailbox_capacity);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.registry.remove(&self.name, &ctx.address());
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

/// The members of this cell with a fresh location within `radius_m` of `point`.
#[derive(Message)]
#[rtype(result = "Vec<NearbyMember>")]
pub struct NearbyMembers {
    pub point: Point,
    pub radius_m: f64,
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
            radius_m: msg.radius_m,
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
        let Some(member) = self.members.get_mut(&msg.session) else {
            return;
        };
        member.point = msg.point;
        member.located_at = Instant::now();
        let (user_id, point) = (member.user_id.clone(), member.point);
        m::beacon("in");
        if self
            .pending
            .insert(
                msg.session,
                Beacon {
                    session: msg.session,
                    user_id,
                    point,
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

    /// Delivers each beacon to the members (other than its sender) whose radius holds it.
    fn handle(&mut self, Beacons(beacons): Beacons, _: &mut Self::Context) {
        let ttl = Duration::from_millis(self.registry.limits.beacon_ttl_ms);
        let mut sent = 0;
        for member in self
            .members
            .values()
            .filter(|m| m.located_at.elapsed() <= ttl)
        {
            for b in beacons.iter() {
                if b.user_id == member.user_id {
                    continue;
                }
                let distance = haversine_m(member.point, b.point);
                if distance > member.radius_m {
                    continue;
                }
                let payload = json!({"user_id": &*b.user_id, "lat": b.point.lat, "lng": b.point.lng, "distance_m": distance});
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

    fn handle(&mut self, msg: NearbyMembers, _: &mut Self::Context) -> Self::Result {
        let ttl = Duration::from_millis(self.registry.limits.beacon_ttl_ms);
        MessageResult(
            self.members
                .iter()
                .filter(|(_, m)| m.located_at.elapsed() <= ttl)
                .map(|(&session, m)| NearbyMember {
                    session,
                    user_id: m.user_id.clone(),
                    point: m.point,
                    distance_m: haversine_m(msg.point, m.point),
                })
                .filter(|n| n.distance_m <= msg.radius_m)
                .collect(),
        )
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
            },
        );
        self.arm_flush(ctx);
    }

    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_timer.is_some() {
            return;
        }
        let every = Duration::from_millis(self.registry.limits.beacon_interval_ms);
        self.flush_timer = Some(ctx.run_later(every, |cell, _| {
            cell.flush_timer = None;
            cell.flush_beacons();
        }));
    }

    /// Sends the pending beacons, once, to every active cell that can hold a subscriber in range.
    fn flush_beacons(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch: Arc<Vec<Beacon>> = Arc::new(self.pending.drain().map(|(_, b)| b).collect());
        let reach = self.registry.radius_max();
        let mut targets: Vec<Addr<Cell>> = Vec::new();
        for b in batch.iter() {
            for t in self.registry.targets(b.point, reach) {
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
        for t in targets {
            if t.try_send(Beacons(batch.clone())).is_err() {
                m::dropped(DropReason::CellMailboxFull);
            }
        }
    }
}
