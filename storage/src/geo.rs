//! Geo messages: their types, and the nearby search that turns a query into expanding rings of
//! geohash prefix ranges (the backends run each ring as one index scan).

use std::future::Future;

use crate::error::{self, RecordError, StoreError, KEY_TEXT_BYTES_MAX};

/// Length of the geohash stored with each geo message (4.8 m cells).
pub const GEO_INDEX_LEN: usize = 9;
/// Most prefix ranges one nearby query scans.
pub const NEARBY_CELLS_MAX: usize = 32;

/// A geo message to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGeoMessage {
    /// The client's id (idempotency per user).
    pub id: String,
    pub user_id: String,
    pub content: String,
    pub point: locus_geo::Point,
    pub radius_m: f64,
    pub created_at_ms: i64,
}

impl NewGeoMessage {
    /// Whether the message can be stored: no NUL in id, user id or content, the id within
    /// [`CLIENT_ID_BYTES_MAX`](crate::CLIENT_ID_BYTES_MAX) and the user id within [`KEY_TEXT_BYTES_MAX`].
    pub fn check(&self) -> Result<(), RecordError> {
        use error::{check_client_id, check_text};
        check_client_id(&self.id)?;
        check_text("user id", &self.user_id, KEY_TEXT_BYTES_MAX)?;
        check_text("content", &self.content, usize::MAX)
    }
}

/// The outcome of storing one geo message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoAppended {
    pub created_at_ms: i64,
    pub duplicate: bool,
}

/// A stored geo message with its distance from the query point.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyHit {
    pub message: NewGeoMessage,
    pub distance_m: f64,
}

/// `GET /api/nearby` as the store sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    pub center: locus_geo::Point,
    pub radius_m: f64,
    pub limit: usize,
    /// Only messages created at or after this (ms since the Unix epoch).
    pub since_ms: Option<i64>,
}

/// The first ring of a nearby search, as a fraction of the query radius.
const NEARBY_FIRST_RING_DIVISOR: f64 = 8.0;
/// The smallest ring radius of a nearby search, in metres.
const NEARBY_RING_MIN_M: f64 = 50.0;
/// Bounds on how much one ring of a nearby search grows the radius over the previous one.
const NEARBY_RING_GROWTH_MIN: f64 = 2.0;
const NEARBY_RING_GROWTH_MAX: f64 = 8.0;
/// Margin on the radius a ring's density predicts will hold `limit` messages.
const NEARBY_RING_MARGIN: f64 = 1.25;

/// One index scan of a nearby search, as the backends turn it into SQL: the covering cells'
/// geohash prefix ranges, plus the circle's bounding box so that the rows in the corners of
/// the cells are filtered inside the database instead of being fetched.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NearbyScan {
    /// `[lo, hi)` geohash ranges, one per covering cell.
    pub ranges: Vec<(String, String)>,
    pub lat: (f64, f64),
    /// Two longitude ranges: the same one twice unless the circle crosses ±180.
    pub lng: [(f64, f64); 2],
    /// Only messages created at or after this (ms since the Unix epoch).
    pub since_ms: i64,
}

impl NearbyQuery {
    /// The radius of the first ring of the expanding search.
    ///
    /// Why rings: a query only wants the `limit` nearest messages. In a dense area they sit in
    /// a small disc, and fetching every row of a 5 km disc to keep 50 of them costs ~100× too
    /// much. Each ring that falls short predicts, from its density, the radius that will hold
    /// `limit` (area grows with r²), so dense areas stop after one scan and sparse ones reach
    /// the full radius in two or three.
    fn first_ring(&self) -> f64 {
        (self.radius_m / NEARBY_FIRST_RING_DIVISOR)
            .max(NEARBY_RING_MIN_M)
            .min(self.radius_m)
    }

    /// The ring after one of radius `r` that held `found` (< limit) messages.
    fn next_ring(&self, r: f64, found: usize) -> f64 {
        let growth = ((self.limit as f64 / found.max(1) as f64).sqrt() * NEARBY_RING_MARGIN)
            .clamp(NEARBY_RING_GROWTH_MIN, NEARBY_RING_GROWTH_MAX);
        (r * growth).min(self.radius_m)
    }

    /// The index scan that finds every message within `radius_m` of the centre.
    pub(crate) fn scan(&self, radius_m: f64) -> NearbyScan {
        let (_, cells) = locus_geo::cover(self.center, radius_m, GEO_INDEX_LEN, NEARBY_CELLS_MAX);
        let (lat, lngs) = locus_geo::circle_bounds(self.center, radius_m);
        let lng = match lngs.as_slice() {
            [a, b] => [*a, *b],
            [a] => [*a, *a],
            _ => [(-180.0, 180.0); 2],
        };
        NearbyScan {
            // '~' sorts after every base32 character, so [cell, cell~) is exactly the prefix.
            ranges: cells
                .into_iter()
                .map(|c| (c.clone(), format!("{c}~")))
                .collect(),
            lat,
            lng,
            since_ms: self.since_ms.unwrap_or(i64::MIN),
        }
    }

