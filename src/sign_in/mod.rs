//! Wallet and Telegram sign-in: verifying an identity proof and issuing a Locus JWT for it.
//!
//! - [`evm`]: EIP-191 `personal_sign` over a SIWE-style message.
//! - [`telegram`]: Mini App `initData`, first party (bot token) or third party (bot id).
//! - [`ton`]: TON Connect `ton_proof`, with the key read from the wallet's state init.
//! - [`SignIn`]: the single-use nonces, the token issuer and the per-IP attempt limit the
//!   endpoints (`http::sign_in`) share.

pub mod evm;
pub mod telegram;
pub mod ton;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

/// Seconds a signed timestamp may lie in the future (clock skew).
const FUTURE_SKEW_S: u64 = 60;

/// Bytes of randomness in a nonce (hex-encoded: twice as many characters).
const NONCE_BYTES: usize = 16;

/// `[sign_in]` in config.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignInConfig {
    /// Domains a signed sign-in message may name (the dapp's own). Default `["localhost"]`.
    pub domains: Vec<String>,
    /// How long an issued nonce may be used, in seconds. Default 300.
    pub nonce_ttl_s: u64,
    /// Unused nonces kept at most; past it the oldest are dropped. Default 100,000.
    pub nonces_max: usize,
    /// Lifetime of the tokens issued, in seconds. Default 3,600.
    pub token_ttl_s: u64,
    /// Sign-in attempts (nonce requests included) per client IP per minute; 0 = off. Default 20.
    pub attempts_per_ip_per_min: u32,
    /// Bot tokens whose Mini Apps may sign in (first-party HMAC validation). Default none.
    pub telegram_bot_tokens: Vec<String>,
    /// Bot ids validated third-party (Ed25519 with `telegram_public_key`, no token needed).
    pub telegram_bot_ids: Vec<i64>,
    /// Telegram's Ed25519 key, hex. Default the production key.
    pub telegram_public_key: String,
    /// Oldest `auth_date` accepted, in seconds. Default 86,400.
    pub telegram_max_age_s: i64,
    /// Oldest `ton_proof` timestamp accepted, in seconds. Default 900.
    pub ton_proof_ttl_s: u64,
}

impl Default for SignInConfig {
    fn default() -> Self {
        SignInConfig {
            domains: vec!["localhost".into()],
            nonce_ttl_s: 300,
            nonces_max: 100_000,
            token_ttl_s: 3_600,
            attempts_per_ip_per_min: 20,
            telegram_bot_tokens: Vec::new(),
            telegram_bot_ids: Vec::new(),
            telegram_public_key: telegram::TELEGRAM_PUBLIC_KEY_PROD.into(),
            telegram_max_age_s: 86_400,
            ton_proof_ttl_s: 900,
        }
    }
}

/// Why a sign-in was refused; mapped to HTTP at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("SignInDisabled: set auth.jwt_secret to issue tokens")]
    Disabled,
    #[error("TooManyAttempts: slow down")]
    TooManyAttempts,
    #[error("MalformedSignIn: {0}")]
    Malformed(String),
    #[error("InvalidSignature: {0}")]
    InvalidSignature(String),
    #[error("NonceInvalid: unknown, used or expired nonce")]
    Nonce,
    #[error("DomainNotAllowed: {0}")]
    Domain(String),
    #[error("Expired: the signed message has expired")]
    Expired,
}

impl SignInError {
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::Disabled => "SignInDisabled",
            SignInError::TooManyAttempts => "TooManyAttempts",
            SignInError::Malformed(_) => "MalformedSignIn",
            SignInError::InvalidSignature(_) => "InvalidSignature",
            SignInError::Nonce => "NonceInvalid",
            SignInError::Domain(_) => "DomainNotAllowed",
            SignInError::Expired => "Expired",
        }
    }
}

/// A TON Connect proof with the wallet it is for (from the `ton_addr` and `ton_proof` items).
#[derive(Debug, Clone)]
pub struct TonProof {
    pub address: String,
    pub public_key: Option<String>,
    pub wallet_state_init: String,
    pub timestamp: u64,
    pub domain: TonDomain,
    pub signature: String,
    pub payload: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TonDomain {
    pub length_bytes: u64,
    pub value: String,
}

/// A token issued for a verified identity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub user_id: String,
    /// Telegram's referral `start_param`, when the Mini App was opened with one (also a claim
    /// of the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_param: Option<String>,
}

