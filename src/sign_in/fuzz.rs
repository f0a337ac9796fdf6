//! Property tests of the sign-in parsers on untrusted input: TON BOCs (random bytes, and random
//! DAGs of cells sharing references), Telegram `initData`, and SIWE messages with EIP-191
//! signatures. Every case must return without panicking, within [`CASE_TIME_MAX`]; the BOC
//! cases also check the shared cells hash as an independent per-index computation says.

use std::time::{Duration, Instant};

use base64::Engine;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::{evm, telegram, ton};

/// Time one case may take; a parse that unfolds shared cells takes hours.
const CASE_TIME_MAX: Duration = Duration::from_secs(2);
/// Cases per property: enough to reach the corners, few enough for the whole set to run in
/// about a second in release builds.
const CASES: u32 = 1024;

/// Runs `f`, failing the case if it took longer than [`CASE_TIME_MAX`].
fn bounded<T>(f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(
        started.elapsed() < CASE_TIME_MAX,
        "took {:?}",
        started.elapsed()
    );
    out
}

/// One cell of a generated BOC: its data bytes (the completion tag included when padded) and
/// the indices it refers to, all later than its own.
#[derive(Debug, Clone)]
struct GenCell {
    data: Vec<u8>,
    padded: bool,
    refs: Vec<usize>,
}

impl GenCell {
    fn d2(&self) -> u8 {
        (self.data.len() * 2 - usize::from(self.padded)) as u8
    }
}

/// 1 to 64 cells, each with 0 to 4 references to later cells, biased to the next one so the
/// DAG shares heavily (the F1 shape is one of its draws).
fn gen_dag() -> impl Strategy<Value = Vec<GenCell>> {
    (1..=ton::BOC_CELLS_MAX).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                let refs = if i + 1 == n {
                    Just(Vec::new()).boxed()
                } else {
                    prop::collection::vec(prop_oneof![3 => Just(i + 1), 1 => (i + 1)..n], 0..=4)
                        .boxed()
                };
                (
                    prop::collection::vec(any::<u8>(), 0..=128),
                    any::<bool>(),
                    refs,
                )
                    .prop_map(|(mut data, padded, refs)| {
                        let padded = padded && !data.is_empty();
                        if padded {
                            // A padded cell's last byte holds the completion tag (its lowest
                            // 1) after at least one data bit.
                            let last = data.last_mut().expect("not empty");
                            if *last & 0x7f == 0 {
                                *last |= 0x01;
                            }
                        } else {
                            data.truncate(127);
                        }
                        GenCell { data, padded, refs }
                    })
            })
            .collect::<Vec<_>>()
    })
}

/// The BOC of `cells`, rooted at the first: 1-byte references, 2-byte offsets, no index.
fn boc_of(cells: &[GenCell]) -> Vec<u8> {
    let mut body = Vec::new();
    for c in cells {
        body.extend_from_slice(&[c.refs.len() as u8, c.d2()]);
        body.extend_from_slice(&c.data);
        body.extend(c.refs.iter().map(|&r| r as u8));
    }
    let mut boc = vec![0xb5, 0xee, 0x9c, 0x72, 0x01, 0x02, cells.len() as u8, 1, 0];
    boc.extend_from_slice(&(body.len() as u16).to_be_bytes());
    boc.push(0);
    boc.extend_from_slice(&body);
    boc
}

