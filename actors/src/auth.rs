//! Who a connection is and what it may do: JWT verification (HS256 with the configured secret,
//! RS256/ES256 with keys from a JWKS file), the personal-topic and private-channel rules, and
//! the topic policies of `[auth]` — Locus's counterpart of Supabase's RLS policies on
//! `realtime.messages`.
//!
//! Over 400 lines: half of it is the unit tests of the policy rules and key types; the
//! verification itself is one job.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::glob_match;
use crate::refusal::{Code, Refusal};
use crate::topic::{Kind, Topic};

/// The role of a connection without a token.
pub const ANON_ROLE: &str = "anon";
/// The role of a token without a `role` claim.
pub const DEFAULT_ROLE: &str = "authenticated";
/// The role of server-side callers (Supabase's service key): not bound by the topic rules.
pub const SERVICE_ROLE: &str = "service_role";

/// `[auth]` in config.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret that verifies clients' tokens. Empty: HS256 tokens are refused.
    pub jwt_secret: String,
    /// A JWKS file with RS256/ES256 public keys, selected by `kid`. Empty: none.
    pub jwks_file: String,
    /// Clients without a token may connect and join public topics. Default true (local use);
    /// production configs set it to false.
    pub allow_anonymous: bool,
    /// Clock skew tolerated when checking `exp`, in seconds. Default 0.
    pub leeway_s: u64,
    /// Topic policies; see [`TopicPolicy`].
    pub policies: Vec<TopicPolicy>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: String::new(),
            jwks_file: String::new(),
            allow_anonymous: true,
            leeway_s: 0,
            policies: Vec::new(),
        }
    }
}

/// Who may do what on the topics matching `topic` (a glob on the full topic, `*` matching any
/// run of characters). A topic matched by at least one policy allows an action only to the
/// roles some matching policy grants it; a private channel matched by none is closed to all;
/// a public topic matched by none is open.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicPolicy {
    pub topic: String,
    /// Roles (`anon`, `authenticated`, or a token's `role` claim); `*` for any.
    pub roles: Vec<String>,
    pub actions: Vec<Action>,
}

/// What a client does on a topic.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Join,
    Broadcast,
    Presence,
    Post,
}

impl Action {
    /// Supabase's wording: joining reads a channel, the rest write to it.
    fn verb(self) -> &'static str {
        match self {
            Action::Join => "read from",
            _ => "write to",
        }
    }
}

/// The claims Locus reads. `sub` is optional: Supabase's anon and service keys carry only a
/// `role` (`nbf` is checked by jsonwebtoken when present).
#[derive(Debug, Clone, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    role: Option<String>,
    exp: u64,
}

/// The user behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub role: Arc<str>,
    /// When the token expires (seconds since the Unix epoch); `None` for anonymous clients.
    pub exp_s: Option<u64>,
    /// The token named a user (`sub`). A key without one (Supabase's anon or service key) is
    /// an anonymous identity of its role: `user_id` is the connection's, and the connection
    /// takes on the user of the first user token it is given.
    pub has_user: bool,
}

impl Identity {
    pub fn anonymous(user_id: Arc<str>) -> Identity {
        Identity {
            user_id,
            role: Arc::from(ANON_ROLE),
            exp_s: None,
            has_user: false,
        }
    }

    /// Holds a token that has not expired.
    pub fn is_authenticated(&self) -> bool {
        self.exp_s.is_some_and(|exp| exp > now_s())
    }

    /// Holds an unexpired token naming a user: what personal topics, jobs and the per-user
    /// connection count need.
    pub fn is_user(&self) -> bool {
        self.has_user && self.is_authenticated()
    }

    /// An identity without a user (a key without `sub`) takes the connection's own name.
    pub fn or_named(mut self, anon_id: Arc<str>) -> Identity {
        if !self.has_user {
            self.user_id = anon_id;
        }
        self
    }

    /// The role the topic rules see: an expired token's role is gone, and the connection is
    /// anonymous until a new token arrives.
    pub fn effective_role(&self) -> &str {
        if self.is_authenticated() {
            &self.role
        } else {
            ANON_ROLE
        }
    }
}

