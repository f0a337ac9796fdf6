//! The publish entry: every publication enters here — client and REST broadcasts, job events,
//! geo posts, and later database changes and wallet events. Durability is decided here once:
//! a durable topic's publication (and every geo message) is stored first and delivered by its
//! writer after commit, in offset order; an ephemeral one goes to the broker at once. Either
//! way the caller gets one completion type, [`Published`], through a [`Pending`].

use std::sync::Arc;

use locus_storage::{Appended, GeoAppended, NewGeoMessage};
use tokio::sync::oneshot;

use super::Engine;
use crate::broker::{BrokerError, Publication};
use crate::geo::GeoPost;
use crate::publish::geo_writer::GeoAppend;
pub use crate::publish::geo_writer::OnStored;
use crate::publish::writer::DurableError;
use crate::refusal::{Code, Refusal};

/// Who published, for the stored record: the user (kept with the row) and the client's id,
/// which makes a re-send by the same user idempotent.
#[derive(Debug, Clone, Default)]
pub struct Author {
    pub user_id: Option<Arc<str>>,
    pub client_id: Option<String>,
}

/// What enters the engine.
pub enum Outgoing {
    /// A channel publication: stored first when its topic is durable.
    Channel {
        publication: Publication,
        author: Author,
    },
    /// A geo message: always stored first, then fanned out to the cells and geo rooms
    /// (`created_at_ms` is set from the commit). `on_stored` runs between the commit and the
    /// fan-out (the poster's reply goes there, so it precedes the message on its socket).
    Geo {
        post: GeoPost,
        on_stored: Option<OnStored>,
    },
}

/// How a publication ended up: stored (with its position, for a channel publication) or
/// handed to the broker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// The offset in its topic, for a stored channel publication.
    pub offset: Option<u64>,
    /// The topic's epoch, for a stored channel publication.
    pub epoch: Option<String>,
    /// When it was stored (a duplicate answers the original's).
    pub created_at_ms: Option<i64>,
    /// Its idempotency key was already stored: nothing was delivered again.
    pub duplicate: bool,
}

/// Why a publication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Storage(#[from] DurableError),
}

impl From<PublishError> for Refusal {
    fn from(e: PublishError) -> Refusal {
        match e {
            PublishError::Broker(b @ BrokerError::RoomBusy) => {
                Refusal::new(Code::RoomBusy, b.to_string())
            }
            PublishError::Storage(d) => d.into(),
        }
    }
}

/// A publication on its way: already done (ephemeral), or waiting for its commit. Dropping it
/// does not cancel anything: a stored publication is delivered whether or not anyone waits.
pub struct Pending(State);

enum State {
    Done(Published),
    Channel(oneshot::Receiver<Result<Appended, DurableError>>),
    Geo(oneshot::Receiver<Result<GeoAppended, DurableError>>),
}

impl Pending {
    /// The outcome, when it is known without waiting (an ephemeral publication).
    pub fn ready(&self) -> Option<&Published> {
        match &self.0 {
            State::Done(p) => Some(p),
            _ => None,
        }
    }

    /// Waits for the commit (at once for an ephemeral publication).
    pub async fn wait(self) -> Result<Published, PublishError> {
        let stopped = || DurableError::Unavailable("storage writer stopped".into());
        match self.0 {
            State::Done(p) => Ok(p),
            State::Channel(rx) => {
                let a = rx.await.unwrap_or_else(|_| Err(stopped()))?;
                Ok(Published {
                    offset: Some(a.offset),
                    epoch: Some(a.epoch),
                    created_at_ms: Some(a.created_at_ms),
                    duplicate: a.duplicate,
                })
            }
            State::Geo(rx) => {
                let g = rx.await.unwrap_or_else(|_| Err(stopped()))?;
                Ok(Published {
                    created_at_ms: Some(g.created_at_ms),
                    duplicate: g.duplicate,
                    ..Published::default()
                })
            }
        }
    }
}

impl Engine {
    /// The only way a publication enters. Refused at once when the room or the writer is
    /// full (`RoomBusy`, `StorageBusy`); otherwise the [`Pending`] completes after commit
    /// (durable) or now (ephemeral).
    pub fn publish(&self, outgoing: Outgoing) -> Result<Pending, PublishError> {
        match outgoing {
            Outgoing::Channel {
                publication,
                author,
            } => {
                if !self.is_durable(&publication.topic) {
                    self.inner.delivery.now(publication)?;
                    return Ok(Pending(State::Done(Published::default())));
                }
                let stored = self.inner.storage.writers.append(
                    publication,
                    author.user_id.as_deref(),
                    author.client_id,
                )?;
                Ok(Pending(State::Channel(stored)))
            }
            Outgoing::Geo { post, on_stored } => {
                let record = NewGeoMessage {
                    id: post.id.clone(),
                    user_id: post.user_id.clone(),
                    content: post.content.clone(),
                    point: post.point,
                    radius_m: post.radius_m,
                    created_at_ms: locus_storage::now_ms(),
                };
                let (done, stored) = oneshot::channel();
                self.inner
                    .storage
                    .geo_writer
                    .try_send(GeoAppend {
                        record,
                        post,
                        done,
                        on_stored,
                    })
                    .map_err(|_| {
                        crate::metrics::storage_refused("inflight_publications");
                        DurableError::Busy
                    })?;
                Ok(Pending(State::Geo(stored)))
            }
        }
    }
}
