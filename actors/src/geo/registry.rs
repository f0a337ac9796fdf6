//! The cell registry: the active cells by name (sorted, so the cells under a geohash prefix are
//! one range), the cells a post or beacon must reach nearest first, and the beacon reach (the
//! widest live subscription).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use actix::prelude::*;
use locus_geo::Point;

use super::cell::{coarse_offset_m_max, Cell, NearbyMember, NearbyMembers};
use super::remote::GeoRemote;
use crate::config::GeoLimits;
use crate::metrics as m;

/// Slack added to fan-out covers, in metres, so a member exactly on a cell edge is never missed.
pub const COVER_SLACK_M: f64 = 1.0;

/// Who is near a point, as a `realtime:nearby` subscriber asks it (of this node's cells, or of
/// another node's).
#[derive(Debug, Clone, Copy)]
pub struct NearbyQuery {
    pub point: Point,
    pub radius_m: f64,
    /// The asker sees exact positions (else coarse ones).
    pub exact: bool,
    /// Closest this many.
    pub limit: usize,
}

/// The first ring of a nearest-first cell search, in metres…
const RING_FIRST_M: f64 = 1_000.0;
/// …and how much wider each next ring is, up to the search radius (so at most five covers for
/// a 50 km search).
const RING_GROWTH: f64 = 4.0;

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
pub(super) fn nearest<'a, V>(
    cells: &'a BTreeMap<String, V>,
    limits: &GeoLimits,
    center: Point,
    radius_m: f64,
    cells_max: usize,
    prefix: &str,
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
                .take_while(|(name, _)| name.starts_with(p.as_str()))
                .filter(|(name, _)| name.starts_with(prefix));
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

/// Active cells by name, sorted so that the cells under a prefix are one range.
#[derive(Clone)]
pub struct CellRegistry {
    cells: Arc<RwLock<BTreeMap<String, Addr<Cell>>>>,
    limits: Arc<GeoLimits>,
    /// How far a beacon must travel: the widest live subscription.
    reach: Arc<Reach>,
    /// The other nodes, once the cluster is connected (never for one node alone).
    remote: Arc<OnceLock<Arc<dyn GeoRemote>>>,
}

impl CellRegistry {
    pub fn new(limits: GeoLimits) -> Self {
        CellRegistry {
            cells: Arc::new(RwLock::new(BTreeMap::new())),
            limits: Arc::new(limits),
            reach: Arc::new(Reach::default()),
            remote: Arc::default(),
        }
    }

    /// Sends geo events to other nodes through `remote` from now on (set once, before any
    /// cell starts).
    pub fn set_remote(&self, remote: Arc<dyn GeoRemote>) {
        let _ = self.remote.set(remote);
    }

    /// The other nodes, in a cluster.
    pub fn remote(&self) -> Option<&Arc<dyn GeoRemote>> {
        self.remote.get()
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
                if let Some(r) = self.remote() {
                    r.cell_started(name);
                }
                addr
            }
        }
    }

    pub(super) fn remove(&self, name: &str, addr: &Addr<Cell>) {
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

    /// Up to `cells_max` active cells under `prefix` ("" for all) that can hold a member within
    /// `radius_m` of `center`, nearest first, and whether some were left out (see [`nearest`]).
    pub fn nearest_targets(
        &self,
        center: Point,
        radius_m: f64,
        cells_max: usize,
        prefix: &str,
    ) -> (Vec<Addr<Cell>>, bool) {
        let cells = self.cells.read().expect("cell map lock");
        let (found, capped) = nearest(&cells, &self.limits, center, radius_m, cells_max, prefix);
        (found.into_iter().cloned().collect(), capped)
    }

    /// Every active cell that can hold a member within `radius_m` of `point` (members may sit
    /// up to the re-home hysteresis outside their cell, so the cover is widened by it): the
    /// exact, uncapped set a stored post must reach (posts are rate-limited per connection).
    /// Cost: one cover plus one range scan per covering cell — proportional to active cells.
    pub fn targets(&self, point: Point, radius_m: f64) -> Vec<Addr<Cell>> {
        self.targets_under(point, radius_m, "")
    }

    /// [`targets`](Self::targets) among the cells whose name starts with `prefix` (a post
    /// another node routed to this node for that area).
    pub fn targets_under(&self, point: Point, radius_m: f64, prefix: &str) -> Vec<Addr<Cell>> {
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
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, a)| a.clone()),
            );
        }
        out
    }

    /// The members of this node's cells near `q` (never `exclude`), closest `q.limit`; asks at
    /// most `geo.presence_cells_max` cells, nearest first.
    pub fn members_near(
        &self,
        q: NearbyQuery,
        exclude: crate::SessionId,
    ) -> impl std::future::Future<Output = Vec<NearbyMember>> + 'static {
        // A coarse position can be in range while its member's cell is not.
        let snap_slack_m = if q.exact {
            0.0
        } else {
            coarse_offset_m_max(&self.limits)
        };
        let (targets, capped) = self.nearest_targets(
            q.point,
            q.radius_m + COVER_SLACK_M + snap_slack_m,
            self.limits.presence_cells_max,
            "",
        );
        if capped {
            m::geo_capped(m::GeoCap::PresenceCells);
        }
        async move {
            let asks = targets.into_iter().map(|c| {
                c.send(NearbyMembers {
                    point: q.point,
                    radius_m: q.radius_m,
                    exact: q.exact,
                    limit: q.limit,
                    exclude,
                })
            });
            let mut found: Vec<NearbyMember> = futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            found.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
            found.truncate(q.limit);
            found
        }
    }

    /// Number of active cells.
    pub fn len(&self) -> usize {
        self.cells.read().expect("cell map lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::cell::{coarse, flush_targets, spread_m, window, Beacon};
    use std::collections::HashMap;

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
        let (all, capped) = nearest(&cells, &limits, centre, 50_000.0, 256, "");
        assert!(!capped);
        let mut distinct: Vec<&String> = all.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((all.len(), distinct.len()), (4, 4), "{all:?}");
        assert_eq!(all[0], &own, "the own cell comes first");
        let (kept, capped) = nearest(&cells, &limits, centre, 50_000.0, 2, "");
        assert!(capped);
        assert_eq!(kept, vec![&own, &near]);
        let (local, capped) = nearest(&cells, &limits, centre, 1_000.0, 256, "");
        assert!(!capped);
        assert!(
            !local.contains(&&mid) && !local.contains(&&far),
            "{local:?}"
        );
        let (none, capped) = nearest(&cells, &limits, centre, 50_000.0, 4, "");
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
            let (targets, capped) = flush_targets(&cells, centre, spread_m(centre, &batch), "");
            assert!(capped, "three cells in reach, two allowed");
            assert_eq!(targets, vec![own.clone(), near.clone()]);
            let wide = CellRegistry {
                limits: Arc::new(GeoLimits::default()),
                ..cells.clone()
            };
            let (targets, capped) = flush_targets(&wide, centre, spread_m(centre, &batch), "");
            assert!(!capped);
            assert_eq!(targets.len(), 3, "each cell once");
            assert!(targets.contains(&far));
        });
    }
}
