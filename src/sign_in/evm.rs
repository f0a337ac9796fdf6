//! EVM wallet sign-in: EIP-191 `personal_sign` recovery and the SIWE-style (EIP-4361) message
//! Locus asks wallets to sign. Pure functions; the endpoint lives in `http::sign_in`.
//!
//! k256 (RustCrypto) for secp256k1 public-key recovery and sha3 for Keccak-256: the same
//! family as the rest of Locus's crypto, no C, and nothing of a full Ethereum stack.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvmError {
    #[error("signature must be 65 bytes of hex (r, s, v)")]
    SignatureFormat,
    #[error("v must be 0, 1, 27 or 28")]
    RecoveryByte,
    #[error("high-s signature (EIP-2): normalise s before signing")]
    HighS,
    #[error("no public key recovers from this signature")]
    Unrecoverable,
    #[error("the message is not a sign-in message: {0}")]
    Message(&'static str),
}

/// The EIP-191 digest of a `personal_sign` message:
/// `keccak256("\x19Ethereum Signed Message:\n" + len(message) + message)`.
pub fn eip191_digest(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The address (`0x` + 40 lower-case hex digits) that signed `message` with `signature`
/// (65 bytes `r ‖ s ‖ v`, hex with or without `0x`). v ∈ {0, 1, 27, 28}; high-s signatures are
/// refused, so one signed message has one accepted signature.
pub fn recover_address(message: &[u8], signature: &str) -> Result<String, EvmError> {
    let hex_sig = signature.strip_prefix("0x").unwrap_or(signature);
    let bytes = hex::decode(hex_sig).map_err(|_| EvmError::SignatureFormat)?;
    if bytes.len() != 65 {
        return Err(EvmError::SignatureFormat);
    }
    let sig = Signature::from_slice(&bytes[..64]).map_err(|_| EvmError::SignatureFormat)?;
    if sig.normalize_s().is_some() {
        return Err(EvmError::HighS);
    }
    let recid = match bytes[64] {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => return Err(EvmError::RecoveryByte),
    };
    let recid = RecoveryId::from_byte(recid).ok_or(EvmError::RecoveryByte)?;
    let key = VerifyingKey::recover_from_prehash(&eip191_digest(message), &sig, recid)
        .map_err(|_| EvmError::Unrecoverable)?;
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    Ok(format!("0x{}", hex::encode(&hash[12..])))
}

/// The fields of a sign-in message Locus checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInMessage {
    pub domain: String,
    /// As written in the message (checksummed or not).
    pub address: String,
    pub nonce: String,
    /// Seconds since the Unix epoch, when the message says it expires.
    pub expires_at_s: Option<i64>,
}

/// The first line's tail, after the domain.
const HEADER_TAIL: &str = " wants you to sign in with your Ethereum account:";

