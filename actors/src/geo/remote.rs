//! The geo events that cross nodes: what a cluster must be told so that posts and beacons reach
//! the `realtime:nearby` members of other nodes. Implemented by the cluster; one node alone has
//! none.

use futures_util::future::BoxFuture;
use locus_geo::Point;

use super::cell::{Beacon, GeoPost, NearbyMember};
use super::registry::NearbyQuery;

/// Carries geo events to the other nodes and keeps this node's interest in their areas.
pub trait GeoRemote: Send + Sync + 'static {
    /// A cell started here: this node wants the posts and beacons of its area.
    fn cell_started(&self, cell: &str);
    /// A cell stopped here (each started cell stops once).
    fn cell_stopped(&self, cell: &str);
    /// A stored post to deliver to the members of other nodes within its radius.
    fn post(&self, post: &GeoPost);
    /// Beacons flushed by the cell centred on `centre`; each lies within `spread_m` of it.
    fn beacons(&self, centre: Point, spread_m: f64, batch: &[Beacon]);
    /// The members of the other nodes near `query` (each node's closest `query.limit`).
    fn members_near(&self, query: NearbyQuery) -> BoxFuture<'static, Vec<NearbyMember>>;
}
