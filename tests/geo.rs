//! Geo end to end over WebSocket: posts reach exactly the members within their radius, once
//! each (around the antimeridian, at a pole and in a city), re-posts are idempotent, beacons
//! are coalesced and scoped to the subscriber's radius, nearby presence, cell rooms, the
//! stored nearby query, bad coordinates; the beacon reach shrinking when a wide subscriber
//! leaves, coarse positions for anonymous subscribers, and `location` needing `broadcast`.
//!
//! Over 400 lines: one file per feature, each test a whole scenario over real sockets; the harness
//! lives in tests/common.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{http_get, Client, Received, TestServer, Vsn};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use locus_actors::auth::{Action, AuthConfig, TopicPolicy};
use locus_geo::{haversine_m, Point};
use serde_json::{json, Value};

const NEARBY: &str = "realtime:nearby";
const SECRET: &str = "locus-geo-test-secret-of-a-decent-length";

/// An HS256 token for `sub`, valid for an hour.
fn token(sub: &str) -> String {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now_s + 3_600, "role": "authenticated"}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn connect_as(server: &TestServer, sub: &str) -> Client {
    let url = format!("{}&apikey={}", server.ws_url("2.0.0"), token(sub));
    Client::connect(&url, Vsn::V2).await
}

/// The centre of the geohash cell of length `len` holding `p`.
fn cell_centre(p: Point, len: usize) -> Point {
    let b = locus_geo::bbox(&locus_geo::encode(p, len)).unwrap();
    Point::new((b.lat_min + b.lat_max) / 2.0, (b.lng_min + b.lng_max) / 2.0).unwrap()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn around(&mut self, lat: f64, lng: f64, spread_deg: f64) -> Point {
        let plat = (lat + (self.next() * 2.0 - 1.0) * spread_deg).clamp(-90.0, 90.0);
        let plng = (lng + (self.next() * 2.0 - 1.0) * spread_deg + 540.0).rem_euclid(360.0) - 180.0;
        Point::new(plat, plng).unwrap()
    }
}

async fn subscribe(server: &TestServer, vsn: Vsn, at: Point, radius_m: f64) -> (Client, String) {
    subscribe_as(server.client(vsn).await, at, radius_m).await
}

/// Joins `realtime:nearby` with `radius_m` on `c` and locates it at `at`.
async fn subscribe_as(mut c: Client, at: Point, radius_m: f64) -> (Client, String) {
    let jr = c.join_nearby(at.lat, at.lng, radius_m).await;
    (c, jr)
}

/// Posts and returns the reply; `geo_message`s arriving meanwhile are kept in `seen`.
async fn post_seen(
    c: &mut Client,
    jr: &str,
    id: &str,
    at: Point,
    radius_m: f64,
    seen: &mut Vec<Value>,
) -> Value {
    let body = json!({"id": id, "content": format!("post {id}"), "lat": at.lat, "lng": at.lng, "radius_m": radius_m});
    let r = c.push(Some(jr), NEARBY, "post", body).await;
    loop {
        match c.recv(common::RECV_TIMEOUT).await {
            Received::Msg(m) if m.event == "phx_reply" && m.msg_ref == json!(r) => {
                return m.payload
            }
            Received::Msg(m) if m.event == "geo_message" => seen.push(m.payload),
            Received::Msg(_) => {}
            other => panic!("no reply to post {id}: {other:?}"),
        }
    }
}

async fn post(c: &mut Client, jr: &str, id: &str, at: Point, radius_m: f64) -> Value {
    let mut seen = Vec::new();
    let reply = post_seen(c, jr, id, at, radius_m, &mut seen).await;
    assert!(
        seen.is_empty(),
        "unexpected geo messages while posting: {seen:?}"
    );
    reply
}

/// Reads every `geo_message` until the socket has been quiet for `quiet`.
async fn drain_geo(c: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        match c.recv(quiet).await {
            Received::Msg(m) if m.event == "geo_message" => out.push(m.payload),
            Received::Msg(_) => {}
            Received::Timeout => return out,
            Received::Closed(code) => panic!("closed {code:?}"),
        }
    }
}

