//! Wallet and Telegram sign-in: verifying an identity proof and issuing a Locus JWT for it.
//!
//! - [`evm`]: EIP-191 `personal_sign` over a SIWE-style message.
//! - [`telegram`]: Mini App `initData`, first party (bot token) or third party (bot id).
//! - [`ton`]: TON Connect `ton_proof`, with the key read from the wallet's state init.
//! - [`SignIn`]: the single-use nonces, the used Telegram `initData`, the token issuer and the
//!   per-IP attempt limit the endpoints (`http::sign_in`) share.
//! - [`single_use`]: the bounded set of single-use keys behind nonces and replay refusal.
//! - [`attempts`]: the per-IP attempt limiter, pruned of idle addresses.
//! - `config.rs`: [`SignInConfig`], the `[sign_in]` section; `error.rs`: [`SignInError`].

pub mod attempts;
mod config;
mod error;
pub mod evm;
pub mod single_use;
pub mod telegram;
pub mod ton;

#[cfg(test)]
mod fuzz;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use attempts::Attempts;
use single_use::{Refused, SingleUse};

pub use config::SignInConfig;
pub use error::SignInError;

/// Seconds a signed timestamp may lie in the future (clock skew).
const FUTURE_SKEW_S: u64 = 60;

/// Bytes of randomness in a nonce (hex-encoded: twice as many characters).
const NONCE_BYTES: usize = 16;

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
    /// Issued nonces, on the monotonic clock of [`SignIn::now_ms`].
    nonces: SingleUse<String>,
    /// Replay keys of the `initData` that signed in, on the wall clock (Unix seconds), as
    /// their `auth_date` is.
    telegram_used: SingleUse<[u8; 32]>,
    attempts: Option<Attempts>,
    started: Instant,
}

impl SignIn {
    /// `jwt_secret` signs the issued tokens (HS256), so clients can present them back.
    pub fn new(config: SignInConfig, jwt_secret: &str) -> SignIn {
        SignIn {
            key: (!jwt_secret.is_empty()).then(|| EncodingKey::from_secret(jwt_secret.as_bytes())),
            attempts: Attempts::new(
                config.attempts_per_ip_per_min,
                Duration::from_millis(attempts::ATTEMPT_KEYS_PRUNE_INTERVAL_MS),
            ),
            nonces: SingleUse::new(config.nonces_max),
            telegram_used: SingleUse::new(config.telegram_used_max),
            started: Instant::now(),
            config,
        }
    }

    pub fn config(&self) -> &SignInConfig {
        &self.config
    }

    /// Milliseconds since this state was made, for nonce deadlines (monotonic).
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts an attempt from `ip`.
    pub fn attempt(&self, ip: Option<IpAddr>) -> Result<(), SignInError> {
        match (&self.attempts, ip) {
            (Some(a), Some(ip)) if !a.check(ip) => {
                locus_actors::metrics::rate_limited("sign_in");
                Err(SignInError::TooManyAttempts)
            }
            _ => Ok(()),
        }
    }

    /// A fresh single-use nonce; `Busy` while `nonces_max` unexpired nonces are out.
    pub fn issue_nonce(&self) -> Result<String, SignInError> {
        if self.key.is_none() {
            return Err(SignInError::Disabled);
        }
        let mut bytes = [0u8; NONCE_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| SignInError::Malformed(e.to_string()))?;
        let nonce = hex::encode(bytes);
        let now = self.now_ms();
        let deadline = now.saturating_add(self.config.nonce_ttl_s.saturating_mul(1_000));
        match self.nonces.insert(nonce.clone(), deadline, now) {
            Ok(()) => Ok(nonce),
            // Present: 128 random bits collided, which is as good as never.
            Err(Refused::Full | Refused::Present) => Err(SignInError::Busy),
        }
    }

    /// Uses up `nonce`: true once, if it was issued and has not expired.
    pub fn take_nonce(&self, nonce: &str) -> bool {
        self.nonces.take(nonce, self.now_ms())
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
    /// init, which hashes to the address and is a known wallet's. The user is
    /// `ton:<workchain>:<lower-case hex>`, one spelling per wallet.
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
        let wallet = ton::verify(
            &proof.address,
            &proof.wallet_state_init,
            &domain.value,
            proof.timestamp,
            &proof.payload,
            &proof.signature,
        )
        .map_err(|e| match e {
            ton::TonError::Address | ton::TonError::Boc(_) | ton::TonError::StateInit => {
                SignInError::Malformed(e.to_string())
            }
            _ => SignInError::InvalidSignature(e.to_string()),
        })?;
        if proof
            .public_key
            .as_deref()
            .is_some_and(|k| !k.eq_ignore_ascii_case(&wallet.public_key))
        {
            return Err(SignInError::InvalidSignature(
                "publicKey is not the wallet's key".into(),
            ));
        }
        if !self.take_nonce(&proof.payload) {
            return Err(SignInError::Nonce);
        }
        self.issue_token(format!("ton:{}", wallet.address), None)
    }

    /// Telegram: `initData` signed by a configured bot (token or id), fresh, and not used
    /// before; the user is `tg:<telegram user id>`.
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
        let now_s = locus_actors::auth::now_s();
        let max_age_s = self.config.telegram_max_age_s;
        let auth_date = data.fresh(now_s as i64, max_age_s).map_err(|e| match e {
            telegram::TelegramError::Expired => SignInError::Expired,
            other => SignInError::Malformed(other.to_string()),
        })?;
        let user = data
            .user_id()
            .map_err(|e| SignInError::Malformed(e.to_string()))?;
        // Last, once it would sign in: remembered while `fresh` would still accept it, plus
        // the skew allowance in case the clock steps back.
        let deadline_s = auth_date
            .saturating_add(max_age_s)
            .saturating_add(FUTURE_SKEW_S as i64 + 1)
            .max(0) as u64;
        match self
            .telegram_used
            .insert(data.replay_key(), deadline_s, now_s)
        {
            Ok(()) => {}
            Err(Refused::Present) => return Err(SignInError::Replayed),
            Err(Refused::Full) => return Err(SignInError::Busy),
        }
        let start_param = data.get("start_param").map(str::to_owned);
        self.issue_token(format!("tg:{user}"), start_param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F25: nonces are single use and bounded; at the bound new ones are refused (Busy) and
    /// the live ones kept, until one is used or expires.
    #[test]
    fn nonces_are_single_use_and_bounded_without_evicting_live_ones() {
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
        let n: Vec<String> = (0..3).map(|_| s.issue_nonce().unwrap()).collect();
        assert_eq!(s.issue_nonce(), Err(SignInError::Busy));
        assert_eq!(s.nonces.live_count(), 3);
        assert!(s.take_nonce(&n[0]), "the oldest live nonce survives");
        let fourth = s.issue_nonce().unwrap();
        assert!(s.take_nonce(&n[1]) && s.take_nonce(&n[2]) && s.take_nonce(&fourth));
    }

    /// F25: expired nonces make room again (a TTL of 0 expires them at once).
    #[test]
    fn expired_nonces_make_room() {
        let s = SignIn::new(
            SignInConfig {
                nonces_max: 2,
                nonce_ttl_s: 0,
                ..SignInConfig::default()
            },
            "secret",
        );
        for _ in 0..10 {
            let n = s.issue_nonce().unwrap();
            assert!(!s.take_nonce(&n), "expired");
        }
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