/// The root's representation hash and depth, computed per index from the serialised form
/// (last cell first), as the audit's reference script does.
fn reference_hash(cells: &[GenCell]) -> ([u8; 32], u16) {
    let mut done: Vec<([u8; 32], u16)> = vec![([0; 32], 0); cells.len()];
    for (i, c) in cells.iter().enumerate().rev() {
        let mut h = Sha256::new();
        h.update([c.refs.len() as u8, c.d2()]);
        let mut data = c.data.clone();
        if c.padded {
            // Bits after the completion tag are not part of the cell.
            let last = data.len() - 1;
            let tag = data[last] & data[last].wrapping_neg();
            data[last] &= !(tag - 1);
        }
        h.update(&data);
        for &r in &c.refs {
            h.update(done[r].1.to_be_bytes());
        }
        for &r in &c.refs {
            h.update(done[r].0);
        }
        let depth = c.refs.iter().map(|&r| done[r].1 + 1).max().unwrap_or(0);
        done[i] = (h.finalize().into(), depth);
    }
    done[0]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Random bytes, with and without the BOC magic in front, never panic the parser.
    #[test]
    fn ton_boc_random_bytes_are_refused_or_parsed(
        header in prop::collection::vec(any::<u8>(), 0..12),
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        bounded(|| {
            let _ = ton::parse_boc(&body);
            let with_magic = [&[0xb5, 0xee, 0x9c, 0x72][..], &header, &body].concat();
            let _ = ton::parse_boc(&with_magic);
        });
    }

    /// Random DAGs of up to 64 cells sharing references parse quickly, to the hash and depth
    /// a per-index computation gives.
    #[test]
    fn ton_boc_dags_with_shared_references_parse_to_their_hash(cells in gen_dag()) {
        let boc = boc_of(&cells);
        let root = bounded(|| ton::parse_boc(&boc)).expect("a well-formed BOC");
        let (hash, depth) = reference_hash(&cells);
        prop_assert_eq!(hex::encode(root.hash()), hex::encode(hash));
        prop_assert_eq!(root.depth(), depth);
    }

    /// A well-formed DAG with one byte changed, then sent as a walletStateInit, is refused or
    /// parsed quickly.
    #[test]
    fn ton_boc_mutated_dags_are_refused_or_parsed(
        cells in gen_dag(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        address in "(0|-1|[+0-9]{1,3}):[0-9a-fA-F]{64}",
    ) {
        let mut boc = boc_of(&cells);
        let i = at.index(boc.len());
        boc[i] = byte;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&boc);
        bounded(|| {
            let _ = ton::parse_boc(&boc);
            let _ = ton::verify(&address, &b64, "lo.example", 0, "p", "AAAA");
        });
    }

    /// Arbitrary `initData` text never panics parsing, freshness, the user or the signatures.
    #[test]
    fn telegram_init_data_random_text_is_refused_or_parsed(
        text in ".{0,512}",
        now in any::<i64>(),
        max_age in any::<i64>(),
    ) {
        bounded(|| exercise_init_data(&text, now, max_age));
    }

    /// Query strings of the fields Telegram signs, with extreme dates and odd users.
    #[test]
    fn telegram_init_data_fields_are_refused_or_parsed(
        fields in prop::collection::vec(
            (
                prop_oneof![
                    Just("hash".to_owned()), Just("auth_date".to_owned()),
                    Just("user".to_owned()), Just("signature".to_owned()),
                    Just("query_id".to_owned()), Just("start_param".to_owned()), ".{0,8}",
                ],
                prop_oneof![
                    any::<i64>().prop_map(|n| n.to_string()),
                    any::<i64>().prop_map(|id| format!("{{\"id\":{id}}}")),
                    "[0-9a-fA-F]{64}",
                    ".{0,64}",
                ],
            ),
            0..8,
        ),
        now in any::<i64>(),
        max_age in any::<i64>(),
    ) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &fields {
            query.append_pair(k, v);
        }
        let text = query.finish();
        bounded(|| exercise_init_data(&text, now, max_age));
    }

    /// Arbitrary text never panics the SIWE message parser.
    #[test]
    fn siwe_random_text_is_refused_or_parsed(text in "(?s).{0,512}") {
        bounded(|| { let _ = evm::parse_message(&text); });
    }

    /// Messages of the SIWE shape with odd domains, addresses, nonces and expiration times.
    #[test]
    fn siwe_shaped_messages_are_refused_or_parsed(
        domain in ".{0,32}",
        address in prop_oneof!["0x[0-9a-fA-F]{40}", ".{0,44}"],
        nonce in ".{0,32}",
        expiry in prop_oneof![
            "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            ".{0,40}",
        ],
        with_expiry in any::<bool>(),
    ) {
        let mut m = format!(
            "{domain} wants you to sign in with your Ethereum account:\n{address}\n\nSign in.\n\n\
             URI: https://{domain}\nVersion: 1\nChain ID: 1\nNonce: {nonce}\n"
        );
        if with_expiry {
            m.push_str(&format!("Expiration Time: {expiry}"));
        }
        bounded(|| { let _ = evm::parse_message(&m); });
    }

    /// Arbitrary signatures (hex or not, any v, high or low s) never panic recovery.
    #[test]
    fn eip191_random_signatures_are_refused_or_recovered(
        message in prop::collection::vec(any::<u8>(), 0..256),
        signature in prop_oneof![
            prop::collection::vec(any::<u8>(), 65).prop_map(|s| format!("0x{}", hex::encode(s))),
            prop::collection::vec(any::<u8>(), 0..70).prop_map(hex::encode),
            ".{0,140}",
        ],
    ) {
        bounded(|| { let _ = evm::recover_address(&message, &signature); });
    }
}

/// Every step the server takes with `initData` before the token.
fn exercise_init_data(text: &str, now: i64, max_age: i64) {
    let Ok(data) = telegram::InitData::parse(text) else {
        return;
    };
    let _ = data.fresh(now, max_age);
    let _ = data.user_id();
    let _ = data.signed_by_bot_token("7342037359:AAHI25ES9xCOMPokpYoz-p8XVrZUdygo2J4");
    let key = telegram::public_key(telegram::TELEGRAM_PUBLIC_KEY_PROD).expect("a valid key");
    let _ = data.signed_for_bot_id(7342037359, &key);
    let _ = data.replay_key();
}
