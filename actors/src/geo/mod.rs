//! Geo: the actor per active geohash cell ([`cell`]) and the registry of active cells with the
//! beacon reach ([`registry`]). Sessions home their `realtime:nearby` member in one cell; the
//! engine's delivery fans a stored post out to the cells of its cover. In a cluster, [`remote`]
//! carries posts and beacons to the other nodes' cells.

pub mod cell;
pub mod registry;
pub mod remote;

pub use cell::{
    coarse_offset_m_max, Beacon, Beacons, Cell, Enter, Fanout, GeoPost, Leave, Move, NearbyMember,
    NearbyMembers,
};
pub use registry::{CellRegistry, NearbyQuery, ReachGuard, COVER_SLACK_M};
pub use remote::GeoRemote;
