//! Telegram Mini App sign-in: `initData` validated first-party (HMAC-SHA256 with a bot token)
//! or third-party (Ed25519 with Telegram's public key and the bot id), then checked for
//! freshness, and named by a replay key so it signs in once. Pure functions; the algorithms
//! are Telegram's ("Validating data received via the Mini App" in its Mini Apps docs).

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Telegram's production key for third-party validation.
pub const TELEGRAM_PUBLIC_KEY_PROD: &str =
    "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d";
/// Telegram's test-environment key.
pub const TELEGRAM_PUBLIC_KEY_TEST: &str =
    "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec";
/// Seconds an `auth_date` may lie in the future (clock skew).
const FUTURE_SKEW_S: i64 = 60;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    #[error("initData is not a query string with a hash")]
    Format,
    #[error("the signature does not match any configured bot")]
    Signature,
    #[error("auth_date is missing")]
    AuthDateMissing,
    #[error("auth_date is not a number")]
    AuthDateInvalid,
    #[error("initData is too old (or from the future)")]
    Expired,
    #[error("initData has no user with a numeric id")]
    NoUser,
}

/// The decoded `key=value` pairs of `initData`, in their order.
#[derive(Debug, Clone)]
pub struct InitData(Vec<(String, String)>);

impl InitData {
    /// Percent-decodes the query string (Go's `url.ParseQuery` semantics).
    pub fn parse(init_data: &str) -> Result<InitData, TelegramError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(init_data.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let data = InitData(pairs);
        if data.get("hash").is_none_or(str::is_empty) {
            return Err(TelegramError::Format);
        }
        Ok(data)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `k=v` lines sorted by key, without the `skip`ped keys, joined with `\n`.
    fn check_string(&self, skip: &[&str]) -> String {
        let mut pairs: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.sort();
        pairs.join("\n")
    }

    /// First-party: `hash == hex(HMAC(key = HMAC(key = "WebAppData", bot_token), check))`,
    /// where the check string keeps every field but `hash` (`signature` included).
    pub fn signed_by_bot_token(&self, bot_token: &str) -> bool {
        let Some(Ok(hash)) = self.get("hash").map(hex::decode) else {
            return false;
        };
        let mut secret = HmacSha256::new_from_slice(b"WebAppData").expect("any key length");
        secret.update(bot_token.as_bytes());
        let secret = secret.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(&secret).expect("any key length");
        mac.update(self.check_string(&["hash"]).as_bytes());
        // Constant time.
        mac.verify_slice(&hash).is_ok()
    }

    /// Third-party: Ed25519 over `"{bot_id}:WebAppData\n"` + the check string without `hash`
    /// and `signature`; `signature` is unpadded base64url.
    pub fn signed_for_bot_id(&self, bot_id: i64, public_key: &[u8; 32]) -> bool {
        let Some(sig) = self.get("signature") else {
            return false;
        };
        let Ok(sig) =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig.trim_end_matches('='))
        else {
            return false;
        };
        let (Ok(sig), Ok(key)) = (
            Signature::from_slice(&sig),
            VerifyingKey::from_bytes(public_key),
        ) else {
            return false;
        };
        let message = format!(
            "{bot_id}:WebAppData\n{}",
            self.check_string(&["hash", "signature"])
        );
        key.verify(message.as_bytes(), &sig).is_ok()
    }

    /// `auth_date`, if within `max_age_s` of `now_s` and not in the future. Saturating: a
    /// signed `auth_date` near `i64::MIN` must not wrap into the window.
    pub fn fresh(&self, now_s: i64, max_age_s: i64) -> Result<i64, TelegramError> {
        let date: i64 = self
            .get("auth_date")
            .ok_or(TelegramError::AuthDateMissing)?
            .parse()
            .map_err(|_| TelegramError::AuthDateInvalid)?;
        if now_s.saturating_sub(date) > max_age_s || date > now_s.saturating_add(FUTURE_SKEW_S) {
            return Err(TelegramError::Expired);
        }
        Ok(date)
    }

    /// Names this sign-in for replay refusal: SHA-256 of the signed fields (the check string
    /// without `hash` and `signature`). Not the `hash` field itself: third-party validation
    /// does not cover it, and its hex may be spelt in either case, so a replay could present
    /// the same signed data under many hashes.
    pub fn replay_key(&self) -> [u8; 32] {
        Sha256::digest(self.check_string(&["hash", "signature"]).as_bytes()).into()
    }

    /// The Telegram user id from the `user` JSON.
    pub fn user_id(&self) -> Result<i64, TelegramError> {
        let user: serde_json::Value = self
            .get("user")
            .and_then(|u| serde_json::from_str(u).ok())
            .ok_or(TelegramError::NoUser)?;
        user["id"].as_i64().ok_or(TelegramError::NoUser)
    }
}