/// Why a token was refused; the text is Supabase's code, a colon and the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.code(), self.detail())]
pub enum AuthError {
    Expired(u64),
    Malformed(String),
    Invalid(String),
    AnonymousNotAllowed,
    ConnectionLimitReached(usize),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        self.refusal_code().as_str()
    }

    fn refusal_code(&self) -> Code {
        match self {
            AuthError::Expired(_) => Code::InvalidJwtExpiration,
            AuthError::Malformed(_) => Code::MalformedJwt,
            AuthError::Invalid(_) => Code::InvalidJwt,
            AuthError::AnonymousNotAllowed => Code::AnonymousNotAllowed,
            AuthError::ConnectionLimitReached(_) => Code::ConnectionLimitReached,
        }
    }

    /// The human part, without the code.
    pub fn detail(&self) -> String {
        match self {
            AuthError::Expired(s) => format!("Token has expired {s} seconds ago"),
            AuthError::Malformed(m) | AuthError::Invalid(m) => m.clone(),
            AuthError::AnonymousNotAllowed => "this server requires an access token".into(),
            AuthError::ConnectionLimitReached(max) => {
                format!("at most {max} connections per user (session.connections_per_user_max)")
            }
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal::new(e.refusal_code(), e.detail())
    }
}

/// A refused action: `Unauthorized: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unauthorized: {0}")]
pub struct Denied(pub String);

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Refusal {
        Refusal::new(Code::Unauthorized, denied.0)
    }
}

/// Verifies tokens and applies the topic rules. Cheap to share (`Arc`).
pub struct Authenticator {
    config: AuthConfig,
    hs256: Option<DecodingKey>,
    jwks: HashMap<String, (DecodingKey, Algorithm)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("jwks_keys", &self.jwks.len())
            .field("allow_anonymous", &self.config.allow_anonymous)
            .finish()
    }
}

