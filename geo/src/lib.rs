//! Geo for Locus: validated points, great-circle distance, and geohash cells that behave at the
//! poles, at the antimeridian and on bad input.
//!
//! # Layout
//! - [`Point`]: a validated latitude/longitude; every coordinate entering Locus goes through it.
//! - [`haversine_m`]: distance on a sphere of radius [`EARTH_RADIUS_M`].
//! - [`cell`]: the geohash wrapper (encode with the poles clamped, bounding boxes, neighbours
//!   without polar wrap-around, input validation, snapping a point to its cell's centre).
//! - [`cover`]: the cells that can contain a point within a radius of a centre.

pub mod cell;
pub mod cover;

pub use cell::{bbox, encode, neighbors, snap, snap_offset_m_max, BBox, CELL_LEN_MAX};
pub use cover::{circle_bounds, cover, precision_for_radius};

/// Mean Earth radius (IUGG), in metres. One radius everywhere: distances, covers, queries.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Why a coordinate or cell was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    #[error("latitude must be a finite number in -90..=90, got {0}")]
    Latitude(f64),
    #[error("longitude must be a finite number in -180..=180, got {0}")]
    Longitude(f64),
    #[error("a geohash is 1..=12 characters of 0123456789bcdefghjkmnpqrstuvwxyz, got {0:?}")]
    Cell(String),
    #[error("radius must be a finite number of metres in {min}..={max}, got {got}")]
    Radius { got: f64, min: f64, max: f64 },
}

/// A validated point: finite, |lat| ≤ 90, |lng| ≤ 180.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lng: f64,
}

impl Point {
    pub fn new(lat: f64, lng: f64) -> Result<Point, GeoError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::Latitude(lat));
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(GeoError::Longitude(lng));
        }
        // -0.0 and 0.0 are the same place; keep one representation.
        Ok(Point {
            lat: lat + 0.0,
            lng: lng + 0.0,
        })
    }
}

/// Great-circle distance in metres (haversine, R = [`EARTH_RADIUS_M`]).
pub fn haversine_m(a: Point, b: Point) -> f64 {
    let (phi1, phi2) = (a.lat.to_radians(), b.lat.to_radians());
    let dphi = phi2 - phi1;
    let dlambda = (b.lng - a.lng).to_radians();
    let h = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Checks a radius against its bounds (metres).
pub fn radius(r: f64, min: f64, max: f64) -> Result<f64, GeoError> {
    if r.is_finite() && (min..=max).contains(&r) {
        Ok(r)
    } else {
        Err(GeoError::Radius { got: r, min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_the_published_vectors() {
        let palermo = Point::new(38.115556, 13.361389).unwrap();
        let catania = Point::new(37.502669, 15.087269).unwrap();
        assert!((haversine_m(palermo, catania) - 166_227.59).abs() < 0.05);
        let east = Point::new(0.0, 179.999).unwrap();
        let west = Point::new(0.0, -179.999).unwrap();
        assert!(
            (haversine_m(east, west) - 222.39).abs() < 0.01,
            "across the antimeridian"
        );
        assert_eq!(haversine_m(palermo, palermo), 0.0);
    }

    #[test]
    fn points_are_validated() {
        assert!(Point::new(90.0, 180.0).is_ok());
        assert!(Point::new(-90.0, -180.0).is_ok());
        for (lat, lng) in [
            (90.0001, 0.0),
            (0.0, 180.0001),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
            (-91.0, 0.0),
        ] {
            assert!(Point::new(lat, lng).is_err(), "{lat},{lng}");
        }
        assert!(Point::new(-0.0, -0.0).unwrap().lat.is_sign_positive());
        assert!(radius(0.5, 1.0, 50_000.0).is_err());
        assert!(radius(f64::NAN, 1.0, 50_000.0).is_err());
        assert_eq!(radius(1_000.0, 1.0, 50_000.0), Ok(1_000.0));
    }
}