/// A 32-byte key from hex.
pub fn public_key(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_TOKEN: &str = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8";
    const V1: &str = "query_id=AAHdF6IQAAAAAN0XohDhrOrc&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%7D&auth_date=1662771648&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2";
    const V2_TOKEN: &str = "7342037359:AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4";
    const V2: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733509682&signature=TYJxVcisqbWjtodPepiJ6ghziUL94-KNpG8Pau-X7oNNLNBM72APCpi_RKiUlBvcqo5L-LAxIc3dnTzcZX_PDg&hash=a433d8f9847bd6addcc563bff7cc82c89e97ea0d90c11fe5729cae6796a36d73";
    const V2_BOT_ID: i64 = 7342037359;
    /// V3, init-data-golang's third-party vector (same user as V2, another auth_date).
    const V3: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733584787&hash=2174df5b000556d044f3f020384e879c8efcab55ddea2ced4eb752e93e7080d6&signature=zL-ucjNyREiHDE8aihFwpfR9aggP2xiAo3NSpfe-p7IbCisNlDKlo7Kb6G4D0Ao2mBrSgEk4maLSdv6MLIlADQ";

    #[test]
    fn first_party_vectors_validate_and_their_variants_do_not() {
        let v1 = InitData::parse(V1).unwrap();
        assert!(v1.signed_by_bot_token(V1_TOKEN));
        assert!(!v1.signed_by_bot_token(V2_TOKEN));
        assert_eq!(v1.user_id(), Ok(279058397));
        // V1 is from 2022: valid signature, expired for any sane window.
        assert_eq!(v1.fresh(1_800_000_000, 86_400), Err(TelegramError::Expired));
        assert_eq!(v1.fresh(1_662_771_700, 86_400), Ok(1_662_771_648));
        let v2 = InitData::parse(V2).unwrap();
        assert!(
            v2.signed_by_bot_token(V2_TOKEN),
            "+, ?, \\/ and the signature field"
        );
        let sender = InitData::parse(&V2.replace("chat_type=private", "chat_type=sender")).unwrap();
        assert!(!sender.signed_by_bot_token(V2_TOKEN));
        let renamed = InitData::parse(&V2.replace("signature=", "modified=")).unwrap();
        assert!(
            !renamed.signed_by_bot_token(V2_TOKEN),
            "signature stays in the check"
        );
        let appended = InitData::parse(&format!("{V1}abc")).unwrap();
        assert!(!appended.signed_by_bot_token(V1_TOKEN));
    }

    #[test]
    fn third_party_validation_uses_the_bot_id_and_telegrams_key() {
        let v2 = InitData::parse(V2).unwrap();
        let prod = public_key(TELEGRAM_PUBLIC_KEY_PROD).unwrap();
        let test = public_key(TELEGRAM_PUBLIC_KEY_TEST).unwrap();
        assert!(v2.signed_for_bot_id(V2_BOT_ID, &prod));
        assert!(!v2.signed_for_bot_id(V2_BOT_ID, &test));
        assert!(!v2.signed_for_bot_id(V2_BOT_ID + 1, &prod));
        let sender = InitData::parse(&V2.replace("chat_type=private", "chat_type=sender")).unwrap();
        assert!(!sender.signed_for_bot_id(V2_BOT_ID, &prod));
        let v3 = InitData::parse(V3).unwrap();
        assert!(v3.signed_for_bot_id(V2_BOT_ID, &prod));
        assert!(!v3.signed_for_bot_id(V2_BOT_ID, &test));
        assert!(!v3.signed_for_bot_id(V2_BOT_ID + 1, &prod));
        assert_eq!(v3.fresh(1_733_584_800, 86_400), Ok(1_733_584_787));
    }

    #[test]
    fn malformed_init_data_is_refused_with_its_reason() {
        assert!(InitData::parse("no_hash=true").is_err());
        assert!(InitData::parse("here comes something wrong;").is_err());
        let no_date = InitData::parse("hash=abc").unwrap();
        assert_eq!(no_date.fresh(0, 60), Err(TelegramError::AuthDateMissing));
        let bad_date = InitData::parse("hash=abc&auth_date=test").unwrap();
        assert_eq!(bad_date.fresh(0, 60), Err(TelegramError::AuthDateInvalid));
        let future = InitData::parse("hash=abc&auth_date=2000").unwrap();
        assert_eq!(future.fresh(1_000, 86_400), Err(TelegramError::Expired));
    }

    /// F24: auth_date at the ends of i64 is refused as expired, never wrapped into the window
    /// (release builds wrapped `now - i64::MIN` to a negative age) nor panicking (debug).
    #[test]
    fn extreme_auth_dates_are_expired_not_overflowed() {
        for date in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 30] {
            let data = InitData::parse(&format!("hash=abc&auth_date={date}")).unwrap();
            for (now, max_age) in [(1_800_000_000, 300), (0, i64::MAX / 2)] {
                assert_eq!(
                    data.fresh(now, max_age),
                    Err(TelegramError::Expired),
                    "{date} at {now}"
                );
            }
        }
    }

    /// F14: the replay key names the signed data, whatever `hash` is presented with it.
    #[test]
    fn the_replay_key_ignores_the_unsigned_hash() {
        let v2 = InitData::parse(V2).unwrap();
        let upper = V2.replace("hash=a433d8f9", "hash=A433D8F9");
        let rehashed = V2.replace("hash=a433d8f9", "hash=00000000");
        for other in [&upper, &rehashed] {
            assert_eq!(
                InitData::parse(other).unwrap().replay_key(),
                v2.replay_key()
            );
        }
        assert!(InitData::parse(&upper)
            .unwrap()
            .signed_by_bot_token(V2_TOKEN));
        assert_ne!(InitData::parse(V3).unwrap().replay_key(), v2.replay_key());
    }
}
