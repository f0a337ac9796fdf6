//! `locus_geo::cover` (the geohash cells covering a circle) for radii of 100 m, 1 km and 10 km
//! at a mid-latitude city, beside the antimeridian and near the north pole, with the cell
//! lengths and bounds of its two callers (the nearby query and the cell fan-out); plus
//! `encode` at both cell lengths and `haversine_m`.
//!
//! Run: `cargo bench -p locus-geo --bench cover`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use locus_geo::{cover, encode, haversine_m, Point};

/// The nearby query: cells of length `GEO_INDEX_LEN` at most, `NEARBY_CELLS_MAX` of them
/// (locus-storage).
const QUERY_LEN_MAX: usize = 9;
const QUERY_CELLS_MAX: usize = 32;
/// The cell fan-out (`CellRegistry::targets`): the defaults of `geo.cell_len` and
/// `geo.cover_cells_max`.
const FANOUT_LEN_MAX: usize = 6;
const FANOUT_CELLS_MAX: usize = 64;
/// Circle radii, in metres.
const RADII_M: [f64; 3] = [100.0, 1_000.0, 10_000.0];
/// Centres as (name, latitude°, longitude°): Paris; Taveuni (Fiji), about 53 m west of the
/// antimeridian, so every circle crosses it; 5.6 km from the north pole, so the 10 km circle
/// spans every longitude.
const CENTERS: [(&str, f64, f64); 3] = [
    ("paris", 48.8566, 2.3522),
    ("antimeridian", -16.8, 179.9995),
    ("north_pole", 89.95, 10.0),
];
/// A point about 1 km north of Paris's centre: a nearby-filter distance.
const PARIS_NORTH_1KM: (f64, f64) = (48.8656, 2.3522);

fn point((lat, lng): (f64, f64)) -> Point {
    Point::new(lat, lng).expect("a valid coordinate")
}

fn covers(c: &mut Criterion) {
    let callers = [
        ("cover_query", QUERY_LEN_MAX, QUERY_CELLS_MAX),
        ("cover_fanout", FANOUT_LEN_MAX, FANOUT_CELLS_MAX),
    ];
    for (name, len_max, cells_max) in callers {
        let mut group = c.benchmark_group(name);
        for (place, lat, lng) in CENTERS {
            let center = point((lat, lng));
            for radius_m in RADII_M {
                group.bench_with_input(BenchmarkId::new(place, radius_m), &radius_m, |b, &r| {
                    b.iter(|| cover(black_box(center), black_box(r), len_max, cells_max))
                });
            }
        }
        group.finish();
    }
}

fn points(c: &mut Criterion) {
    let (_, lat, lng) = CENTERS[0];
    let (paris, north) = (point((lat, lng)), point(PARIS_NORTH_1KM));
    let mut group = c.benchmark_group("encode");
    for len in [FANOUT_LEN_MAX, QUERY_LEN_MAX] {
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            b.iter(|| encode(black_box(paris), len))
        });
    }
    group.finish();
    c.bench_function("haversine_m", |b| {
        b.iter(|| haversine_m(black_box(paris), black_box(north)))
    });
}

criterion_group!(benches, covers, points);
criterion_main!(benches);
