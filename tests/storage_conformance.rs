//! One behavioural suite for every storage backend, run on SQLite (a temp file) and on a real
//! PostgreSQL cluster the test starts itself.
//!
//! Over 400 lines: one suite run against every backend, so every check of the storage contract sits
//! in one file.

#[path = "common/pg.rs"]
mod pg;

use locus_geo::{haversine_m, Point};
use locus_storage::{
    AnyStore, Encoding, JobCreated, JobStatus, JobStore, JobUpdate, NearbyQuery, NewGeoMessage,
    NewJob, NewPublication, Storage,
};

const DAY_MS: i64 = 86_400_000;

fn publication(topic: &str, key: &str, payload: &str, created_at_ms: i64) -> NewPublication {
    NewPublication {
        topic: topic.into(),
        event: "e".into(),
        encoding: Encoding::Json,
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        user_id: Some("u1".into()),
        client_id: None,
        idem_key: key.into(),
        created_at_ms,
    }
}

async fn suite(store: AnyStore) {
    offsets_are_dense_per_topic_and_epochs_stable(&store).await;
    history_pages_in_order(&store).await;
    history_pages_stop_at_the_byte_budget(&store).await;
    topic_meta_gives_bounds_without_reading_publications(&store).await;
    idempotency_keys_deduplicate(&store).await;
    payloads_round_trip(&store).await;
    history_since_filters_by_time(&store).await;
    purge_removes_old_days_and_keeps_new(&store).await;
    geo_messages_are_idempotent(&store).await;
    nearby_matches_brute_force(&store).await;
    jobs_are_idempotent_per_owner_and_key(&store).await;
    job_updates_persist_and_terminal_jobs_are_final(&store).await;
    jobs_list_newest_first_by_status(&store).await;
    only_stalled_jobs_are_claimed_and_only_once(&store).await;
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
    let h = s.history("t:a", 2, 2, usize::MAX).await.unwrap();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(h.first_offset, Some(1));
    assert_eq!(h.next_offset, 7);
    assert!(h.epoch.is_some());
    let none = s.history("t:never", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(none.epoch, None);
    assert!(none.publications.is_empty());
    assert_eq!(none.next_offset, 1);
}

/// A page stops before the publication that would pass `bytes_max`, and always holds one.
async fn history_pages_stop_at_the_byte_budget(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let hundred = "x".repeat(100);
    let batch: Vec<_> = (0..5)
        .map(|i| publication("t:bytes", &format!("b{i}"), &hundred, now))
        .collect();
    s.append(&batch).await.unwrap();
    let offsets = |h: locus_storage::History| -> Vec<u64> {
        h.publications.iter().map(|p| p.offset).collect()
    };
    assert_eq!(
        offsets(s.history("t:bytes", 0, 10, 250).await.unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        offsets(s.history("t:bytes", 0, 10, 300).await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        offsets(s.history("t:bytes", 1, 10, 50).await.unwrap()),
        vec![2],
        "one publication larger than the budget still pages"
    );
    assert_eq!(
        offsets(s.history("t:bytes", 2, 2, 10_000).await.unwrap()),
        vec![3, 4]
    );
    let h = s.history("t:bytes", 5, 10, 10).await.unwrap();
    assert!(h.publications.is_empty());
    assert_eq!(h.next_offset, 6);
}

/// `topic_meta` gives the epoch and offset bounds `history` gives, for written and unknown
/// topics alike.
async fn topic_meta_gives_bounds_without_reading_publications(s: &AnyStore) {
    let h = s.history("t:a", 0, 1, usize::MAX).await.unwrap();
    let meta = s.topic_meta("t:a").await.unwrap();
    assert_eq!(meta.epoch, h.epoch);
    assert_eq!(meta.first_offset, Some(1));
    assert_eq!(meta.next_offset, 7);
    let none = s.topic_meta("t:never").await.unwrap();
    assert_eq!(
        none,
        locus_storage::TopicMeta {
            epoch: None,
            first_offset: None,
            next_offset: 1
        }
    );
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
    let h = s.history("t:idem", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(h.publications.len(), 2);
    assert_eq!(h.publications[0].payload, br#"{"v":1}"#);
}

/// Every field survives the round trip, binary payloads included.
async fn payloads_round_trip(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let mut p = publication("t:rt", "rt1", "", now);
    p.encoding = Encoding::Binary;
    p.payload = bytes::Bytes::from_static(&[0, 255, 1, 2]);
    p.client_id = Some("c-1".into());
    p.user_id = None;
    p.event = "bin".into();
    s.append(std::slice::from_ref(&p)).await.unwrap();
    let got = &s
        .history("t:rt", 0, 1, usize::MAX)
        .await
        .unwrap()
        .publications[0];
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
    let h = s.history("t:ret", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(
        h.publications
            .iter()
            .map(|p| p.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"2".to_vec()]
    );
    assert_eq!(h.first_offset, Some(2));
    assert_eq!(h.next_offset, 3, "offsets are not reused after retention");
    let meta = s.topic_meta("t:ret").await.unwrap();
    assert_eq!((meta.first_offset, meta.next_offset), (Some(2), 3));
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

fn new_job(id: &str, owner: &str, key: &str, hash: &str, created_at_ms: i64) -> NewJob {
    NewJob {
        id: id.into(),
        owner: owner.into(),
        kind: "image".into(),
        input: r#"{"prompt":"a fox"}"#.into(),
        requested_provider: None,
        idempotency_key: key.into(),
        request_hash: hash.into(),
        cost_estimate: Some(3.0),
        lease_until_ms: created_at_ms + 30_000,
        created_at_ms,
    }
}

fn update(id: &str, status: JobStatus, progress: f64, lease_until_ms: i64) -> JobUpdate {
    JobUpdate {
        id: id.into(),
        status,
        progress,
        output: None,
        error: None,
        provider: Some("p1".into()),
        provider_job_id: Some(format!("pred-{id}")),
        attempts: r#"[{"provider":"p1","outcome":"accepted"}]"#.into(),
        cost_actual: None,
        lease_until_ms,
        updated_at_ms: locus_storage::now_ms(),
    }
}

/// One job per (owner, key): the same request gets the original, another request a conflict.
async fn jobs_are_idempotent_per_owner_and_key(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let created = match s
        .create_job(&new_job("j1", "alice", "k1", "h1", now))
        .await
        .unwrap()
    {
        JobCreated::Created(j) => j,
        other => panic!("expected a new job, got {other:?}"),
    };
    assert_eq!(created.status, JobStatus::Queued);
    assert_eq!(created.cost_estimate, Some(3.0));
    let input: serde_json::Value = serde_json::from_str(&created.input).unwrap();
    assert_eq!(input, serde_json::json!({"prompt": "a fox"}));
    let attempts: serde_json::Value = serde_json::from_str(&created.attempts).unwrap();
    assert_eq!(attempts, serde_json::json!([]));
    match s
        .create_job(&new_job("j2", "alice", "k1", "h1", now))
        .await
        .unwrap()
    {
        JobCreated::Existing(j) => assert_eq!(j.id, "j1"),
        other => panic!("expected the original job, got {other:?}"),
    }
    match s
        .create_job(&new_job("j3", "alice", "k1", "h2", now))
        .await
        .unwrap()
    {
        JobCreated::Conflict(j) => assert_eq!(j.id, "j1"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match s
        .create_job(&new_job("j4", "bob", "k1", "h2", now))
        .await
        .unwrap()
    {
        JobCreated::Created(j) => assert_eq!(j.owner, "bob"),
        other => panic!("keys are per owner, got {other:?}"),
    }
    assert!(s.get_job("j3").await.unwrap().is_none());
    let by_key = s.job_by_key("alice", "k1").await.unwrap().unwrap();
    assert_eq!(by_key.id, "j1");
    assert!(s.job_by_key("carol", "k1").await.unwrap().is_none());
}

/// Updates are stored whole; once a job is terminal, later updates leave it alone.
async fn job_updates_persist_and_terminal_jobs_are_final(s: &AnyStore) {
    let now = locus_storage::now_ms();
    let mut done = update("j1", JobStatus::Succeeded, 1.0, now);
    done.output = Some(r#"["https://cdn.example/fox.png"]"#.into());
    done.cost_actual = Some(2.5);
    s.update_jobs(&[update("j1", JobStatus::Processing, 0.4, now), done])
        .await
        .unwrap();
    let j = s.get_job("j1").await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Succeeded);
    assert_eq!(j.progress, 1.0);
    assert_eq!(j.cost_actual, Some(2.5));
    assert_eq!(j.provider_job_id.as_deref(), Some("pred-j1"));
    let out: serde_json::Value = serde_json::from_str(j.output.as_deref().unwrap()).unwrap();
    assert_eq!(out, serde_json::json!(["https://cdn.example/fox.png"]));
    s.update_jobs(&[update("j1", JobStatus::Failed, 0.0, now)])
        .await
        .unwrap();
    let after = s.get_job("j1").await.unwrap().unwrap();
    assert_eq!(
        after.status,
        JobStatus::Succeeded,
        "a terminal job is final"
    );
}

/// A user's jobs come newest first, filtered by status, up to the limit.
async fn jobs_list_newest_first_by_status(s: &AnyStore) {
    let t = locus_storage::now_ms();
    for i in 0..5 {
        s.create_job(&new_job(
            &format!("c{i}"),
            "carol",
            &format!("ck{i}"),
            "h",
            t + i,
        ))
        .await
        .unwrap();
    }
    s.update_jobs(&[update("c1", JobStatus::Canceled, 0.0, t)])
        .await
        .unwrap();
    let all = s.list_jobs("carol", None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec!["c4", "c3", "c2", "c1", "c0"]);
    let queued = s
        .list_jobs("carol", Some(JobStatus::Queued), 2)
        .await
        .unwrap();
    let ids: Vec<&str> = queued.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec!["c4", "c3"]);
    let canceled = s
        .list_jobs("carol", Some(JobStatus::Canceled), 10)
        .await
        .unwrap();
    assert_eq!(canceled.len(), 1);
    assert!(s.list_jobs("nobody", None, 10).await.unwrap().is_empty());
}

/// A claim takes live jobs whose lease passed, once; renewed and terminal jobs stay put.
async fn only_stalled_jobs_are_claimed_and_only_once(s: &AnyStore) {
    let t = locus_storage::now_ms() + 1_000_000;
    // Every carol job is live with a lease that passed by `t`, except c1 (canceled).
    s.update_jobs(&[update("c2", JobStatus::Processing, 0.5, t + 60_000)])
        .await
        .unwrap();
    let claimed = s.claim_stalled_jobs(t, t + 30_000, 100).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["j4", "c0", "c3", "c4"],
        "oldest first; j1 and c1 are final, c2 is leased"
    );
    assert!(claimed
        .iter()
        .all(|j| j.recoveries == 1 && j.lease_until_ms == t + 30_000));
    assert!(s
        .claim_stalled_jobs(t, t + 30_000, 100)
        .await
        .unwrap()
        .is_empty());
    s.renew_job_leases(&["j4".into(), "c0".into(), "c3".into()], t + 90_000)
        .await
        .unwrap();
    let later = s
        .claim_stalled_jobs(t + 40_000, t + 70_000, 100)
        .await
        .unwrap();
    let ids: Vec<&str> = later.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec!["c4"]);
    assert_eq!(later[0].recoveries, 2);
    let limited = s
        .claim_stalled_jobs(t + 100_000, t + 130_000, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
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
