//! One behavioural suite for every storage backend, run on SQLite (a temp file) and on a real
//! PostgreSQL cluster the test starts itself.

#[path = "common/pg.rs"]
mod pg;

use locus_geo::{haversine_m, Point};
use locus_storage::{AnyStore, Encoding, NearbyQuery, NewGeoMessage, NewPublication, Storage};

const DAY_MS: i64 = 86_400_000;

fn publication(topic: &str, key: &str, payload: &str, created_at_ms: i64) -> NewPublication {
    NewPublication {
        topic: topic.into(),
        event: "e".into(),
        encoding: Encoding::Json,
        payload: payload.as_bytes().to_vec(),
        user_id: Some("u1".into()),
        client_id: None,
        idem_key: key.into(),
        created_at_ms,
    }
}

async fn suite(store: AnyStore) {
    offsets_are_dense_per_topic_and_epochs_stable(&store).await;
    history_pages_in_order(&store).await;
    idempotency_keys_deduplicate(&store).await;
    payloads_round_trip(&store).await;
    history_since_filters_by_time(&store).await;
    purge_removes_old_days_and_keeps_new(&store).await;
    geo_messages_are_idempotent(&store).await;
    nearby_matches_brute_force(&store).await;
    store.ping().await.unwrap();
}

/// Offsets start at 1 and rise by one per topic, whatever the interleaving across batches.
async fn offsets_are_dense_per_topic_and_epochs_stable(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let batch: Vec<_> = (0..10)
        .map(|i| {
            publication(
                if i % 2 == 0 { "t:a" } else { "t:b" },
                &format!("k{i}"),
                "{}",
                now,
            )
        })
        .collect();
    let out = s.append(&batch).await.unwrap();
    let a: Vec<u64> = out.iter().step_by(2).map(|o| o.offset).collect();
    let b: Vec<u64> = out.iter().skip(1).step_by(2).map(|o| o.offset).collect();
    assert_eq!(a, vec![1, 2, 3, 4, 5]);
    assert_eq!(b, vec![1, 2, 3, 4, 5]);
    let more = s
        .append(&[publication("t:a", "k10", "{}", now)])
        .await
        .unwrap();
    assert_eq!(more[0].offset, 6);
    assert_eq!(
        more[0].epoch, out[0].epoch,
        "the epoch of a topic does not change"
    );
    assert_ne!(out[0].epoch, out[1].epoch, "topics have their own epochs");
    assert!(out.iter().all(|o| !o.duplicate));
}

/// History returns publications after an offset, oldest first, with the topic's bounds.
async fn history_pages_in_order(s: &AnyStore) {
    let h = s.history("t:a", 2, 2).await.unwrap();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(h.first_offset, Some(1));
    assert_eq!(h.next_offset, 7);
    assert!(h.epoch.is_some());
    let none = s.history("t:never", 0, 10).await.unwrap();
    assert_eq!(none.epoch, None);
    assert!(none.publications.is_empty());
    assert_eq!(none.next_offset, 1);
}

