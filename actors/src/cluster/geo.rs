//! Posts and beacons across nodes. A node subscribes `locus.g.<p>` for every prefix `p` of each
//! of its cells; a post goes once to each prefix of its cover (one geohash length, so the
//! prefixes are disjoint), and the receiving node hands it to its cells under that prefix only —
//! so each cell, and each member, gets it once. Beacons travel the same way, as far as the
//! widest subscription any peer announced in its heartbeat.

use std::sync::Arc;
use std::time::Instant;

use locus_geo::Point;
use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use super::envelope::{self, Envelope, Kind};
use super::{Shared, NEAR_SUBJECT};
use crate::geo::cell::{flush_targets, Beacons, Fanout};
use crate::geo::{Beacon, GeoPost, GeoRemote, NearbyMember, NearbyQuery};
use crate::metrics::{self as m, DropReason};
use crate::publish::delivery::COVER_SLACK_M;

/// The subjects a cell's node listens on: one per prefix of the cell's name.
pub(super) fn area_subjects(cell: &str) -> Vec<String> {
    (1..=cell.len())
        .map(|len| format!("locus.g.{}", &cell[..len]))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct PostHeader {
    #[serde(rename = "p")]
    prefix: String,
    id: String,
    user_id: String,
    content: String,
    lat: f64,
    lng: f64,
    radius_m: f64,
    created_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct BeaconsHeader {
    #[serde(rename = "p")]
    prefix: String,
    lat: f64,
    lng: f64,
    spread_m: f64,
    beacons: Vec<WireBeacon>,
}

#[derive(Serialize, Deserialize)]
struct WireBeacon {
    #[serde(rename = "u")]
    user_id: Arc<str>,
    lat: f64,
    lng: f64,
    /// The coarse position anonymous subscribers see, as the origin's cell computed it.
    clat: f64,
    clng: f64,
}

/// A who-is-nearby request.
#[derive(Serialize, Deserialize)]
struct NearHeader {
    lat: f64,
    lng: f64,
    radius_m: f64,
    exact: bool,
    limit: usize,
}

/// A node's answer: its members near the point.
#[derive(Serialize, Deserialize)]
struct NearAnswer {
    members: Vec<WireMember>,
}

#[derive(Serialize, Deserialize)]
struct WireMember {
    #[serde(rename = "s")]
    session: crate::SessionId,
    #[serde(rename = "u")]
    user_id: Arc<str>,
    lat: f64,
    lng: f64,
    #[serde(rename = "d")]
    distance_m: f64,
}

/// The cluster side of [`GeoRemote`].
pub struct GeoRoutes {
    shared: Arc<Shared>,
}

impl GeoRoutes {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        GeoRoutes { shared }
    }

    /// The prefixes (one length) covering `radius_m` around `centre`, by this node's limits.
    fn cover(&self, centre: Point, radius_m: f64) -> Vec<String> {
        let Some(cells) = self.shared.cells.get() else {
            return Vec::new();
        };
        let l = cells.limits();
        let radius = radius_m + l.rehome_hysteresis_m + COVER_SLACK_M;
        locus_geo::cover(centre, radius, l.cell_len, l.cover_cells_max).1
    }
}

impl GeoRemote for GeoRoutes {
    fn cell_started(&self, cell: &str) {
        super::interest::request(
            &self.shared,
            super::interest::Interest::Cell(cell.to_owned(), true),
        );
    }

    fn cell_stopped(&self, cell: &str) {
        super::interest::request(
            &self.shared,
            super::interest::Interest::Cell(cell.to_owned(), false),
        );
    }

    fn post(&self, post: &GeoPost) {
        let s = &self.shared;
        for prefix in self.cover(post.point, post.radius_m) {
            let header = PostHeader {
                prefix,
                id: post.id.clone(),
                user_id: post.user_id.clone(),
                content: post.content.clone(),
                lat: post.point.lat,
                lng: post.point.lng,
                radius_m: post.radius_m,
                created_at_ms: post.created_at_ms,
            };
            let subject = format!("locus.g.{}", header.prefix);
            s.send(
                subject,
                Kind::GeoPost,
                envelope::encode(Kind::GeoPost, s.me, &header, &[]),
            );
        }
    }

    fn members_near(&self, q: NearbyQuery) -> BoxFuture<'static, Vec<NearbyMember>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let header = NearHeader {
                lat: q.point.lat,
                lng: q.point.lng,
                radius_m: q.radius_m,
                exact: q.exact,
                limit: q.limit,
            };
            let answers = super::ask::ask_peers(&shared, NEAR_SUBJECT, Kind::Near, &header).await;
            let mut found = Vec::new();
            for env in answers {
                let Ok(a) = env.header::<NearAnswer>() else {
                    continue;
                };
                found.extend(a.members.into_iter().map(|w| NearbyMember {
                    session: w.session,
                    user_id: w.user_id,
                    point: Point {
                        lat: w.lat,
                        lng: w.lng,
                    },
                    distance_m: w.distance_m,
                }));
            }
            found
        })
    }

    fn beacons(&self, centre: Point, spread_m: f64, batch: &[Beacon]) {
        let s = &self.shared;
        let reach_m = s.nodes().reach_m();
        if reach_m <= 0.0 {
            // No peer has a nearby subscriber: nobody elsewhere to tell.
            return;
        }
        let beacons: Vec<WireBeacon> = (batch.iter())
            .map(|b| WireBeacon {
                user_id: b.user_id.clone(),
                lat: b.point.lat,
                lng: b.point.lng,
                clat: b.coarse.lat,
                clng: b.coarse.lng,
            })
            .collect();
        let mut header = BeaconsHeader {
            prefix: String::new(),
            lat: centre.lat,
            lng: centre.lng,
            spread_m,
            beacons,
        };
        for prefix in self.cover(centre, spread_m + reach_m) {
            header.prefix = prefix;
            let subject = format!("locus.g.{}", header.prefix);
            s.send(
                subject,
                Kind::Beacons,
                envelope::encode(Kind::Beacons, s.me, &header, &[]),
            );
        }
    }
}

