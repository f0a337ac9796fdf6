//! Covering a circle with geohash cells: every point within `radius_m` of the centre lies in
//! one of the returned cells, across the antimeridian and at the poles.
//!
//! The circle's exact latitude/longitude bounding box (a spherical cap's longitude extent is
//! `asin(sin d / cos φ)`; a cap reaching a pole spans every longitude) is split at ±180 and
//! every cell of the chosen length inside it is listed. The length is the longest (finest) one,
//! up to `len_max`, whose cover holds at most `cells_max` cells: fine cells keep index scans
//! and fan-outs tight, and the bound keeps the cost fixed near the poles.

use crate::cell::{cell_size_deg, encode};
use crate::{Point, EARTH_RADIUS_M};

/// Slack added to the bounding box, in degrees, against floating-point rounding.
const BBOX_SLACK_DEG: f64 = 1e-9;

/// The longest cell length whose height and width at `lat` are both at least `radius_m`
/// (then the 3×3 block around a point's cell covers its circle); 1 when even the largest cells
/// are smaller.
pub fn precision_for_radius(lat: f64, radius_m: f64) -> usize {
    let m_per_deg = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
    let cos_lat = lat.to_radians().cos().max(0.0);
    (1..=crate::CELL_LEN_MAX)
        .rev()
        .find(|&len| {
            let (h, w) = cell_size_deg(len);
            h * m_per_deg >= radius_m && w * m_per_deg * cos_lat >= radius_m
        })
        .unwrap_or(1)
}

/// The latitude range and longitude ranges (split at the antimeridian) of the circle: every
/// point within `radius_m` of `center` has its latitude in the first and its longitude in one
/// of the second.
pub fn circle_bounds(center: Point, radius_m: f64) -> ((f64, f64), Vec<(f64, f64)>) {
    let d = radius_m / EARTH_RADIUS_M;
    let d_deg = d.to_degrees();
    let lat_min = (center.lat - d_deg - BBOX_SLACK_DEG).max(-90.0);
    let lat_max = (center.lat + d_deg + BBOX_SLACK_DEG).min(90.0);
    let full = vec![(-180.0, 180.0)];
    if lat_max >= 90.0 || lat_min <= -90.0 {
        return ((lat_min, lat_max), full);
    }
    let s = d.sin() / center.lat.to_radians().cos();
    if s >= 1.0 {
        return ((lat_min, lat_max), full);
    }
    let dlng = s.asin().to_degrees() + BBOX_SLACK_DEG;
    let (lo, hi) = (center.lng - dlng, center.lng + dlng);
    let lngs = if hi - lo >= 360.0 {
        full
    } else if lo < -180.0 {
        vec![(lo + 360.0, 180.0), (-180.0, hi)]
    } else if hi > 180.0 {
        vec![(lo, 180.0), (-180.0, hi - 360.0)]
    } else {
        vec![(lo, hi)]
    };
    ((lat_min, lat_max), lngs)
}

fn index_range(lo: f64, hi: f64, origin: f64, step: f64, count: u64) -> (u64, u64) {
    let idx = |v: f64| (((v - origin) / step).floor().max(0.0) as u64).min(count - 1);
    (idx(lo), idx(hi))
}

fn cells_in(len: usize, lat: (f64, f64), lngs: &[(f64, f64)]) -> (u64, Vec<(u64, u64)>) {
    let (h, w) = cell_size_deg(len);
    let rows = (180.0 / h).round() as u64;
    let cols = (360.0 / w).round() as u64;
    let (i0, i1) = index_range(lat.0, lat.1, -90.0, h, rows);
    let col_ranges: Vec<(u64, u64)> = lngs
        .iter()
        .map(|&(lo, hi)| index_range(lo, hi, -180.0, w, cols))
        .collect();
    let n_cols: u64 = col_ranges.iter().map(|(a, b)| b - a + 1).sum();
    (
        (i1 - i0 + 1) * n_cols,
        std::iter::once((i0, i1)).chain(col_ranges).collect(),
    )
}

