//! Process-unique ids: `phx_ref`s of presence metas, presence keys the client did not choose,
//! and the idempotency keys of publications without a client id. A node prefix (the start time
//! in microseconds) keeps ids from different restarts apart.

use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh `phx_ref`, unique within this process (the node prefix keeps refs from different
/// restarts apart in clients that survived the restart).
pub fn next_phx_ref() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NODE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    });
    format!("{node:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A presence key for a member whose client did not choose one (Supabase generates a UUID).
pub fn generated_key() -> String {
    format!("anon-{}", next_phx_ref())
}
