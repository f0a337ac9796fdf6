//! Delivery: what happens to a publication once the engine has let it out — an ephemeral one at
//! once, a stored one after its batch committed, in offset order, from the storage writer that
//! committed it. Nothing here depends on the publisher still being connected: a post whose
//! author disconnects before the commit is delivered all the same.
//!
//! Channel publications go to the broker (which reaches every node's room of the topic); a
//! stored one enters the history window first, carrying its `{offset, epoch}`. A geo message
//! goes once to each active cell of its cover (each member lives in one cell, so it arrives
//! once), and to the `realtime:geo:<geohash>` rooms of the cells containing its point through
//! the broker.

use std::sync::Arc;

use crate::broker::{Body, Broker, BrokerError, Durable, Publication};
use crate::geo::{CellRegistry, Fanout, GeoPost};
use crate::metrics::{self as m, DropReason};
use crate::publish::history::HistoryCache;
use crate::topic::{Topic, GEO_ROOM_LEN_MAX};
use crate::wire::raw;

pub use crate::geo::COVER_SLACK_M;

/// Cheap to clone: the broker, the history window and the cells.
#[derive(Clone)]
pub struct Delivery {
    broker: Arc<dyn Broker>,
    cache: Option<HistoryCache>,
    cells: CellRegistry,
}

impl Delivery {
    pub fn new(broker: Arc<dyn Broker>, cache: Option<HistoryCache>, cells: CellRegistry) -> Self {
        Delivery {
            broker,
            cache,
            cells,
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// An ephemeral publication: to the broker now.
    pub fn now(&self, publication: Publication) -> Result<(), BrokerError> {
        self.broker.publish(publication)
    }

    /// A publication its storage writer just committed at `offset` of `epoch`: into the
    /// history window, then to the broker with its position. A live delivery the broker
    /// refuses is counted there; the publication is stored and reaches members by recovery.
    pub fn committed(
        &self,
        mut publication: Publication,
        offset: u64,
        epoch: Arc<str>,
        client_id: Option<Arc<str>>,
        created_at_ms: i64,
    ) {
        publication.durable = Some(Durable {
            offset,
            epoch,
            client_id,
            replayed: false,
            created_at_ms,
        });
        // In a cluster the topic's room fills the window, in offset order across nodes.
        if let Some(cache) = self.cache.as_ref().filter(|_| !self.broker.is_clustered()) {
            cache.remember(&publication);
        }
        let _ = self.broker.publish(publication);
    }

    /// A geo message its writer just committed: once to each active cell of its cover, and to
    /// the geo rooms of its point's cells (each of which the broker may or may not have).
    pub fn geo_committed(&self, post: Arc<GeoPost>) {
        for cell in self
            .cells
            .targets(post.point, post.radius_m + COVER_SLACK_M)
        {
            if cell.try_send(Fanout(post.clone())).is_err() {
                m::dropped(DropReason::CellMailboxFull);
            }
        }
        if let Some(remote) = self.cells.remote() {
            remote.post(&post);
        }
        let hash = locus_geo::encode(post.point, GEO_ROOM_LEN_MAX);
        let payload: Arc<serde_json::value::RawValue> = Arc::from(raw(post.payload(None)));
        for len in 1..=GEO_ROOM_LEN_MAX {
            let topic = Topic::geo(&hash[..len]);
            let publication = Publication {
                topic: topic.room_key(false),
                event: "geo_message".into(),
                body: Body::Event(payload.clone()),
                sender: None,
                accepted_at: post.accepted_at,
                durable: None,
            };
            // A refused delivery is counted by the broker; the message is stored and the
            // nearby query finds it.
            let _ = self.broker.publish(publication);
        }
    }
}