/// Cells of one length (≤ `len_max`) whose union contains every point within `radius_m` of
/// `center`; at most `cells_max` of them unless even length 1 needs more (never: 32 cells).
/// Returns the length used and the cells, without duplicates.
pub fn cover(
    center: Point,
    radius_m: f64,
    len_max: usize,
    cells_max: usize,
) -> (usize, Vec<String>) {
    let (lat, lngs) = circle_bounds(center, radius_m);
    let mut len = precision_for_radius(center.lat, radius_m)
        .min(len_max)
        .max(1);
    let (mut count, mut ranges) = cells_in(len, lat, &lngs);
    while count > cells_max as u64 && len > 1 {
        len -= 1;
        (count, ranges) = cells_in(len, lat, &lngs);
    }
    let (h, w) = cell_size_deg(len);
    let (i0, i1) = ranges[0];
    let mut out: Vec<String> = Vec::with_capacity(count as usize);
    for i in i0..=i1 {
        let cell_lat = -90.0 + (i as f64 + 0.5) * h;
        for &(j0, j1) in &ranges[1..] {
            for j in j0..=j1 {
                let cell_lng = -180.0 + (j as f64 + 0.5) * w;
                let c = encode(
                    Point {
                        lat: cell_lat,
                        lng: cell_lng,
                    },
                    len,
                );
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    (len, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haversine_m;
    use proptest::prelude::*;

    /// The point `dist_m` from `from` along `bearing_deg`.
    fn destination(from: Point, bearing_deg: f64, dist_m: f64) -> Point {
        let (phi1, lambda1) = (from.lat.to_radians(), from.lng.to_radians());
        let (theta, delta) = (bearing_deg.to_radians(), dist_m / EARTH_RADIUS_M);
        let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos())
            .clamp(-1.0, 1.0)
            .asin();
        let lambda2 = lambda1
            + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
        let lng = (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
        Point::new(
            phi2.to_degrees().clamp(-90.0, 90.0),
            lng.clamp(-180.0, 180.0),
        )
        .unwrap()
    }

    fn centers() -> impl Strategy<Value = Point> {
        prop_oneof![
            (-90.0f64..=90.0, -180.0f64..=180.0),
            (85.0f64..=90.0, -180.0f64..=180.0),
            (-90.0f64..=-85.0, -180.0f64..=180.0),
            (-89.0f64..=89.0, 179.99f64..=180.0),
            (-89.0f64..=89.0, -180.0f64..=-179.99),
        ]
        .prop_map(|(lat, lng)| Point::new(lat, lng).unwrap())
    }

    #[test]
    fn precision_follows_the_radius_rule() {
        assert_eq!(precision_for_radius(0.0, 1_000.0), 5, "len 6 is 611 m tall");
        assert_eq!(precision_for_radius(55.0, 1_000.0), 5);
        assert_eq!(
            precision_for_radius(0.0, 100.0),
            7,
            "len 7 is 153 m by 153 m"
        );
        assert_eq!(precision_for_radius(0.0, 50_000.0), 3);
    }

    #[test]
    fn covers_split_at_the_antimeridian_and_span_the_pole() {
        let (_, cells) = cover(Point::new(0.0, 179.9999).unwrap(), 500.0, 6, 64);
        let east = cells
            .iter()
            .any(|c| crate::bbox(c).unwrap().lng_max >= 180.0);
        let west = cells
            .iter()
            .any(|c| crate::bbox(c).unwrap().lng_min <= -180.0);
        assert!(east && west, "{cells:?}");
        let (len, cells) = cover(Point::new(89.999, 0.0).unwrap(), 1_000.0, 6, 64);
        assert!(cells.len() <= 64 && len >= 1);
        let lngs: Vec<f64> = cells
            .iter()
            .map(|c| crate::bbox(c).unwrap().lng_min)
            .collect();
        assert!(
            lngs.contains(&-180.0) && lngs.iter().any(|&l| l > 0.0),
            "all longitudes meet at the pole"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Every point within r of the centre lies in a covering cell — at the poles, near ±180,
        /// everywhere.
        #[test]
        fn cover_contains_every_point_within_radius(
            center in centers(),
            radius in 1.0f64..=50_000.0,
            bearing in 0.0f64..360.0,
            frac in 0.0f64..=1.0,
            len_max in 1usize..=9,
        ) {
            let p = destination(center, bearing, radius * frac);
            prop_assume!(haversine_m(center, p) <= radius);
            let (len, cells) = cover(center, radius, len_max, 64);
            prop_assert!(len <= len_max);
            let cell = encode(p, len);
            prop_assert!(cells.contains(&cell), "{:?} r={} p={:?} cell {} not in {:?}", center, radius, p, cell, cells);
        }
    }
}