/// Many members at random positions (around ±180, at the north pole, in a city); posts with
/// radii from metres to tens of kilometres reach exactly the brute-force set, each once, with
/// the right distance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_reach_exactly_the_members_within_radius_once() {
    let server = TestServer::start();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let areas = [
        (0.0, 180.0, 0.08),
        (89.97, 0.0, 0.03),
        (48.8566, 2.3522, 0.15),
    ];
    let mut members: Vec<(Client, String, Point, Vec<Value>)> = Vec::new();
    for (i, &(lat, lng, spread)) in areas.iter().cycle().take(48).enumerate() {
        let at = rng.around(lat, lng, spread);
        let vsn = if i % 2 == 0 { Vsn::V1 } else { Vsn::V2 };
        let (c, jr) = subscribe(&server, vsn, at, 1_000.0).await;
        members.push((c, jr, at, Vec::new()));
    }
    let radii = [15.0, 300.0, 2_000.0, 9_000.0, 40_000.0];
    let mut posts: Vec<(String, Point, f64)> = Vec::new();
    for (k, &radius) in radii.iter().cycle().take(15).enumerate() {
        let (lat, lng, spread) = areas[k % areas.len()];
        let at = rng.around(lat, lng, spread);
        let poster = k * 7 % members.len();
        let id = format!("p{k}");
        let (c, jr, _, seen) = &mut members[poster];
        let reply = post_seen(c, jr, &id, at, radius, seen).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["response"]["id"], id.as_str());
        posts.push((id, at, radius));
    }
    // Let every fan-out land, then read what each member got.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (c, _, at, seen) in members.iter_mut() {
        let mut got = std::mem::take(seen);
        got.extend(drain_geo(c, Duration::from_millis(50)).await);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for g in &got {
            *counts
                .entry(g["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
            let p = Point::new(g["lat"].as_f64().unwrap(), g["lng"].as_f64().unwrap()).unwrap();
            let d = g["distance_m"].as_f64().unwrap();
            assert!((d - haversine_m(p, *at)).abs() < 1e-6);
        }
        for (id, p, radius) in &posts {
            let within = haversine_m(*p, *at) <= *radius;
            let n = counts.get(id).copied().unwrap_or(0);
            assert_eq!(
                n,
                usize::from(within),
                "member at {at:?}, post {id} at {p:?} r={radius}: received {n} times"
            );
        }
    }
    // The stored query agrees with brute force too.
    for (_, p, radius) in &posts {
        let url = server.http(&format!(
            "/api/nearby?lat={}&lng={}&radius_m={radius}&limit=500",
            p.lat, p.lng
        ));
        let (status, body) = http_get(&url).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let got: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        let mut want: Vec<(f64, &str)> = posts
            .iter()
            .map(|(id, q, _)| (haversine_m(*p, *q), id.as_str()))
            .filter(|(d, _)| d <= radius)
            .collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        assert_eq!(got, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
    }
}

/// Re-posting the same id returns the same reply and is not delivered again.
#[tokio::test]
async fn reposting_an_id_is_idempotent() {
    let server = TestServer::start();
    let here = Point::new(52.52, 13.405).unwrap();
    let (mut a, aj) = subscribe(&server, Vsn::V2, here, 1_000.0).await;
    let (mut b, _) = subscribe(&server, Vsn::V1, here, 1_000.0).await;
    let first = post(&mut a, &aj, "same-id", here, 500.0).await;
    assert_eq!(
        drain_geo(&mut a, Duration::from_millis(300)).await.len(),
        1,
        "the sender in range gets it too"
    );
    let second = post(&mut a, &aj, "same-id", here, 500.0).await;
    assert_eq!(first["response"], second["response"]);
    assert_eq!(drain_geo(&mut b, Duration::from_millis(400)).await.len(), 1);
    assert!(
        drain_geo(&mut a, Duration::from_millis(100))
            .await
            .is_empty(),
        "no second delivery"
    );
}

/// Bad coordinates and posts get an error reply with a reason, change nothing, and the
/// connection stays usable.
#[tokio::test]
async fn bad_coordinates_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start();
    let mut c = server.client(Vsn::V1).await;
    let bad_join = c
        .join_raw("1", NEARBY, json!({"nearby": {"radius_m": 0}}))
        .await;
    assert_eq!(bad_join.payload["status"], "error");
    let jr = c.join(NEARBY, json!({"nearby": {"radius_m": 500}})).await;
    for bad in [
        json!({"lat": 91, "lng": 0}),
        json!({"lat": 0, "lng": -180.5}),
        json!({"lat": "10", "lng": 0}),
        json!({"lng": 0}),
        json!({"lat": null, "lng": 0}),
        json!({"lat": 0, "lng": 0, "accuracy_m": -1}),
        json!([1, 2]),
    ] {
        let r = c.push(Some(&jr), NEARBY, "location", bad.clone()).await;
        let reply = c.reply_to(&r).await;
        assert_eq!(reply.payload["status"], "error", "{bad}");
        assert!(
            reply.payload["response"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("InvalidLocation"),
            "{reply:?}"
        );
    }
    // A number too large for f64 is not valid JSON for us: still an error reply.
    c.send_text(&format!(
        r#"{{"topic":"{NEARBY}","event":"location","payload":{{"lat":1e999,"lng":0}},"ref":"77"}}"#
    ))
    .await;
    assert_eq!(c.reply_to("77").await.payload["status"], "error");
    for bad in [
        json!({"content": "x", "lat": 0, "lng": 0, "radius_m": 10}),
        json!({"id": "a", "content": 5, "lat": 0, "lng": 0, "radius_m": 10}),
        json!({"id": "a", "content": "x", "lat": 0, "lng": 0, "radius_m": 60_000}),
        json!({"id": "a", "content": "x", "lat": 95, "lng": 0, "radius_m": 10}),
    ] {
        let r = c.push(Some(&jr), NEARBY, "post", bad.clone()).await;
        assert_eq!(c.reply_to(&r).await.payload["status"], "error", "{bad}");
    }
    let r = c
        .push(
            Some(&jr),
            NEARBY,
            "location",
            json!({"lat": 10.0, "lng": 20.0, "accuracy_m": 5}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
    c.heartbeat().await;
    for bad in [
        "lat=abc&lng=0",
        "lat=0",
        "lat=0&lng=0&radius_m=0",
        "lat=0&lng=0&limit=0",
        "lat=0&lng=0&since=yesterday",
        "lat=NaN&lng=0",
    ] {
        let (status, body) = http_get(&server.http(&format!("/api/nearby?{bad}"))).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"code\""), "{body}");
    }
}

/// Beacons reach subscribers whose radius holds the mover, coalesced to at most one per
/// interval with the latest position; subscribers out of range get none; presence lists the
/// members in range, closest first.
#[tokio::test]
async fn beacons_are_coalesced_and_scoped_and_presence_lists_members_in_range() {
    // Anonymous subscribers here, and this test follows exact positions: no coarsening.
    let server = TestServer::start_with(|c| {
        c.geo.beacon_interval_ms = 300;
        c.geo.anonymous_cell_len = 0;
    });
    let origin = Point::new(40.0, -3.7).unwrap();
    let (mut near, _) =
        subscribe(&server, Vsn::V1, Point::new(40.0005, -3.7).unwrap(), 500.0).await;
    let (mut far, _) = subscribe(&server, Vsn::V2, Point::new(40.05, -3.7).unwrap(), 500.0).await;
    let (mut mover, mj) = subscribe(&server, Vsn::V2, origin, 500.0).await;
    let started = std::time::Instant::now();
    let mut last = origin;
    for i in 1..=10 {
        last = Point::new(40.0 + i as f64 * 1e-5, -3.7).unwrap();
        let r = mover
            .push(
                Some(&mj),
                NEARBY,
                "location",
                json!({"lat": last.lat, "lng": last.lng}),
            )
            .await;
        mover.reply_to(&r).await;
    }
    let mut beacons = Vec::new();
    loop {
        match near.recv(Duration::from_millis(700)).await {
            Received::Msg(m) if m.event == "location" && m.payload["user_id"] != Value::Null => {
                if m.payload["lat"].as_f64() == Some(last.lat) {
                    beacons.push(m.payload);
                    break;
                }
                beacons.push(m.payload);
            }
            Received::Msg(_) => {}
            other => panic!("no final beacon: {other:?} after {beacons:?}"),
        }
    }
    let intervals = (started.elapsed().as_millis() / 300) as usize + 2;
    let from_mover: Vec<&Value> = beacons
        .iter()
        .filter(|b| b["lat"].as_f64().unwrap() >= 40.0 && b["lat"].as_f64().unwrap() < 40.0004)
        .collect();
    assert!(
        from_mover.len() <= intervals,
        "{} beacons in {intervals} intervals",
        from_mover.len()
    );
    assert!(from_mover.last().unwrap()["distance_m"].as_f64().unwrap() < 500.0);
    loop {
        match far.recv(Duration::from_millis(500)).await {
            Received::Msg(m) if m.event == "location" => {
                panic!("out-of-range subscriber got a beacon: {m:?}")
            }
            Received::Msg(_) => {}
            _ => break,
        }
    }
    // Presence: the near subscriber moves (past the interval) and lists the mover, closest first.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let here = Point::new(40.0004, -3.7).unwrap();
    let nj = near
        .join(NEARBY, json!({"nearby": {"radius_m": 500}}))
        .await;
    let r = near
        .push(
            Some(&nj),
            NEARBY,
            "location",
            json!({"lat": here.lat, "lng": here.lng}),
        )
        .await;
    near.reply_to(&r).await;
    let state = near.next_event("presence_state").await.payload;
    let listed: Vec<f64> = state
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| {
            v["metas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["distance_m"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(listed.len(), 1, "only the mover is within 500 m: {state}");
    assert!(listed[0] < 500.0);
}

/// `realtime:geo:<geohash>` rooms get the geo messages whose point lies in their cell.
#[tokio::test]
async fn geo_cell_rooms_receive_messages_in_their_cell() {
    let server = TestServer::start();
    let here = Point::new(35.6812, 139.7671).unwrap();
    let cell = locus_geo::encode(here, 5);
    let mut watcher = server.client(Vsn::V2).await;
    watcher
        .join(&format!("realtime:geo:{cell}"), json!({}))
        .await;
    let mut bad = server.client(Vsn::V1).await;
    for topic in [
        "realtime:geo:",
        "realtime:geo:abc",
        "realtime:geo:0123456789",
        "realtime:geo:XN76U",
    ] {
        assert_eq!(
            bad.join_raw("1", topic, json!({})).await.payload["status"],
            "error",
            "{topic}"
        );
    }
    let (mut poster, pj) = subscribe(&server, Vsn::V1, here, 100.0).await;
    let mut own = Vec::new();
    post_seen(&mut poster, &pj, "in-cell", here, 50.0, &mut own).await;
    post_seen(
        &mut poster,
        &pj,
        "elsewhere",
        Point::new(-33.86, 151.2).unwrap(),
        50.0,
        &mut own,
    )
    .await;
    let m = watcher.next_event("geo_message").await;
    assert_eq!(m.payload["id"], "in-cell");
    assert_eq!(m.topic, format!("realtime:geo:{cell}"));
    watcher
        .assert_none(Duration::from_millis(300), |m| m.event == "geo_message")
        .await;
}

/// Moves `c` to `at` and waits for the ok.
async fn locate(c: &mut Client, jr: &str, at: Point) {
    let r = c
        .push(
            Some(jr),
            NEARBY,
            "location",
            json!({"lat": at.lat, "lng": at.lng}),
        )
        .await;
    assert_eq!(c.reply_to(&r).await.payload["status"], "ok");
}

/// The next `location` beacon on `c` placing a member at `lat`.
async fn beacon_at(c: &mut Client, lat: f64) -> Value {
    c.next_where(|m| m.event == "location" && m.payload["lat"].as_f64() == Some(lat))
        .await
        .payload
}

/// The first `presence_state` listing `user_id`, re-sending `c`'s location at `at` until one
/// comes (a list is sent at most once per beacon interval, so a location may get none).
async fn presence_listing(c: &mut Client, jr: &str, at: Point, user_id: &str) -> Value {
    for _ in 0..50 {
        locate(c, jr, at).await;
        loop {
            match c.recv(Duration::from_millis(200)).await {
                Received::Msg(m) if m.event == "presence_state" => {
                    if m.payload.get(user_id).is_some() {
                        return m.payload;
                    }
                    break;
                }
                Received::Msg(_) => {}
                Received::Timeout => break,
                Received::Closed(code) => panic!("closed {code:?}"),
            }
        }
    }
    panic!("no presence_state listed {user_id}");
}

/// A 50 km subscriber widens the beacon fan-out only while it is subscribed. With
/// `geo.beacon_cells_max` = 1 a mover's flush is capped while a far cell (20 km) is within the
/// reach, still reaching its own cell first; once the wide subscriber leaves, the reach is the
/// remaining subscribers' 1 km and the same flush is no longer capped. (The widest radius ever
/// seen used to stay the reach for the life of the process.)
#[tokio::test]
async fn a_wide_subscriber_leaving_shrinks_the_beacon_reach() {
    // Process-wide metric; the other tests here keep the default cap and never reach it.
    const CAPPED: &str = r#"locus_geo_fanout_capped_total{reason="beacon_cells_max"}"#;
    let server = TestServer::start_with(|c| {
        c.geo.beacon_interval_ms = 100;
        c.geo.beacon_cells_max = 1;
        c.geo.anonymous_cell_len = 0;
    });
    let centre = cell_centre(Point::new(-33.92, 18.42).unwrap(), 6);
    let at = |dlat: f64| Point::new(centre.lat + dlat, centre.lng).unwrap();
    let (_far, _) = subscribe(&server, Vsn::V2, at(0.18), 1_000.0).await;
    let (mut near, _) = subscribe(&server, Vsn::V1, at(0.0001), 1_000.0).await;
    let (mut mover, mj) = subscribe(&server, Vsn::V2, at(0.0), 1_000.0).await;
    assert!(haversine_m(at(0.0), at(0.18)) > 19_000.0);
    beacon_at(&mut near, centre.lat).await;

    let mut wide = server.client(Vsn::V2).await;
    let wj = wide
        .join(NEARBY, json!({"nearby": {"radius_m": 50_000}}))
        .await;
    let before = server.metric(CAPPED).await;
    locate(&mut mover, &mj, at(-0.0001)).await;
    beacon_at(&mut near, at(-0.0001).lat).await;
    assert!(
        server.metric(CAPPED).await > before,
        "the 20 km cell is within a 50 km reach"
    );

    let r = wide.push(Some(&wj), NEARBY, "phx_leave", json!({})).await;
    assert_eq!(wide.reply_to(&r).await.payload["status"], "ok");
    let before = server.metric(CAPPED).await;
    locate(&mut mover, &mj, at(-0.0002)).await;
    beacon_at(&mut near, at(-0.0002).lat).await;
    assert_eq!(
        server.metric(CAPPED).await,
        before,
        "after the 50 km subscriber left, the reach is 1 km and the far cell is not a target"
    );
}

/// Anonymous nearby subscribers see other members snapped to the centre of their
/// `geo.anonymous_cell_len` cell (default 6), in `location` beacons and in `presence_state`,
/// with the distance to that centre; authenticated subscribers see them exactly.
#[tokio::test]
async fn anonymous_subscribers_see_coarse_positions_and_authenticated_ones_exact() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.geo.beacon_interval_ms = 100;
    });
    let exact = Point::new(51.501_35, -0.141_89).unwrap();
    let coarse = cell_centre(exact, 6);
    assert!(
        haversine_m(exact, coarse) > 10.0,
        "pick a point off its cell's centre"
    );
    let anon_at = Point::new(exact.lat + 0.001, exact.lng).unwrap();
    let user_at = Point::new(exact.lat - 0.001, exact.lng).unwrap();
    let (mut anon, aj) = subscribe(&server, Vsn::V1, anon_at, 2_000.0).await;
    let (mut user, uj) = subscribe_as(connect_as(&server, "viewer").await, user_at, 2_000.0).await;
    let (_mover, _) = subscribe_as(connect_as(&server, "mover").await, exact, 2_000.0).await;

    let from_mover = |m: &common::Msg| m.event == "location" && m.payload["user_id"] == "mover";
    let seen = anon.next_where(from_mover).await.payload;
    assert_eq!(
        (seen["lat"].as_f64(), seen["lng"].as_f64()),
        (Some(coarse.lat), Some(coarse.lng))
    );
    let d = seen["distance_m"].as_f64().unwrap();
    assert!((d - haversine_m(anon_at, coarse)).abs() < 1e-6, "{seen}");
    let seen = user.next_where(from_mover).await.payload;
    assert_eq!(
        (seen["lat"].as_f64(), seen["lng"].as_f64()),
        (Some(exact.lat), Some(exact.lng))
    );
    let d = seen["distance_m"].as_f64().unwrap();
    assert!((d - haversine_m(user_at, exact)).abs() < 1e-6, "{seen}");

    for (c, jr, at, shown) in [
        (&mut anon, &aj, anon_at, coarse),
        (&mut user, &uj, user_at, exact),
    ] {
        let state = presence_listing(c, jr, at, "mover").await;
        let meta = &state["mover"]["metas"][0];
        assert_eq!(
            (meta["lat"].as_f64(), meta["lng"].as_f64()),
            (Some(shown.lat), Some(shown.lng)),
            "{state}"
        );
        let d = meta["distance_m"].as_f64().unwrap();
        assert!((d - haversine_m(at, shown)).abs() < 1e-6, "{state}");
    }
}

