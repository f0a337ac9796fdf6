//! Admitting a connection: its token becomes an identity, and it takes a slot of the server
//! (`server.connections_max`), of its client IP (`server.connections_per_ip_max`) and of its
//! user (`session.connections_per_user_max`). The [`ConnectionPermit`] holds them; whatever
//! ends the connection, dropping the permit (with the session that holds it) gives them back.

use std::net::IpAddr;
use std::sync::Arc;

use super::Engine;
use crate::auth::{AuthError, Identity};
use crate::connection::slots::ConnectionSlots;
use crate::metrics as m;
use crate::SessionId;

/// The caps on open connections that are not the session's own (`[server]` in config.toml).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionCaps {
    /// `server.connections_max` (0: no cap).
    pub server_max: usize,
    /// `server.connections_per_ip_max` (0: no cap).
    pub per_ip_max: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The token was refused (401).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The server holds `server.connections_max` connections (503).
    #[error("this server holds server.connections_max = {0} connections")]
    ServerFull(usize),
    /// The client IP holds `server.connections_per_ip_max` connections (429).
    #[error("at most {0} connections per client IP (server.connections_per_ip_max)")]
    IpLimit(usize),
}

impl ConnectError {
    /// The stable code for the HTTP error and the `locus_auth_failures_total` label.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::Auth(e) => e.code(),
            ConnectError::ServerFull(_) => "ServerFull",
            ConnectError::IpLimit(_) => "IpConnectionLimitReached",
        }
    }

    /// The human part, without the code.
    pub fn detail(&self) -> String {
        match self {
            ConnectError::Auth(e) => e.detail(),
            other => other.to_string(),
        }
    }
}

/// An admitted connection: its id, identity and slots. The session takes it over.
pub struct ConnectionPermit {
    pub id: SessionId,
    pub identity: Identity,
    pub(crate) slots: ConnectionSlots,
}

impl Engine {
    /// Admits a connection from `peer` with `token` (`None`: anonymous).
    pub fn connect(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<ConnectionPermit, ConnectError> {
        let result = self.admit(token, peer);
        if let Err(e) = &result {
            m::auth_failure(e.code());
        }
        result
    }

    fn admit(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<ConnectionPermit, ConnectError> {
        let id = self.next_session_id();
        let identity = self.identify(token, self.anon_name(id))?;
        let security = self.security();
        let caps = self.inner.caps;
        let mut slots = ConnectionSlots {
            server: Some(
                security
                    .server_slots
                    .take((), caps.server_max)
                    .ok_or(ConnectError::ServerFull(caps.server_max))?,
            ),
            ..ConnectionSlots::default()
        };
        if let Some(ip) = peer {
            let slot = security.ip_slots.take(ip, caps.per_ip_max);
            slots.ip = Some(slot.ok_or(ConnectError::IpLimit(caps.per_ip_max))?);
        }
        if identity.is_user() {
            slots.user = Some(self.user_slot(&identity.user_id)?);
        }
        Ok(ConnectionPermit {
            id,
            identity,
            slots,
        })
    }

    /// One of `user`'s connection slots, or `ConnectionLimitReached`.
    pub(crate) fn user_slot(
        &self,
        user: &Arc<str>,
    ) -> Result<crate::connection::slots::Slot<Arc<str>>, AuthError> {
        let max = self.session_limits().connections_per_user_max;
        self.security()
            .user_slots
            .take(user.clone(), max)
            .ok_or(AuthError::ConnectionLimitReached(max))
    }
}
