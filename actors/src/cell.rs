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

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use locus_geo::{haversine_m, Point};
use locus_protocol::{encode_message, Vsn};
use serde_json::json;

use crate::config::GeoLimits;
use crate::connection::outbox::Outbox;
use crate::metrics::{self as m, DropReason, GeoCap};
use crate::topic::NEARBY_TOPIC;
use crate::wire::raw;
use crate::SessionId;

/// The first ring of a nearest-first cell search, in metres…
const RING_FIRST_M: f64 = 1_000.0;
/// …and how much wider each next ring is, up to the search radius (so at most five covers for
/// a 50 km search).
const RING_GROWTH: f64 = 4.0;

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

/// The radii of the live nearby subscriptions, a multiset of whole metres (rounded up). A
/// beacon must travel as far as the largest, and that shrinks as soon as the widest subscriber
/// leaves. Bounded: one entry per distinct radius, so at most `geo.radius_m_max` entries.
#[derive(Default)]
struct Reach {
    radii_m: Mutex<BTreeMap<u64, usize>>,
    /// The largest key, stored under the lock and read by every beacon flush without it.
    max_m: AtomicU64,
}

/// One subscription's share of the beacon reach; dropping it (leave, re-join with another
/// radius, disconnect) takes its radius out.
pub struct ReachGuard {
    reach: Arc<Reach>,
    radius_m: u64,
}

impl Drop for ReachGuard {
    fn drop(&mut self) {
        let mut radii = self.reach.radii_m.lock().expect("reach lock");
        match radii.entry(self.radius_m) {
            Entry::Occupied(mut e) if *e.get() > 1 => *e.get_mut() -= 1,
            Entry::Occupied(e) => {
                e.remove();
            }
            Entry::Vacant(_) => debug_assert!(false, "a live guard's radius is counted"),
        }
        let max = radii.keys().next_back().copied().unwrap_or(0);
        self.reach.max_m.store(max, Ordering::Release);
    }
}