/// A key already stored, or repeated in one batch, yields the original outcome and is stored once.
async fn idempotency_keys_deduplicate(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let first = s
        .append(&[publication("t:idem", "same", r#"{"v":1}"#, now)])
        .await
        .unwrap();
    let again = s
        .append(&[
            publication("t:idem", "same", r#"{"v":2}"#, now + 5),
            publication("t:idem", "other", "{}", now),
            publication("t:idem", "other", "{}", now),
        ])
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].offset, first[0].offset);
    assert_eq!(again[0].created_at_ms, first[0].created_at_ms);
    assert!(!again[1].duplicate);
    assert!(again[2].duplicate);
    assert_eq!(again[2].offset, again[1].offset);
    let h = s.history("t:idem", 0, 10).await.unwrap();
    assert_eq!(h.publications.len(), 2);
    assert_eq!(h.publications[0].payload, br#"{"v":1}"#);
}

/// Every field survives the round trip, binary payloads included.
async fn payloads_round_trip(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let mut p = publication("t:rt", "rt1", "", now);
    p.encoding = Encoding::Binary;
    p.payload = vec![0, 255, 1, 2];
    p.client_id = Some("c-1".into());
    p.user_id = None;
    p.event = "bin".into();
    s.append(std::slice::from_ref(&p)).await.unwrap();
    let got = &s.history("t:rt", 0, 1).await.unwrap().publications[0];
    assert_eq!(got.encoding, Encoding::Binary);
    assert_eq!(got.payload, vec![0, 255, 1, 2]);
    assert_eq!(got.client_id.as_deref(), Some("c-1"));
    assert_eq!(got.user_id, None);
    assert_eq!(got.event, "bin");
    assert!(
        (got.created_at_ms - now).abs() <= 1,
        "created_at kept to the millisecond"
    );
}

/// `history_since` returns what was created at or after a time.
async fn history_since_filters_by_time(s: &AnyStore) {
    let now = locus_storage::now_ms();
    s.append(&[
        publication("t:since", "old", "1", now - 60_000),
        publication("t:since", "new", "2", now),
    ])
    .await
    .unwrap();
    let h = s.history_since("t:since", now - 1_000, 10).await.unwrap();
    assert_eq!(h.publications.len(), 1);
    assert_eq!(h.publications[0].payload, b"2");
}

/// Retention removes publications of days before the cutoff and keeps today's.
async fn purge_removes_old_days_and_keeps_new(s: &AnyStore) {
    let now = locus_storage::now_ms();
    s.append(&[
        publication("t:ret", "old", "1", now - DAY_MS - 3_600_000),
        publication("t:ret", "new", "2", now),
    ])
    .await
    .unwrap();
    let today_start = now - now.rem_euclid(DAY_MS);
    s.purge_before(today_start).await.unwrap();
    let h = s.history("t:ret", 0, 10).await.unwrap();
    assert_eq!(
        h.publications
            .iter()
            .map(|p| p.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"2".to_vec()]
    );
    assert_eq!(h.first_offset, Some(2));
    assert_eq!(h.next_offset, 3, "offsets are not reused after retention");
}

fn geo(id: &str, lat: f64, lng: f64, created_at_ms: i64) -> NewGeoMessage {
    NewGeoMessage {
        id: id.into(),
        user_id: "u1".into(),
        content: format!("at {lat},{lng}"),
        point: Point::new(lat, lng).unwrap(),
        radius_m: 500.0,
        created_at_ms,
    }
}

/// A geo message re-sent with the same `(user, id)` is a duplicate with its original time.
async fn geo_messages_are_idempotent(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let first = s.append_geo(&[geo("g1", 10.0, 10.0, now)]).await.unwrap();
    assert!(!first[0].duplicate);
    let again = s
        .append_geo(&[
            geo("g1", 10.0, 10.0, now + 7),
            geo("g2", 10.0, 10.0, now),
            geo("g2", 10.0, 10.0, now),
        ])
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].created_at_ms, first[0].created_at_ms);
    assert!(!again[1].duplicate);
    assert!(again[2].duplicate);
}

/// `nearby` equals a brute-force haversine scan, nearest first, around the antimeridian, the
/// poles and a city; `since` and `limit` apply.
async fn nearby_matches_brute_force(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let areas = [
        (0.0, 180.0, 0.05),
        (89.98, 0.0, 0.05),
        (-89.99, 30.0, 0.05),
        (48.85, 2.35, 0.1),
    ];
    let mut all = Vec::new();
    for (a, &(lat, lng, spread)) in areas.iter().enumerate() {
        for i in 0..150 {
            let plat = (lat + (rnd() * 2.0 - 1.0) * spread).clamp(-90.0, 90.0);
            let plng = (lng + (rnd() * 2.0 - 1.0) * spread + 540.0).rem_euclid(360.0) - 180.0;
            all.push(geo(&format!("n{a}-{i}"), plat, plng, now - i as i64));
        }
    }
    for chunk in all.chunks(100) {
        s.append_geo(chunk).await.unwrap();
    }
    for &(lat, lng, _) in &areas {
        for radius in [50.0, 800.0, 5_000.0, 30_000.0] {
            let center = Point::new(lat, (lng + 540.0f64).rem_euclid(360.0) - 180.0).unwrap();
            let mut brute: Vec<(f64, String)> = all
                .iter()
                .map(|m| (haversine_m(center, m.point), m.id.clone()))
                .filter(|(d, _)| *d <= radius)
                .collect();
            brute.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            // Small limits end the expanding search early; the nearest ones must not change.
            for limit in [1, 7, 40, 1_000] {
                let q = NearbyQuery {
                    center,
                    radius_m: radius,
                    limit,
                    since_ms: None,
                };
                let got: Vec<String> = s
                    .nearby(&q)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|h| h.message.id)
                    .collect();
                let want: Vec<String> =
                    brute.iter().take(limit).map(|(_, id)| id.clone()).collect();
                assert_eq!(got, want, "center {center:?} radius {radius} limit {limit}");
            }
        }
    }
    let q = NearbyQuery {
        center: Point::new(48.85, 2.35).unwrap(),
        radius_m: 30_000.0,
        limit: 5,
        since_ms: Some(now - 9),
    };
    let hits = s.nearby(&q).await.unwrap();
    assert!(hits.len() <= 5 && !hits.is_empty());
    assert!(hits.iter().all(|h| h.message.created_at_ms >= now - 9));
    assert!(hits.windows(2).all(|w| w[0].distance_m <= w[1].distance_m));
}

#[tokio::test]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/locus.db", dir.path().display());
    suite(AnyStore::connect(&url, 4).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_backend_conforms() {
    let cluster = pg::PgCluster::start();
    suite(AnyStore::connect(&cluster.url(), 4).await.unwrap()).await;
}

#[tokio::test]
async fn unknown_url_scheme_is_a_config_error() {
    assert!(matches!(
        AnyStore::connect("mysql://x", 1).await,
        Err(locus_storage::StoreError::Config(_))
    ));
}
