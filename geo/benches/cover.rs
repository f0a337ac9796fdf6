//! The geohash hot paths: covering a circle (`cover`) at a mid-latitude city, at the
//! antimeridian and near a pole, for 100 m, 1 km and 10 km; `encode` and `haversine_m`.
//!
//! Run: `cargo bench -p locus-geo --bench cover`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use locus_geo::{cover, encode, haversine_m, Point};

/// The cell length and cell bound the nearby query uses (storage::GEO_INDEX_LEN, NEARBY_CELLS_MAX).
const LEN_MAX: usize = 9;
const CELLS_MAX: usize = 32;

fn geo(c: &mut Criterion) {
    let places = [
        ("paris", Point::new(48.8566, 2.3522).unwrap()),
        ("antimeridian", Point::new(-16.5, 179.999).unwrap()),
        ("pole", Point::new(89.95, 10.0).unwrap()),
    ];
    let mut group = c.benchmark_group("cover");
    for (name, p) in places {
        for radius in [100.0, 1_000.0, 10_000.0] {
            group.bench_with_input(BenchmarkId::new(name, radius), &radius, |b, &r| {
                b.iter(|| cover(black_box(p), r, LEN_MAX, CELLS_MAX))
            });
        }
    }
    group.finish();
    let (a, z) = (places[0].1, Point::new(48.86, 2.36).unwrap());
    c.bench_function("encode_len9", |b| b.iter(|| encode(black_box(a), LEN_MAX)));
    c.bench_function("haversine", |b| {
        b.iter(|| haversine_m(black_box(a), black_box(z)))
    });
}

criterion_group!(benches, geo);
criterion_main!(benches);
