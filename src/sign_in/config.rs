//! `[sign_in]` in config.toml: the domains, lifetimes and bounds of sign-in, checked at start.

use serde::Deserialize;

use super::telegram;

/// `[sign_in]` in config.toml.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignInConfig {
    /// Domains a signed sign-in message may name (the dapp's own). Default `["localhost"]`.
    pub domains: Vec<String>,
    /// How long an issued nonce may be used, in seconds. Default 300.
    pub nonce_ttl_s: u64,
    /// Unexpired unused nonces kept at most; when full, new nonce requests are refused (503
    /// `SignInBusy`) rather than drop someone's live nonce. Default 100,000.
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
    /// Oldest `auth_date` accepted, in seconds. Short because `initData` is a bearer credential
    /// other parties may see, and a Mini App signs in when it opens. Default 300.
    pub telegram_max_age_s: i64,
    /// Used `initData` remembered (until their `auth_date` leaves the window) to refuse
    /// replays; when full, Telegram sign-in is refused (503 `SignInBusy`) rather than forget
    /// one. Default 100,000.
    pub telegram_used_max: usize,
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
            telegram_max_age_s: 300,
            telegram_used_max: 100_000,
            ton_proof_ttl_s: 900,
        }
    }
}

impl SignInConfig {
    /// Checks the bounds are usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.nonces_max == 0 || self.telegram_used_max == 0 {
            return Err("sign_in.nonces_max and sign_in.telegram_used_max must be positive".into());
        }
        if self.telegram_max_age_s <= 0 {
            return Err("sign_in.telegram_max_age_s must be positive".into());
        }
        Ok(())
    }
}
