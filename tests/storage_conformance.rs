//! One behavioural suite for every storage backend, run on SQLite (a temp file) and on a real
//! PostgreSQL cluster the test starts itself.

#[path = "common/pg.rs"]
mod pg;

use locus_storage::{AnyStore, Encoding, NewPublication, Storage};

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