/// The sign-in endpoints' shared state.
pub struct SignIn {
    config: SignInConfig,
    key: Option<EncodingKey>,
    nonces: DashMap<String, Instant>,
    attempts: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl SignIn {
    /// `jwt_secret` signs the issued tokens (HS256), so clients can present them back.
    pub fn new(config: SignInConfig, jwt_secret: &str) -> SignIn {
        SignIn {
            key: (!jwt_secret.is_empty()).then(|| EncodingKey::from_secret(jwt_secret.as_bytes())),
            attempts: NonZeroU32::new(config.attempts_per_ip_per_min)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            nonces: DashMap::new(),
            config,
        }
    }

    pub fn config(&self) -> &SignInConfig {
        &self.config
    }

    /// Counts an attempt from `ip`.
    pub fn attempt(&self, ip: Option<IpAddr>) -> Result<(), SignInError> {
        match (&self.attempts, ip) {
            (Some(l), Some(ip)) if l.check_key(&ip).is_err() => {
                locus_actors::metrics::rate_limited("sign_in");
                Err(SignInError::TooManyAttempts)
            }
            _ => Ok(()),
        }
    }

    /// A fresh single-use nonce.
    pub fn issue_nonce(&self) -> Result<String, SignInError> {
        if self.key.is_none() {
            return Err(SignInError::Disabled);
        }
        let mut bytes = [0u8; NONCE_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| SignInError::Malformed(e.to_string()))?;
        let nonce = hex::encode(bytes);
        if self.nonces.len() >= self.config.nonces_max {
            self.evict();
        }
        let ttl = Duration::from_secs(self.config.nonce_ttl_s);
        self.nonces.insert(nonce.clone(), Instant::now() + ttl);
        Ok(nonce)
    }

    /// Uses up `nonce`: true once, if it was issued and has not expired.
    pub fn take_nonce(&self, nonce: &str) -> bool {
        self.nonces
            .remove(nonce)
            .is_some_and(|(_, expires)| expires > Instant::now())
    }

    /// Drops expired nonces, then the oldest ones while still over the bound.
    fn evict(&self) {
        let now = Instant::now();
        self.nonces.retain(|_, expires| *expires > now);
        if self.nonces.len() >= self.config.nonces_max {
            let mut by_age: Vec<(String, Instant)> = self
                .nonces
                .iter()
                .map(|e| (e.key().clone(), *e.value()))
                .collect();
            by_age.sort_by_key(|(_, expires)| *expires);
            let excess = self.nonces.len() + 1 - self.config.nonces_max;
            for (nonce, _) in by_age.into_iter().take(excess) {
                self.nonces.remove(&nonce);
            }
        }
    }

    pub fn domain_allowed(&self, domain: &str) -> bool {
        self.config.domains.iter().any(|d| d == domain)
    }

    /// A Locus JWT for `user_id`.
    pub fn issue_token(
        &self,
        user_id: String,
        start_param: Option<String>,
    ) -> Result<Issued, SignInError> {
        let key = self.key.as_ref().ok_or(SignInError::Disabled)?;
        let now = locus_actors::auth::now_s();
        let mut claims = serde_json::json!({
            "sub": user_id,
            "role": locus_actors::auth::DEFAULT_ROLE,
            "iat": now,
            "exp": now + self.config.token_ttl_s,
        });
        if let Some(p) = &start_param {
            claims["start_param"] = serde_json::Value::String(p.clone());
        }
        let access_token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| SignInError::Malformed(e.to_string()))?;
        Ok(Issued {
            access_token,
            expires_in: self.config.token_ttl_s,
            user_id,
            start_param,
        })
    }

    /// EVM: checks the message's domain, nonce and expiry and the signature; the user is
    /// `eth:<lower-case address>`.
    pub fn verify_evm(&self, message: &str, signature: &str) -> Result<Issued, SignInError> {
        let parsed =
            evm::parse_message(message).map_err(|e| SignInError::Malformed(e.to_string()))?;
        if !self.domain_allowed(&parsed.domain) {
            return Err(SignInError::Domain(parsed.domain));
        }
        let signer = evm::recover_address(message.as_bytes(), signature)
            .map_err(|e| SignInError::InvalidSignature(e.to_string()))?;
        if !signer.eq_ignore_ascii_case(&parsed.address) {
            return Err(SignInError::InvalidSignature(
                "the signer is not the address in the message".into(),
            ));
        }
        if parsed
            .expires_at_s
            .is_some_and(|exp| exp <= locus_actors::auth::now_s() as i64)
        {
            return Err(SignInError::Expired);
        }
        // Last: a bad signature must not burn someone else's nonce.
        if !self.take_nonce(&parsed.nonce) {
            return Err(SignInError::Nonce);
        }
        self.issue_token(format!("eth:{signer}"), None)
    }

