//! Nearby queries per second on 1,000,000 stored geo messages (SQLite, the embedded default):
//! the geohash-prefix index ranges plus the exact distance filter, at random points of a
//! city-sized area, for several radii.
//!
//! Run: `cargo bench --bench nearby` (fills a temporary SQLite database first, ~1 minute).
//! Postgres: `LOCUS_BENCH_STORE_URL=postgres://… cargo bench --bench nearby` against an empty
//! database.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use locus_geo::Point;
use locus_storage::{AnyStore, NearbyQuery, NewGeoMessage, Storage};

/// Stored messages.
const MESSAGES: usize = 1_000_000;
/// Messages per insert batch while filling.
const FILL_BATCH: usize = 10_000;
/// The area: Paris ± 0.5° (about 110 km × 73 km).
const CENTER: (f64, f64) = (48.8566, 2.3522);
const SPREAD_DEG: f64 = 0.5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn point(&mut self) -> Point {
        let lat = CENTER.0 + (self.next() * 2.0 - 1.0) * SPREAD_DEG;
        let lng = CENTER.1 + (self.next() * 2.0 - 1.0) * SPREAD_DEG;
        Point::new(lat, lng).expect("inside the area")
    }
}

fn filled_store(rt: &tokio::runtime::Runtime, url: &str) -> AnyStore {
    rt.block_on(async {
        let store = AnyStore::connect(url, 4).await.expect("store opens");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let now = locus_storage::now_ms();
        for start in (0..MESSAGES).step_by(FILL_BATCH) {
            let batch: Vec<NewGeoMessage> = (start..start + FILL_BATCH)
                .map(|i| NewGeoMessage {
                    id: format!("m{i}"),
                    user_id: format!("u{}", i % 10_000),
                    content: "hello from somewhere nearby".into(),
                    point: rng.point(),
                    radius_m: 1_000.0,
                    created_at_ms: now - i as i64,
                })
                .collect();
            store.append_geo(&batch).await.expect("fill");
        }
        store
    })
}

fn nearby(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("LOCUS_BENCH_STORE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/nearby.db", dir.path().display()));
    let store = filled_store(&rt, &url);
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    let mut group = c.benchmark_group(format!("nearby_1M_{backend}"));
    group.measurement_time(Duration::from_secs(5));
    for radius in [200.0, 1_000.0, 5_000.0] {
        let mut rng = Rng(7);
        group.bench_with_input(
            BenchmarkId::from_parameter(radius),
            &radius,
            |b, &radius| {
                b.iter(|| {
                    let q = NearbyQuery {
                        center: rng.point(),
                        radius_m: radius,
                        limit: 50,
                        since_ms: None,
                    };
                    rt.block_on(store.nearby(&q)).expect("query")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, nearby);
criterion_main!(benches);
