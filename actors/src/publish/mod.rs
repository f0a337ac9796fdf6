//! What happens to a publication after [`Engine::publish`](crate::engine::Engine::publish):
//! the storage actors write it in batches ([`batch_writer`], [`writer`] for channel
//! publications, [`geo_writer`] for geo messages), [`delivery`] hands it to the broker and the
//! cells (at once, or after commit), [`history`] keeps the recent window of each durable topic,
//! and [`recovery`] finds what a rejoining client missed.

pub mod batch_writer;
pub mod delivery;
pub mod geo_writer;
pub mod history;
pub mod recovery;
pub mod writer;
