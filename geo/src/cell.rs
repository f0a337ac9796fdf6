//! The geohash wrapper. Fixes, relative to `geohash` 0.13.2 (verified defects):
//! - the north pole (lat 90) encoded as the south pole: latitude is clamped just below 90;
//! - longitude 180 is mapped to -180 explicitly (the same meridian), never by accident;
//! - `decode("")` answering "the whole world" (or panicking): empty and invalid cells are
//!   refused before the crate sees them;
//! - neighbours of the top (bottom) row wrapping to the opposite pole: a cell touching a pole
//!   has no neighbour beyond it;
//! - upper-case input is accepted by normalising to lower case.

use crate::{GeoError, Point};

/// Longest geohash accepted (the crate's limit).
pub const CELL_LEN_MAX: usize = 12;
const ALPHABET: &str = "0123456789bcdefghjkmnpqrstuvwxyz";
/// Latitudes at or above 90 are encoded as this (inside the top row).
const LAT_BELOW_NORTH_POLE: f64 = 90.0 - 1e-9;

/// A cell's bounds in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub lat_min: f64,
    pub lat_max: f64,
    pub lng_min: f64,
    pub lng_max: f64,
}

impl BBox {
    pub fn contains(&self, p: Point) -> bool {
        (self.lat_min..=self.lat_max).contains(&p.lat)
            && (self.lng_min..=self.lng_max).contains(&p.lng)
    }
}

/// The cell of length `len` (1..=12) containing `p`.
pub fn encode(p: Point, len: usize) -> String {
    assert!(
        (1..=CELL_LEN_MAX).contains(&len),
        "cell length {len} out of 1..={CELL_LEN_MAX}"
    );
    let lat = p.lat.min(LAT_BELOW_NORTH_POLE);
    let lng = if p.lng >= 180.0 { -180.0 } else { p.lng };
    geohash::encode(geohash::Coord { x: lng, y: lat }, len)
        .expect("validated, clamped coordinates encode")
}

/// Normalises and validates a cell name (lower-cased, 1..=12 base32 characters).
pub fn parse(cell: &str) -> Result<String, GeoError> {
    let lower = cell.to_ascii_lowercase();
    if lower.is_empty()
        || lower.len() > CELL_LEN_MAX
        || !lower.chars().all(|c| ALPHABET.contains(c))
    {
        return Err(GeoError::Cell(cell.to_owned()));
    }
    Ok(lower)
}

/// The bounds of a cell.
pub fn bbox(cell: &str) -> Result<BBox, GeoError> {
    let cell = parse(cell)?;
    let r = geohash::decode_bbox(&cell).map_err(|_| GeoError::Cell(cell.clone()))?;
    Ok(BBox {
        lat_min: r.min().y,
        lat_max: r.max().y,
        lng_min: r.min().x,
        lng_max: r.max().x,
    })
}