/// Parses an EIP-4361-shaped message: `<domain> wants you to sign in with your Ethereum
/// account:` / `<address>` / … / `Nonce: <nonce>` / `Expiration Time: <RFC 3339>` (optional).
pub fn parse_message(message: &str) -> Result<SignInMessage, EvmError> {
    let mut lines = message.lines();
    let domain = lines
        .next()
        .and_then(|l| l.strip_suffix(HEADER_TAIL))
        .filter(|d| !d.is_empty())
        .ok_or(EvmError::Message(
            "the first line must be '<domain> wants you to sign in with your Ethereum account:'",
        ))?;
    let address = lines
        .next()
        .map(str::trim)
        .filter(|a| a.len() == 42 && a.starts_with("0x") && hex::decode(&a[2..]).is_ok())
        .ok_or(EvmError::Message("the second line must be the 0x address"))?;
    let field = |name: &str| {
        message
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let nonce = field("Nonce: ")
        .filter(|n| !n.is_empty())
        .ok_or(EvmError::Message("a 'Nonce: ' line is required"))?;
    let expires_at_s = match field("Expiration Time: ") {
        None => None,
        Some(t) => Some(
            locus_storage::time::parse_rfc3339_ms(t)
                .map(|ms| ms.div_euclid(1000))
                .ok_or(EvmError::Message("Expiration Time must be RFC 3339"))?,
        ),
    };
    Ok(SignInMessage {
        domain: domain.to_owned(),
        address: address.to_owned(),
        nonce: nonce.to_owned(),
        expires_at_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // viem's signMessage example: Anvil's account #0 signing "hello world" (EIP-191).
    const VIEM_SIG: &str = "0xa461f509887bd19e312c0c58467ce8ff8e300d3c1a90b608a760c5b80318eaf15fe57c96f9175d6cd4daad4663763baa7e78836e067d0163e9a2ccf2ff753f5b1b";
    const ANVIL_0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

    #[test]
    fn eip191_digests_match_the_published_vectors() {
        assert_eq!(
            hex::encode(eip191_digest(b"hello world")),
            "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
        );
        assert_eq!(
            hex::encode(eip191_digest(&[0xde, 0xad, 0xbe, 0xaf])),
            "ca1ad489ab60ea581e6c119cc39d94ddbfc5faa0e178a23ca66202c8c2a72277"
        );
    }

    #[test]
    fn recovers_the_signers_of_the_published_vectors() {
        assert_eq!(recover_address(b"hello world", VIEM_SIG).unwrap(), ANVIL_0);
        let eth_sign = "0xa3f20717a250c2b0b729b7e5becbff67fdaef7e0699da4de7ca5895b02a170a12d887fd3b17bfdce3481f10bea41f45ba9f709d39ce8325427b57afcfc994cee1b";
        assert_eq!(
            recover_address(&[0xde, 0xad, 0xbe, 0xaf], eth_sign).unwrap(),
            "0x9b2055d370f73ec7d8a03e965129118dc8f5bf83"
        );
    }

    #[test]
    fn v_is_normalised_high_s_and_bad_v_are_refused() {
        // v = 0 instead of 27 recovers the same address.
        let v0 = format!("{}00", &VIEM_SIG[..VIEM_SIG.len() - 2]);
        assert_eq!(recover_address(b"hello world", &v0).unwrap(), ANVIL_0);
        // The high-s twin (s' = n − s, v' = 55 − v) recovers too with lax libraries: refused.
        let high_s = format!(
            "{}a01a836906e8a2932b2552b99c89c4543c365978a8cb9ed7d62f9199d0c101e61c",
            &VIEM_SIG[..2 + 64]
        );
        assert_eq!(
            recover_address(b"hello world", &high_s),
            Err(EvmError::HighS)
        );
        let bad_v = format!("{}1d", &VIEM_SIG[..VIEM_SIG.len() - 2]);
        assert_eq!(
            recover_address(b"hello world", &bad_v),
            Err(EvmError::RecoveryByte)
        );
        assert_eq!(
            recover_address(b"hello world", "0x1234"),
            Err(EvmError::SignatureFormat)
        );
        // Another message: a valid signature, of someone else.
        assert_ne!(recover_address(b"hello worle", VIEM_SIG).unwrap(), ANVIL_0);
    }

    #[test]
    fn sign_in_messages_are_parsed_and_malformed_ones_refused() {
        let m = "lo.example wants you to sign in with your Ethereum account:\n\
                 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\nSign in to Lo.\n\n\
                 URI: https://lo.example\nVersion: 1\nChain ID: 1\nNonce: abc123\n\
                 Issued At: 2026-11-24T10:00:00Z\nExpiration Time: 2026-11-24T10:05:00Z";
        let p = parse_message(m).unwrap();
        assert_eq!(p.domain, "lo.example");
        assert_eq!(p.address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(p.nonce, "abc123");
        assert_eq!(p.expires_at_s, Some(1_795_514_700));
        assert!(parse_message("hello world").is_err());
        assert!(parse_message(&m.replace("Nonce: abc123\n", "")).is_err());
        assert!(
            parse_message(&m.replace("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x12"))
                .is_err()
        );
    }
}