/// Answers another node's who-is-nearby request from this node's cells.
pub(super) fn answer_near(shared: &Arc<Shared>, env: &Envelope, reply: String) {
    let (Some(cells), Ok(h)) = (shared.cells.get(), env.header::<NearHeader>()) else {
        return m::dropped(DropReason::ClusterMalformed);
    };
    let Ok(point) = Point::new(h.lat, h.lng) else {
        return m::dropped(DropReason::ClusterMalformed);
    };
    let q = NearbyQuery {
        point,
        radius_m: h.radius_m,
        exact: h.exact,
        limit: h.limit,
    };
    // No session of this node asked: exclude none.
    let found = cells.members_near(q, crate::SessionId::MAX);
    let shared = shared.clone();
    tokio::spawn(async move {
        let members = (found.await.into_iter())
            .map(|n| WireMember {
                session: n.session,
                user_id: n.user_id,
                lat: n.point.lat,
                lng: n.point.lng,
                distance_m: n.distance_m,
            })
            .collect();
        let answer = NearAnswer { members };
        super::ask::answer(&shared, reply, Kind::Near, &answer).await;
    });
}

/// A post another node routed to this node's cells under its prefix.
pub(super) fn post_arrived(shared: &Arc<Shared>, env: &Envelope) {
    let (Some(cells), Ok(h)) = (shared.cells.get(), env.header::<PostHeader>()) else {
        return m::dropped(DropReason::ClusterMalformed);
    };
    let post = Arc::new(GeoPost {
        id: h.id,
        user_id: h.user_id,
        content: h.content,
        point: Point {
            lat: h.lat,
            lng: h.lng,
        },
        radius_m: h.radius_m,
        created_at_ms: h.created_at_ms,
        accepted_at: Instant::now(),
    });
    for cell in cells.targets_under(post.point, post.radius_m + COVER_SLACK_M, &h.prefix) {
        if cell.try_send(Fanout(post.clone())).is_err() {
            m::dropped(DropReason::CellMailboxFull);
        }
    }
}

/// Beacons another node's cell flushed, for this node's cells under their prefix.
pub(super) fn beacons_arrived(shared: &Arc<Shared>, env: &Envelope) {
    let (Some(cells), Ok(h)) = (shared.cells.get(), env.header::<BeaconsHeader>()) else {
        return m::dropped(DropReason::ClusterMalformed);
    };
    let batch: Arc<Vec<Beacon>> = Arc::new(
        (h.beacons.into_iter())
            .map(|b| Beacon {
                // Session ids are per node; cells match beacons to members by user.
                session: 0,
                user_id: b.user_id,
                point: Point {
                    lat: b.lat,
                    lng: b.lng,
                },
                coarse: Point {
                    lat: b.clat,
                    lng: b.clng,
                },
            })
            .collect(),
    );
    let centre = Point {
        lat: h.lat,
        lng: h.lng,
    };
    let (targets, capped) = flush_targets(cells, centre, h.spread_m, &h.prefix);
    if capped {
        m::geo_capped(m::GeoCap::BeaconCells);
    }
    for cell in targets {
        if cell.try_send(Beacons(batch.clone())).is_err() {
            m::dropped(DropReason::CellMailboxFull);
        }
    }
}