/// Up to `cells_max` of `cells` (active cells by name) that can hold a member within `radius_m`
/// of `center`, nearest first: rings of growing radius are searched in turn, so a cap leaves
/// out the farthest cells, never the subscriber's own. Also whether some were left out.
/// Cost: at most five covers for 50 km, each scanning at most `2 * cells_max + 1` entries (the
/// ones already taken, then new ones up to the cap).
fn nearest<'a, V>(
    cells: &'a BTreeMap<String, V>,
    limits: &GeoLimits,
    center: Point,
    radius_m: f64,
    cells_max: usize,
) -> (Vec<&'a V>, bool) {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    let mut ring_m = radius_m.min(RING_FIRST_M);
    loop {
        let (_, prefixes) = locus_geo::cover(
            center,
            ring_m + limits.rehome_hysteresis_m,
            limits.cell_len,
            limits.cover_cells_max,
        );
        for p in &prefixes {
            let under = cells
                .range::<str, _>((Bound::Included(p.as_str()), Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(p.as_str()));
            for (name, v) in under {
                if !seen.insert(name.as_str()) {
                    continue;
                }
                if out.len() == cells_max {
                    return (out, true);
                }
                out.push(v);
            }
        }
        if ring_m >= radius_m {
            return (out, false);
        }
        ring_m = (ring_m * RING_GROWTH).min(radius_m);
    }
}

/// Up to `max` of the entries passing `keep`, starting where the previous cut-short scan
/// stopped (`cursor`), so that under a cap every entry gets its turn; and whether some were
/// left out. Walks each entry at most once (plus `cursor` skipped ones), checking none.
fn window<'a, K, V>(
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

/// Active cells by name, sorted so that the cells under a prefix are one range.
#[derive(Clone)]
pub struct CellRegistry {
    cells: Arc<RwLock<BTreeMap<String, Addr<Cell>>>>,
    limits: Arc<GeoLimits>,
    /// How far a beacon must travel: the widest live subscription.
    reach: Arc<Reach>,
}

impl CellRegistry {
    pub fn new(limits: GeoLimits) -> Self {
        CellRegistry {
            cells: Arc::new(RwLock::new(BTreeMap::new())),
            limits: Arc::new(limits),
            reach: Arc::new(Reach::default()),
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

    /// Counts a subscription of `radius_m` into the beacon reach until the guard is dropped.
    pub fn subscribe(&self, radius_m: f64) -> ReachGuard {
        debug_assert!(radius_m.is_finite() && radius_m > 0.0, "a validated radius");
        let key = radius_m.ceil() as u64;
        let mut radii = self.reach.radii_m.lock().expect("reach lock");
        *radii.entry(key).or_insert(0) += 1;
        let max = radii.keys().next_back().copied().unwrap_or(0);
        self.reach.max_m.store(max, Ordering::Release);
        ReachGuard {
            reach: self.reach.clone(),
            radius_m: key,
        }
    }

    /// How far a beacon must travel, in metres: the widest live subscription (0 with none).
    pub fn reach_m(&self) -> f64 {
        self.reach.max_m.load(Ordering::Acquire) as f64
    }

    /// Up to `cells_max` active cells that can hold a member within `radius_m` of `center`,
    /// nearest first, and whether some were left out (see [`nearest`]).
    pub fn nearest_targets(
        &self,
        center: Point,
        radius_m: f64,
        cells_max: usize,
    ) -> (Vec<Addr<Cell>>, bool) {
        let cells = self.cells.read().expect("cell map lock");
        let (found, capped) = nearest(&cells, &self.limits, center, radius_m, cells_max);
        (found.into_iter().cloned().collect(), capped)
    }

    /// Every active cell that can hold a member within `radius_m` of `point` (members may sit
    /// up to the re-home hysteresis outside their cell, so the cover is widened by it): the
    /// exact, uncapped set a stored post must reach (posts are rate-limited per connection).
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
    fn new(name: Arc<str>, registry: CellRegistry) -> Self {
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
        coarse(&self.registry.limits, p)
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
pub(crate) fn coarse_offset_m_max(limits: &GeoLimits) -> f64 {
    match limits.anonymous_cell_len {
        0 => 0.0,
        len => locus_geo::snap_offset_m_max(len),
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
        let limits = &self.registry.limits;
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
        let limits = &self.registry.limits;
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
        let every = Duration::from_millis(self.registry.limits.beacon_interval_ms);
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
        let (targets, capped) = flush_targets(&self.registry, self.centre, &batch);
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
fn flush_targets(
    registry: &CellRegistry,
    centre: Point,
    batch: &[Beacon],
) -> (Vec<Addr<Cell>>, bool) {
    let spread_m = batch
        .iter()
        .map(|b| haversine_m(centre, b.point).max(haversine_m(centre, b.coarse)))
        .fold(0.0, f64::max);
    registry.nearest_targets(
        centre,
        spread_m + registry.reach_m(),
        registry.limits.beacon_cells_max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> Point {
        Point::new(lat, lng).unwrap()
    }

    /// The point `north_m` metres north of `from`.
    fn north(from: Point, north_m: f64) -> Point {
        p(
            from.lat + (north_m / locus_geo::EARTH_RADIUS_M).to_degrees(),
            from.lng,
        )
    }

    fn registry() -> CellRegistry {
        CellRegistry::new(GeoLimits::default())
    }

    /// A 50 km subscriber widens the beacon reach only while it is subscribed: once it leaves,
    /// the reach is the widest remaining radius again, and nothing once every subscriber left.
    #[test]
    fn beacon_reach_shrinks_when_the_widest_subscriber_leaves() {
        let cells = registry();
        let local = cells.subscribe(1_000.0);
        let twin = cells.subscribe(1_000.0);
        let middle = cells.subscribe(2_500.5);
        let wide = cells.subscribe(50_000.0);
        assert_eq!(cells.reach_m(), 50_000.0);
        drop(wide);
        assert_eq!(cells.reach_m(), 2_501.0, "rounded up to whole metres");
        drop(middle);
        drop(twin);
        assert_eq!(
            cells.reach_m(),
            1_000.0,
            "the other 1 km subscriber still counts"
        );
        drop(local);
        assert_eq!(cells.reach_m(), 0.0);
    }

    /// A nearest-first search lists each active cell once, however many rings rescan it, and
    /// at its cap keeps the nearest cells and says it left some out.
    #[test]
    fn nearest_cells_are_distinct_and_capped_farthest_first() {
        let limits = GeoLimits::default();
        let centre = p(48.8566, 2.3522);
        let name = |q: Point| locus_geo::encode(q, limits.cell_len);
        let own = name(centre);
        let (near, mid, far) = (
            name(north(centre, 2_000.0)),
            name(north(centre, 12_000.0)),
            name(north(centre, 40_000.0)),
        );
        let cells: BTreeMap<String, String> = [&own, &near, &mid, &far]
            .into_iter()
            .map(|n| (n.clone(), n.clone()))
            .collect();
        let (all, capped) = nearest(&cells, &limits, centre, 50_000.0, 256);
        assert!(!capped);
        let mut distinct: Vec<&String> = all.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((all.len(), distinct.len()), (4, 4), "{all:?}");
        assert_eq!(all[0], &own, "the own cell comes first");
        let (kept, capped) = nearest(&cells, &limits, centre, 50_000.0, 2);
        assert!(capped);
        assert_eq!(kept, vec![&own, &near]);
        let (local, capped) = nearest(&cells, &limits, centre, 1_000.0, 256);
        assert!(!capped);
        assert!(
            !local.contains(&&mid) && !local.contains(&&far),
            "{local:?}"
        );
        let (none, capped) = nearest(&cells, &limits, centre, 50_000.0, 4);
        assert_eq!(
            (none.len(), capped),
            (4, false),
            "exactly at the cap is not capped"
        );
    }

    /// A scan cut short by its cap resumes after the entries it covered, so over successive
    /// scans every kept entry gets its turn; filtered-out entries neither count nor appear.
    #[test]
    fn a_capped_scan_rotates_over_every_member() {
        let entries: HashMap<u64, u64> = (0..10).map(|i| (i, i)).collect();
        let mut cursor = 0;
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let (got, capped) = window(&entries, &mut cursor, 3, |v| v % 5 != 0);
            assert!(capped && got.len() == 3, "{got:?}");
            assert!(got.iter().all(|(_, v)| **v % 5 != 0));
            seen.extend(got.into_iter().map(|(k, _)| *k));
        }
        assert_eq!(
            seen.len(),
            8,
            "all 8 kept entries within 3 scans of 3: {seen:?}"
        );
        let (all, capped) = window(&entries, &mut cursor, 8, |v| v % 5 != 0);
        assert_eq!((all.len(), capped), (8, false));
        let empty: HashMap<u64, u64> = HashMap::new();
        assert_eq!(window(&empty, &mut cursor, 3, |_| true).0.len(), 0);
    }

    /// One flush reaches each cell in range once, whatever the number of beacons (the targets
    /// come from one search around the cell, not one cover per beacon), and at most
    /// `geo.beacon_cells_max` of them, the nearest.
    #[test]
    fn a_flush_reaches_each_cell_once_and_at_most_the_cap() {
        actix::System::new().block_on(async {
            let limits = GeoLimits {
                beacon_cells_max: 2,
                ..GeoLimits::default()
            };
            let cells = CellRegistry::new(limits.clone());
            let _reach = cells.subscribe(20_000.0);
            let centre_cell = locus_geo::encode(p(52.52, 13.405), limits.cell_len);
            let b = locus_geo::bbox(&centre_cell).unwrap();
            let centre = p((b.lat_min + b.lat_max) / 2.0, (b.lng_min + b.lng_max) / 2.0);
            let own = cells.get_or_start(&centre_cell);
            let near = cells.get_or_start(&locus_geo::encode(north(centre, 3_000.0), 6));
            let far = cells.get_or_start(&locus_geo::encode(north(centre, 15_000.0), 6));
            let batch: Vec<Beacon> = (0..500)
                .map(|i| {
                    let at = p(
                        b.lat_min + (b.lat_max - b.lat_min) * (i as f64 / 500.0),
                        b.lng_min + (b.lng_max - b.lng_min) * ((i * 7 % 500) as f64 / 500.0),
                    );
                    Beacon {
                        session: i,
                        user_id: Arc::from("u"),
                        point: at,
                        coarse: coarse(&limits, at),
                    }
                })
                .collect();
            let (targets, capped) = flush_targets(&cells, centre, &batch);
            assert!(capped, "three cells in reach, two allowed");
            assert_eq!(targets, vec![own.clone(), near.clone()]);
            let wide = CellRegistry {
                limits: Arc::new(GeoLimits::default()),
                ..cells.clone()
            };
            let (targets, capped) = flush_targets(&wide, centre, &batch);
            assert!(!capped);
            assert_eq!(targets.len(), 3, "each cell once");
            assert!(targets.contains(&far));
        });
    }
}
