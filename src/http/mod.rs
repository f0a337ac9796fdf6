//! The HTTP API: REST broadcast, jobs, health, metrics, and the JSON error shape they share.

pub mod broadcast;
pub mod error;
pub mod health;
pub mod history;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod nearby;
pub mod sign_in;