/// Sharing one's position on `realtime:nearby` is a write: where a policy lets anonymous
/// clients only join the topic, their `location` is refused with `Unauthorized` and they are
/// never listed; a role granted `broadcast` shares its location as before.
#[tokio::test]
async fn location_on_nearby_needs_the_broadcast_action() {
    let server = TestServer::start_with(|c| {
        c.auth = AuthConfig {
            jwt_secret: SECRET.into(),
            policies: vec![
                TopicPolicy {
                    topic: NEARBY.into(),
                    roles: vec!["anon".into()],
                    actions: vec![Action::Join],
                },
                TopicPolicy {
                    topic: NEARBY.into(),
                    roles: vec!["authenticated".into()],
                    actions: vec![Action::Join, Action::Broadcast],
                },
            ],
            ..AuthConfig::default()
        };
    });
    let here = Point::new(-23.55, -46.63).unwrap();
    let mut anon = server.client(Vsn::V2).await;
    let jr = anon
        .join(NEARBY, json!({"nearby": {"radius_m": 1_000}}))
        .await;
    let r = anon
        .push(
            Some(&jr),
            NEARBY,
            "location",
            json!({"lat": here.lat, "lng": here.lng}),
        )
        .await;
    let reply = anon.reply_to(&r).await;
    assert_eq!(reply.payload["status"], "error", "{reply:?}");
    assert!(
        reply.payload["response"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Unauthorized"),
        "{reply:?}"
    );
    let (mut user, _) = subscribe_as(connect_as(&server, "sharer").await, here, 1_000.0).await;
    let state = user.next_event("presence_state").await.payload;
    assert_eq!(state, json!({}), "the refused location placed nobody");
}