    /// TON Connect: the proof names an allowed domain (its length recomputed, never trusted),
    /// is fresh, carries a payload we issued, and is signed by the key in the wallet's state
    /// init, which hashes to the address. The user is `ton:<raw address>`.
    pub fn verify_ton(&self, proof: &TonProof) -> Result<Issued, SignInError> {
        if self.key.is_none() {
            return Err(SignInError::Disabled);
        }
        let domain = &proof.domain;
        if domain.length_bytes != domain.value.len() as u64 {
            return Err(SignInError::Malformed(format!(
                "domain.lengthBytes is {} but {:?} is {} bytes",
                domain.length_bytes,
                domain.value,
                domain.value.len()
            )));
        }
        if !domain.value.contains('.') || !self.domain_allowed(&domain.value) {
            return Err(SignInError::Domain(domain.value.clone()));
        }
        let now = locus_actors::auth::now_s();
        if now.saturating_sub(proof.timestamp) > self.config.ton_proof_ttl_s
            || proof.timestamp > now + FUTURE_SKEW_S
        {
            return Err(SignInError::Expired);
        }
        let key = ton::verify(
            &proof.address,
            &proof.wallet_state_init,
            &domain.value,
            proof.timestamp,
            &proof.payload,
            &proof.signature,
        )
        .map_err(|e| SignInError::InvalidSignature(e.to_string()))?;
        if proof
            .public_key
            .as_deref()
            .is_some_and(|k| !k.eq_ignore_ascii_case(&key))
        {
            return Err(SignInError::InvalidSignature(
                "publicKey is not the wallet's key".into(),
            ));
        }
        if !self.take_nonce(&proof.payload) {
            return Err(SignInError::Nonce);
        }
        self.issue_token(format!("ton:{}", proof.address.to_lowercase()), None)
    }

    /// Telegram: `initData` signed by a configured bot (token or id) and fresh; the user is
    /// `tg:<telegram user id>`.
    pub fn verify_telegram(&self, init_data: &str) -> Result<Issued, SignInError> {
        if self.key.is_none() {
            return Err(SignInError::Disabled);
        }
        let data = telegram::InitData::parse(init_data)
            .map_err(|e| SignInError::Malformed(e.to_string()))?;
        let first_party = self
            .config
            .telegram_bot_tokens
            .iter()
            .any(|t| data.signed_by_bot_token(t));
        let third_party = || {
            telegram::public_key(&self.config.telegram_public_key).is_some_and(|key| {
                self.config
                    .telegram_bot_ids
                    .iter()
                    .any(|id| data.signed_for_bot_id(*id, &key))
            })
        };
        if !first_party && !third_party() {
            return Err(SignInError::InvalidSignature(
                telegram::TelegramError::Signature.to_string(),
            ));
        }
        data.fresh(
            locus_actors::auth::now_s() as i64,
            self.config.telegram_max_age_s,
        )
        .map_err(|e| match e {
            telegram::TelegramError::Expired => SignInError::Expired,
            other => SignInError::Malformed(other.to_string()),
        })?;
        let user = data
            .user_id()
            .map_err(|e| SignInError::Malformed(e.to_string()))?;
        let start_param = data.get("start_param").map(str::to_owned);
        self.issue_token(format!("tg:{user}"), start_param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_and_bounded() {
        let s = SignIn::new(
            SignInConfig {
                nonces_max: 3,
                ..SignInConfig::default()
            },
            "secret",
        );
        let first = s.issue_nonce().unwrap();
        assert!(s.take_nonce(&first));
        assert!(!s.take_nonce(&first), "single use");
        assert!(!s.take_nonce("never-issued"));
        let n: Vec<String> = (0..5).map(|_| s.issue_nonce().unwrap()).collect();
        assert!(s.nonces.len() <= 3);
        assert!(s.take_nonce(&n[4]), "the newest survive eviction");
        assert!(!s.take_nonce(&n[0]), "the oldest are evicted");
    }

    #[test]
    fn issued_tokens_verify_and_keep_the_referral_start_param() {
        let secret = "a-secret-long-enough-for-hs256-tokens";
        let s = SignIn::new(SignInConfig::default(), secret);
        let issued = s.issue_token("tg:42".into(), Some("ref-7".into())).unwrap();
        assert_eq!(issued.start_param.as_deref(), Some("ref-7"));
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &issued.access_token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "tg:42");
        assert_eq!(claims["start_param"], "ref-7");
        assert_eq!(claims["role"], "authenticated");
    }

    #[test]
    fn without_a_secret_sign_in_is_disabled() {
        let s = SignIn::new(SignInConfig::default(), "");
        assert_eq!(s.issue_nonce(), Err(SignInError::Disabled));
    }
}