impl Authenticator {
    /// Loads the JWKS file, if any.
    pub fn new(config: AuthConfig) -> Result<Authenticator, String> {
        let hs256 = (!config.jwt_secret.is_empty())
            .then(|| DecodingKey::from_secret(config.jwt_secret.as_bytes()));
        let mut jwks = HashMap::new();
        if !config.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&config.jwks_file)
                .map_err(|e| format!("auth.jwks_file {}: {e}", config.jwks_file))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("auth.jwks_file {}: {e}", config.jwks_file))?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwks_file key {i}: {e}"))?;
                use jsonwebtoken::jwk::AlgorithmParameters as P;
                let alg = match &jwk.algorithm {
                    P::EllipticCurve(_) => Algorithm::ES256,
                    P::RSA(_) => Algorithm::RS256,
                    _ => return Err(format!("auth.jwks_file key {i}: only RSA and EC keys")),
                };
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                jwks.insert(kid, (key, alg));
            }
        }
        Ok(Authenticator {
            config,
            hs256,
            jwks,
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The identity of a client connecting with `token` (or none).
    ///
    /// With no key configured at all, nothing can be verified: where anonymous clients are
    /// allowed the token is ignored (Supabase clients always send their project's `apikey`, and
    /// must work against a local Locus with no secret), and refused otherwise.
    /// A token without `sub` (a project's anon key) gives an identity of its role named
    /// `anon_id`.
    pub fn connect(&self, token: Option<&str>, anon_id: Arc<str>) -> Result<Identity, AuthError> {
        let no_keys = self.hs256.is_none() && self.jwks.is_empty();
        match token.filter(|t| !t.is_empty()) {
            Some(_) if no_keys && self.config.allow_anonymous => Ok(Identity::anonymous(anon_id)),
            Some(t) => self.verify(t).map(|id| id.or_named(anon_id)),
            None if self.config.allow_anonymous => Ok(Identity::anonymous(anon_id)),
            None => Err(AuthError::AnonymousNotAllowed),
        }
    }

    /// Checks a token's signature, `exp` and `nbf`, now. A token without `sub` yields an
    /// identity with an empty `user_id` and `has_user: false` (see [`Identity::or_named`]).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_at(token, now_s())
    }

    fn verify_at(&self, token: &str, now_s: u64) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => (
                self.hs256
                    .as_ref()
                    .ok_or_else(|| AuthError::Invalid("HS256 tokens are not accepted".into()))?,
                Algorithm::HS256,
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let found = match &header.kid {
                    Some(kid) => self.jwks.get(kid),
                    None if self.jwks.len() == 1 => self.jwks.values().next(),
                    None => None,
                };
                let (key, alg) = found
                    .ok_or_else(|| AuthError::Invalid("no key for this token's kid".into()))?;
                if *alg != header.alg {
                    return Err(AuthError::Invalid(
                        "algorithm does not match the key".into(),
                    ));
                }
                (key, *alg)
            }
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not accepted"
                )))
            }
        };
        let mut validation = Validation::new(alg);
        // Expiry is checked below, to say how long ago the token expired, as Supabase does.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_s;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    AuthError::Invalid("signature does not match".into())
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("the token is not valid yet (nbf)".into())
                }
                _ => AuthError::Malformed(e.to_string()),
            })?
            .claims;
        // Saturating: `exp` is whatever the token says.
        if claims.exp.saturating_add(self.config.leeway_s) <= now_s {
            return Err(AuthError::Expired(now_s.saturating_sub(claims.exp)));
        }
        let (user_id, has_user, default_role) = match claims.sub {
            Some(sub) if sub.is_empty() => return Err(AuthError::Malformed("empty sub".into())),
            Some(sub) => (Arc::from(sub), true, DEFAULT_ROLE),
            // Supabase's anon key: a key of the project, not of a user.
            None => (Arc::from(""), false, ANON_ROLE),
        };
        Ok(Identity {
            user_id,
            role: Arc::from(claims.role.as_deref().unwrap_or(default_role)),
            exp_s: Some(claims.exp),
            has_user,
        })
    }

    /// The one access check: whether `who` may do `action` on `topic` (joined `private` or
    /// not). Every entry point — each socket action, the REST broadcast, the history endpoint —
    /// asks here, and a refusal is counted here.
    pub fn authorize(
        &self,
        who: &Identity,
        topic: &Topic,
        private: bool,
        action: Action,
    ) -> Result<(), Refusal> {
        self.decide(who, topic, private, action).map_err(|denied| {
            crate::metrics::auth_failure(Code::Unauthorized.as_str());
            Refusal::from(denied)
        })
    }

    fn decide(
        &self,
        who: &Identity,
        topic: &Topic,
        private: bool,
        action: Action,
    ) -> Result<(), Denied> {
        let deny = || {
            Denied(format!(
                "You do not have permissions to {} this Channel topic: {topic}",
                action.verb()
            ))
        };
        let role = who.effective_role();
        if role == SERVICE_ROLE {
            return Ok(());
        }
        if let Kind::Personal { user_id: owner } = topic.kind() {
            return if who.is_user() && who.user_id == *owner {
                Ok(())
            } else {
                Err(deny())
            };
        }
        if private && !who.is_authenticated() {
            return Err(deny());
        }
        let mut matched = false;
        for p in self
            .config
            .policies
            .iter()
            .filter(|p| glob_match(&p.topic, topic.as_str()))
        {
            matched = true;
            let role_ok = p.roles.iter().any(|r| r == "*" || r == role);
            if role_ok && p.actions.contains(&action) {
                return Ok(());
            }
        }
        if matched || private {
            Err(deny())
        } else {
            Ok(())
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(topic: &str) -> Topic {
        Topic::parse(topic, 256).expect("a valid topic")
    }
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

    fn auth(policies: Vec<TopicPolicy>) -> Authenticator {
        Authenticator::new(AuthConfig {
            jwt_secret: SECRET.into(),
            policies,
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn token(sub: &str, exp: u64, secret: &str) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": exp, "role": "authenticated"});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_expired_and_tampered_tokens() {
        let a = auth(vec![]);
        let id = a.verify_at(&token("u1", 2_000, SECRET), 1_000).unwrap();
        assert_eq!(
            (&*id.user_id, &*id.role, id.exp_s),
            ("u1", "authenticated", Some(2_000))
        );
        assert_eq!(
            a.verify_at(&token("u1", 2_000, SECRET), 2_030),
            Err(AuthError::Expired(30))
        );
        let forged = token("u1", 2_000, "another-secret-of-sufficient-length!!");
        assert!(matches!(
            a.verify_at(&forged, 1_000),
            Err(AuthError::Invalid(_))
        ));
        let mut parts: Vec<String> = token("u1", 2_000, SECRET)
            .split('.')
            .map(String::from)
            .collect();
        parts[1] = token("admin", 2_000, SECRET)
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        assert!(matches!(
            a.verify_at(&parts.join("."), 1_000),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            a.verify_at("not-a-jwt", 1_000),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn personal_private_and_policy_rules() {
        let a = auth(vec![TopicPolicy {
            topic: "realtime:team-*".into(),
            roles: vec!["authenticated".into()],
            actions: vec![Action::Join, Action::Presence],
        }]);
        let anon = Identity::anonymous(Arc::from("anon-1"));
        let u1 = Identity {
            user_id: Arc::from("u1"),
            role: Arc::from("authenticated"),
            exp_s: Some(u64::MAX),
            has_user: true,
        };
        assert!(a
            .authorize(&u1, &t("realtime:user:u1"), false, Action::Join)
            .is_ok());
        assert!(a
            .authorize(&u1, &t("realtime:user:u2"), false, Action::Join)
            .is_err());
        assert!(a
            .authorize(&anon, &t("realtime:user:anon-1"), false, Action::Join)
            .is_err());
        assert!(a
            .authorize(&anon, &t("realtime:lobby"), false, Action::Broadcast)
            .is_ok());
        assert!(a
            .authorize(&anon, &t("realtime:lobby"), true, Action::Join)
            .is_err());
        // Private without a matching policy: closed, as with RLS.
        assert!(a
            .authorize(&u1, &t("realtime:lobby"), true, Action::Join)
            .is_err());
        assert!(a
            .authorize(&u1, &t("realtime:team-a"), true, Action::Join)
            .is_ok());
        assert!(a
            .authorize(&u1, &t("realtime:team-a"), false, Action::Broadcast)
            .is_err());
        assert!(a
            .authorize(&anon, &t("realtime:team-a"), false, Action::Join)
            .is_err());
        let err = a
            .authorize(&anon, &t("realtime:team-a"), false, Action::Join)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unauthorized: You do not have permissions to read from this Channel topic: realtime:team-a"
        );
    }

    #[test]
    fn anonymous_connections_follow_config() {
        let open = auth(vec![]);
        assert!(!open
            .connect(None, Arc::from("anon-1"))
            .unwrap()
            .is_authenticated());
        let closed = Authenticator::new(AuthConfig {
            allow_anonymous: false,
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            closed.connect(None, Arc::from("anon-1")),
            Err(AuthError::AnonymousNotAllowed)
        );
        // No key to verify with: a local server ignores the apikey supabase-js always sends.
        let keyless = Authenticator::new(AuthConfig::default()).unwrap();
        assert!(!keyless
            .connect(Some("anon-key"), Arc::from("anon-2"))
            .unwrap()
            .is_authenticated());
        // With a key, an unverifiable token is refused even where anonymous clients are allowed.
        assert!(open.connect(Some("anon-key"), Arc::from("anon-3")).is_err());
    }

    fn claims_token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// F9: a token that expired no longer grants its role; the topic rules see `anon`.
    #[test]
    fn an_expired_token_loses_its_role() {
        let a = auth(vec![TopicPolicy {
            topic: "realtime:team-*".into(),
            roles: vec!["authenticated".into(), "admin".into()],
            actions: vec![Action::Join, Action::Broadcast],
        }]);
        let mut who = Identity {
            user_id: Arc::from("u1"),
            role: Arc::from("admin"),
            exp_s: Some(now_s() + 3_600),
            has_user: true,
        };
        assert!(a
            .authorize(&who, &t("realtime:team-a"), false, Action::Join)
            .is_ok());
        who.exp_s = Some(now_s() - 1);
        assert_eq!(who.effective_role(), ANON_ROLE);
        assert!(a
            .authorize(&who, &t("realtime:team-a"), false, Action::Join)
            .is_err());
        assert!(a
            .authorize(&who, &t("realtime:team-a"), false, Action::Broadcast)
            .is_err());
        who.role = Arc::from(SERVICE_ROLE);
        assert!(a
            .authorize(&who, &t("realtime:team-a"), false, Action::Broadcast)
            .is_err());
    }

    /// F23: Supabase's anon key (a `role` and no `sub`) is an anonymous identity of its role,
    /// its service key one of `service_role`; `nbf` in the future is refused.
    #[test]
    fn keys_without_sub_are_identities_of_their_role() {
        let a = auth(vec![]);
        let exp = now_s() + 3_600;
        let anon_key =
            claims_token(serde_json::json!({"role": "anon", "exp": exp, "iss": "supabase"}));
        let id = a.connect(Some(&anon_key), Arc::from("anon-7")).unwrap();
        assert_eq!(
            (&*id.user_id, &*id.role, id.has_user),
            ("anon-7", "anon", false)
        );
        assert!(!id.is_user());
        assert!(a
            .authorize(&id, &t("realtime:user:anon-7"), false, Action::Join)
            .is_err());
        let service = claims_token(serde_json::json!({"role": "service_role", "exp": exp}));
        let id = a.connect(Some(&service), Arc::from("anon-8")).unwrap();
        assert!(a
            .authorize(&id, &t("realtime:user:u9"), false, Action::Join)
            .is_ok());
        let early =
            claims_token(serde_json::json!({"sub": "u1", "exp": exp, "nbf": now_s() + 600}));
        assert!(matches!(a.verify(&early), Err(AuthError::Invalid(_))));
        let far = claims_token(serde_json::json!({"sub": "u1", "exp": u64::MAX}));
        let leeway = Authenticator::new(AuthConfig {
            jwt_secret: SECRET.into(),
            leeway_s: 30,
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(leeway.verify(&far).unwrap().is_user());
    }
}