/// The distinct cells adjacent to `cell` (up to 8): longitude wraps at the antimeridian;
/// nothing lies beyond a pole.
pub fn neighbors(cell: &str) -> Result<Vec<String>, GeoError> {
    let cell = parse(cell)?;
    let b = bbox(&cell)?;
    let n = geohash::neighbors(&cell).map_err(|_| GeoError::Cell(cell.clone()))?;
    let mut out: Vec<String> = Vec::with_capacity(8);
    let at_north = b.lat_max >= 90.0;
    let at_south = b.lat_min <= -90.0;
    for (dir, c) in [
        ("n", n.n),
        ("ne", n.ne),
        ("e", n.e),
        ("se", n.se),
        ("s", n.s),
        ("sw", n.sw),
        ("w", n.w),
        ("nw", n.nw),
    ] {
        if (at_north && dir.starts_with('n')) || (at_south && dir.starts_with('s')) {
            continue;
        }
        if c != cell && !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The centre of the cell of length `len` holding `p`: `p` coarsened to that cell. Every point
/// of a cell snaps to the same centre, so repeated samples of a position never average out to
/// it (as rounding plus noise would).
pub fn snap(p: Point, len: usize) -> Point {
    let b = bbox(&encode(p, len)).expect("encode yields valid cells");
    Point {
        lat: (b.lat_min + b.lat_max) / 2.0,
        lng: (b.lng_min + b.lng_max) / 2.0,
    }
}

/// The farthest [`snap`] moves a point, in metres: half a cell's diagonal where cells are
/// widest, at the equator.
pub fn snap_offset_m_max(len: usize) -> f64 {
    let (h, w) = cell_size_deg(len);
    crate::haversine_m(
        Point { lat: 0.0, lng: 0.0 },
        Point {
            lat: h / 2.0,
            lng: w / 2.0,
        },
    )
}

/// Cell height and width in degrees for a cell length.
pub fn cell_size_deg(len: usize) -> (f64, f64) {
    let bits = 5 * len as u32;
    let lng_bits = bits.div_ceil(2);
    let lat_bits = bits / 2;
    (
        180.0 / f64::from(1u32 << lat_bits),
        360.0 / f64::from(1u32 << lng_bits),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> Point {
        Point::new(lat, lng).unwrap()
    }

    #[test]
    fn known_answer_vectors() {
        assert_eq!(encode(p(37.8324, 112.5584), 9), "ww8p1r4t8");
        assert_eq!(encode(p(35.3003, -120.6623), 5), "9q60y");
        assert_eq!(encode(p(0.0, -180.0), 5), "80000");
        let mut n = neighbors("9q60y60rhs").unwrap();
        n.sort();
        let mut want = vec![
            "9q60y60rht",
            "9q60y60rhv",
            "9q60y60rhu",
            "9q60y60rhg",
            "9q60y60rhe",
            "9q60y60rh7",
            "9q60y60rhk",
            "9q60y60rhm",
        ];
        want.sort();
        assert_eq!(n, want);
        assert!(
            neighbors("xzrbx").unwrap().contains(&"8p208".to_owned()),
            "east wraps the antimeridian"
        );
    }

    #[test]
    fn the_north_pole_stays_north() {
        let c = encode(p(90.0, 0.0), 9);
        assert!(
            bbox(&c).unwrap().lat_max >= 90.0,
            "{c} must be in the top row"
        );
        let c = encode(p(90.0, 180.0), 9);
        assert!(bbox(&c).unwrap().lat_max >= 90.0);
        assert!(bbox(&encode(p(0.0, 180.0), 5)).unwrap().lng_min <= -180.0 + 1e-9);
    }

    #[test]
    fn polar_rows_have_no_neighbour_beyond_the_pole() {
        for n in neighbors("upzpg").unwrap() {
            assert!(bbox(&n).unwrap().lat_min > 0.0, "{n} wrapped to the south");
        }
        for n in neighbors(&encode(p(-90.0, 10.0), 5)).unwrap() {
            assert!(bbox(&n).unwrap().lat_max < 0.0, "{n} wrapped to the north");
        }
    }

    #[test]
    fn bad_cells_are_refused_and_case_is_normalised() {
        for bad in ["", "a", "9q60yi", "0123456789bcd"] {
            assert!(bbox(bad).is_err(), "{bad:?}");
            assert!(neighbors(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("9Q60Y").unwrap(), "9q60y");
    }

    #[test]
    fn cell_sizes_match_the_table() {
        let (h, w) = cell_size_deg(6);
        assert!((h - 180.0 / 32768.0).abs() < 1e-12 && (w - 360.0 / 32768.0).abs() < 1e-12);
        let (h, w) = cell_size_deg(5);
        assert!((h - 180.0 / 4096.0).abs() < 1e-12 && (w - 360.0 / 8192.0).abs() < 1e-12);
    }

    #[test]
    fn snapping_gives_the_cell_centre() {
        let exact = p(48.858_37, 2.294_48);
        let coarse = snap(exact, 6);
        assert_eq!(
            encode(coarse, 6),
            encode(exact, 6),
            "the centre is in the cell"
        );
        assert_eq!(snap(p(48.8569, 2.2958), 6), coarse, "one centre per cell");
        assert!(crate::haversine_m(exact, coarse) <= snap_offset_m_max(6));
        assert!(
            (600.0..700.0).contains(&snap_offset_m_max(6)),
            "len 6: 1.2 km x 0.6 km"
        );
    }

    proptest::proptest! {
        /// The cell of a point contains it, including at ±90, ±180 and -0.0.
        #[test]
        fn encode_contains_the_point(lat in -90.0f64..=90.0, lng in -180.0f64..=180.0, len in 1usize..=9) {
            let pt = p(lat, lng);
            let b = bbox(&encode(pt, len)).unwrap();
            let lng_in = if pt.lng >= 180.0 { -180.0 } else { pt.lng };
            proptest::prop_assert!(b.lat_min <= pt.lat && pt.lat <= b.lat_max);
            proptest::prop_assert!(b.lng_min <= lng_in && lng_in <= b.lng_max);
        }

        /// A snapped point stays in its cell, within the bound of its offset.
        #[test]
        fn snap_stays_in_the_cell(lat in -90.0f64..=90.0, lng in -180.0f64..=180.0, len in 1usize..=9) {
            let pt = p(lat, lng);
            let coarse = snap(pt, len);
            proptest::prop_assert_eq!(encode(coarse, len), encode(pt, len));
            proptest::prop_assert!(crate::haversine_m(pt, coarse) <= snap_offset_m_max(len) + 1e-6);
        }

        /// Neighbours are distinct from the cell and never cross a pole.
        #[test]
        fn neighbours_are_distinct_and_stay_on_their_side(lat in -90.0f64..=90.0, lng in -180.0f64..=180.0, len in 2usize..=8) {
            let c = encode(p(lat, lng), len);
            let n = neighbors(&c).unwrap();
            proptest::prop_assert!(!n.contains(&c));
            let b = bbox(&c).unwrap();
            for x in &n {
                let nb = bbox(x).unwrap();
                proptest::prop_assert!((nb.lat_min - b.lat_min).abs() <= 2.0 * (b.lat_max - b.lat_min) + 1e-9);
            }
        }
    }
}
