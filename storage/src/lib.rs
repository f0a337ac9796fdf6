//! Locus storage: durable topic history behind one trait, with SQLite (the embedded default)
//! and Postgres backends through sqlx.
//!
//! # Layout
//! - `publications.rs`: the [`Storage`] trait, the publication and history types, and the batch
//!   planners the backends share (offsets for an append, rows for a history page).
//! - `geo.rs`: geo message types and the nearby search ([`NearbyQuery`]'s expanding rings of
//!   geohash prefix ranges, [`GEO_INDEX_LEN`], [`NEARBY_CELLS_MAX`]).
//! - `any.rs`: [`AnyStore`], the backend chosen by URL, dispatching both store traits to it.
//! - [`sqlite`], [`postgres`]: the backends; each applies its migrations (`migrations/<backend>/`)
//!   when it connects.
//! - [`jobs`]: AI job rows and the [`JobStore`] trait (implemented beside each backend).
//! - [`error`]: [`StoreError`], split into transient (retry) and permanent failures, and
//!   [`RecordError`], what makes a record unstorable before it is written.
//! - [`time`]: the clock ([`now_ms`], [`new_epoch`]) and RFC 3339 timestamps.
//!
//! Everything a caller uses is re-exported here: `locus_storage::X`, whichever file defines X.
//!
//! Guarantees every backend gives, checked by one conformance suite run against both:
//! - `append` is atomic per batch: all of it commits or none of it does. A row the database
//!   refuses fails its batch with [`StoreError::Rejected`]; the caller splits the batch to
//!   find it (records passing their `check` are never refused).
//! - offsets are dense and rise by one per topic, starting at 1; a topic's epoch never changes
//!   while its history exists.
//! - a publication whose idempotency key is already stored in its topic is not stored again:
//!   its outcome is the original one with `duplicate = true`. This also makes a retried batch
//!   (commit outcome unknown) safe.

mod any;
pub mod error;
mod geo;
pub mod jobs;
pub mod postgres;
mod publications;
pub mod sqlite;
pub mod time;

pub use any::AnyStore;
pub use error::{
    RecordError, StoreError, CLIENT_ID_BYTES_MAX, IDEM_KEY_BYTES_MAX, KEY_TEXT_BYTES_MAX,
};
pub use geo::{
    GeoAppended, NearbyHit, NearbyQuery, NewGeoMessage, GEO_INDEX_LEN, NEARBY_CELLS_MAX,
};
pub use jobs::{JobCreated, JobRecord, JobStatus, JobStore, JobUpdate, NewJob};
pub use publications::{Appended, Encoding, History, NewPublication, Storage, Stored, TopicMeta};
pub use time::{new_epoch, now_ms};

pub(crate) use geo::{first_occurrences, NearbyScan};
pub(crate) use publications::{assign_offsets, rows_within_bytes};