    /// Runs the expanding search with a backend's scan: once a ring holds `limit` messages
    /// within its radius, no message outside it can be among the `limit` nearest.
    pub(crate) async fn search<F, Fut>(&self, mut fetch: F) -> Result<Vec<NearbyHit>, StoreError>
    where
        F: FnMut(NearbyScan) -> Fut,
        Fut: Future<Output = Result<Vec<NewGeoMessage>, StoreError>>,
    {
        let mut r = self.first_ring();
        loop {
            let hits = self.finish(fetch(self.scan(r)).await?, r);
            if hits.len() >= self.limit || r >= self.radius_m {
                return Ok(hits);
            }
            r = self.next_ring(r, hits.len());
        }
    }

    /// Keeps the candidates within `radius_m`, nearest first, at most `limit`.
    fn finish(&self, candidates: Vec<NewGeoMessage>, radius_m: f64) -> Vec<NearbyHit> {
        let mut hits: Vec<NearbyHit> = candidates
            .into_iter()
            .filter(|m| self.since_ms.is_none_or(|s| m.created_at_ms >= s))
            .map(|m| NearbyHit {
                distance_m: locus_geo::haversine_m(self.center, m.point),
                message: m,
            })
            .filter(|h| h.distance_m <= radius_m)
            .collect();
        hits.sort_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then_with(|| a.message.id.cmp(&b.message.id))
        });
        hits.truncate(self.limit);
        hits
    }
}

/// Splits a geo batch into first occurrences (to insert) and in-batch repeats.
pub(crate) fn first_occurrences(batch: &[NewGeoMessage]) -> Vec<Option<usize>> {
    let mut seen: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    batch
        .iter()
        .enumerate()
        .map(
            |(i, m)| match seen.get(&(m.user_id.as_str(), m.id.as_str())) {
                Some(&first) => Some(first),
                None => {
                    seen.insert((&m.user_id, &m.id), i);
                    None
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use locus_geo::{haversine_m, Point};
    use proptest::prelude::*;

    fn near(center: (f64, f64), spread: f64) -> impl Strategy<Value = Point> {
        (-spread..=spread, -spread..=spread).prop_map(move |(dlat, dlng)| {
            let lat = (center.0 + dlat).clamp(-90.0, 90.0);
            let lng = (center.1 + dlng + 540.0).rem_euclid(360.0) - 180.0;
            Point::new(lat, lng).unwrap()
        })
    }

    fn scenario() -> impl Strategy<Value = (Point, f64, Vec<Point>)> {
        prop_oneof![
            Just(((0.0, 180.0), 0.05)),
            Just(((89.95, 0.0), 0.08)),
            Just(((-89.97, 45.0), 0.05)),
            Just(((48.85, 2.35), 0.2)),
        ]
        .prop_flat_map(|(c, spread)| {
            (
                near(c, spread),
                1.0f64..=20_000.0,
                proptest::collection::vec(near(c, spread), 1..120),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// The index path (the expanding rings' prefix ranges and bounding boxes, as a backend
        /// applies them, then the exact filter) returns exactly what a brute-force haversine
        /// scan returns, in distance order, whatever the limit — across the antimeridian and
        /// near both poles.
        #[test]
        fn nearby_equals_brute_force((center, radius, points) in scenario(), limit in 1usize..150) {
            let messages: Vec<NewGeoMessage> = points
                .iter()
                .enumerate()
                .map(|(i, p)| NewGeoMessage {
                    id: format!("{i}"),
                    user_id: "u".into(),
                    content: String::new(),
                    point: *p,
                    radius_m: 1.0,
                    created_at_ms: 0,
                })
                .collect();
            let q = NearbyQuery { center, radius_m: radius, limit, since_ms: None };
            // What a backend's scan returns: rows in the ranges and inside the box.
            let scan = |scan: NearbyScan| {
                let rows: Vec<NewGeoMessage> = messages
                    .iter()
                    .filter(|m| {
                        let h = locus_geo::encode(m.point, GEO_INDEX_LEN);
                        let (lat, lng) = (m.point.lat, m.point.lng);
                        scan.ranges.iter().any(|(lo, hi)| h >= *lo && h < *hi)
                            && (scan.lat.0..=scan.lat.1).contains(&lat)
                            && scan.lng.iter().any(|r| (r.0..=r.1).contains(&lng))
                    })
                    .cloned()
                    .collect();
                std::future::ready(Ok(rows))
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got: Vec<String> = rt
                .block_on(q.search(scan))
                .unwrap()
                .into_iter()
                .map(|h| h.message.id)
                .collect();
            let mut brute: Vec<(f64, String)> = messages
                .iter()
                .map(|m| (haversine_m(center, m.point), m.id.clone()))
                .filter(|(d, _)| *d <= radius)
                .collect();
            brute.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let want: Vec<String> = brute.into_iter().take(limit).map(|(_, id)| id).collect();
            prop_assert_eq!(got, want);
        }
    }
}
