//! `Config` mirrors config.toml: one section per subsystem, every key overridable from the
//! environment as `LOCUS_<SECTION>__<KEY>` (e.g. `LOCUS_SERVER__LISTEN=127.0.0.1:4100`).

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use locus_actors::auth::AuthConfig;
use locus_actors::config::{
    GeoLimits, RoomLimits, SessionLimits, StorageLimits, FRAME_ENVELOPE_BYTES,
};
use locus_actors::rate_limit::RateLimitConfig;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionLimits,
    pub room: RoomLimits,
    pub http: HttpConfig,
    pub storage: StorageLimits,
    pub geo: GeoLimits,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub sign_in: crate::sign_in::SignInConfig,
    pub jobs: locus_actors::jobs::JobsConfig,
    pub cluster: locus_actors::cluster::ClusterConfig,
}

/// `[server]`: the listener and process.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind. Default `127.0.0.1:4000`; port 0 picks a free port (logged on start).
    pub listen: String,
    /// HTTP worker threads; 0 means one per core. Default 0.
    pub workers: usize,
    /// At shutdown, how long sessions get to close before the server stops anyway. Default 5,000.
    pub shutdown_timeout_ms: u64,
    /// Tracing filter (`RUST_LOG` syntax) used when `RUST_LOG` is unset. Default
    /// `info,async_nats=warn` (the NATS client logs every message it drops at info).
    pub log: String,
    /// WebSocket connections the server holds at most; past it an upgrade is refused with 503
    /// `ServerFull`. 0 = no cap. Default 50,000.
    pub connections_max: usize,
    /// WebSocket connections one client IP may hold; past it an upgrade is refused with 429
    /// `IpConnectionLimitReached`. 0 = no cap (behind a proxy every client has its address).
    /// Default 1,000.
    pub connections_per_ip_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:4000".into(),
            workers: 0,
            shutdown_timeout_ms: 5_000,
            log: "info,async_nats=warn".into(),
            connections_max: 50_000,
            connections_per_ip_max: 1_000,
        }
    }
}

/// `[http]`: the REST API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest JSON request body, in bytes. Default 1,048,576.
    pub body_bytes_max: usize,
    /// Messages one `POST /api/broadcast` may carry. Default 100.
    pub broadcast_messages_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_bytes_max: 1024 * 1024,
            broadcast_messages_max: 100,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (skipped when `required` is false and the file is absent), then applies
    /// `LOCUS_*` environment overrides, then validates.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        let config: Config = Figment::new()
            .merge(Toml::file(path))
            .merge(Env::prefixed("LOCUS_").split("__"))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks limits against each other, with a clear message for the first that does not hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |e: locus_actors::config::LimitsError| ConfigError::Invalid(e.to_string());
        self.session.validate().map_err(invalid)?;
        self.room.validate().map_err(invalid)?;
        self.room.validate_against(&self.session).map_err(invalid)?;
        // What one recovery or replay sends must fit the joiner's queue.
        if self.storage.recover_bytes_max + FRAME_ENVELOPE_BYTES
            > self.session.outbound_queue_bytes_max
        {
            return Err(ConfigError::Invalid(
                "storage.recover_bytes_max must fit session.outbound_queue_bytes_max".into(),
            ));
        }
        self.storage.validate().map_err(invalid)?;
        self.geo.validate().map_err(invalid)?;
        self.jobs.validate().map_err(invalid)?;
        self.sign_in.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(invalid)?;
        if self.cluster.enabled()
            && self.storage.url.starts_with("sqlite:")
            && !self.storage.durable_topics.is_empty()
        {
            // Each node's SQLite file would hold its own offsets: one topic, several histories.
            return Err(ConfigError::Invalid(
                "cluster mode with durable topics needs one shared database: set storage.url to \
                 postgres://… (or storage.durable_topics = [] to run the cluster without durable \
                 topics)"
                    .into(),
            ));
        }
        if self.http.broadcast_messages_max == 0 {
            return Err(ConfigError::Invalid(
                "http.broadcast_messages_max must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_config_toml_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let loaded: Config = Figment::new().merge(Toml::file(path)).extract().unwrap();
        assert_eq!(
            loaded,
            Config::default(),
            "config.toml documents the defaults; keep them equal"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type.
    fn environment_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOCUS_SERVER__LISTEN", "127.0.0.1:4100");
            jail.set_env("LOCUS_SESSION__CLIENT_TIMEOUT_MS", "9000");
            let c = Config::load(Path::new("absent.toml"), false).unwrap();
            assert_eq!(c.server.listen, "127.0.0.1:4100");
            assert_eq!(c.session.client_timeout_ms, 9000);
            Ok(())
        });
    }

    /// A cluster over per-node SQLite files would give one topic several offset sequences, so
    /// durable topics in cluster mode on SQLite are refused at start with what to do instead.
    #[test]
    fn cluster_mode_with_durable_topics_on_sqlite_is_refused() {
        let mut c = Config::default();
        c.cluster.nats_url = "nats://127.0.0.1:4222".into();
        let Err(ConfigError::Invalid(why)) = c.validate() else {
            panic!("accepted");
        };
        assert!(why.contains("postgres://"), "{why}");
        c.storage.durable_topics.clear();
        assert!(c.validate().is_ok());
        c.storage.durable_topics = vec!["room:*".into()];
        c.storage.url = "postgres://127.0.0.1/locus".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn cross_limits_are_checked() {
        let mut c = Config::default();
        c.session.timeout_check_interval_ms = c.session.client_timeout_ms + 1;
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
        let mut c = Config::default();
        c.sign_in.nonces_max = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            Config::load(Path::new("absent.toml"), true),
            Err(ConfigError::Missing(_))
        ));
    }
}
