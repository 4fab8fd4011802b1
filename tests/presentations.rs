//! The per-item checks of SPEC §3 through the library: every outcome, RFC 9901 disclosure
//! processing, the issuer cache, and "no input panics".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{AUDIENCE, NOW, Scheme};
use idgate::mint::{self, CredentialSpec, Holder};
use idgate::replay::{MemoryReplayOptions, MemoryReplayStore};
use idgate::revocation::RevocationList;
use idgate::revocation::import::parse_jsonl_parallel;
use idgate::trust::TrustStore;
use idgate::verify::{
    Audiences, Batch, Engine, EngineConfig, Limits, NoRevocations, Outcome, Policy,
    RevocationSource, Standing, State, TrustContext, Verdict, Verifier,
};
use proptest::prelude::*;
use serde_json::{Value, json};

struct Harness {
    verifier: Verifier,
    trust: TrustContext,
    revocations: RevocationList,
    replay: MemoryReplayStore,
    policy: Policy,
}

impl Harness {
    fn new(scheme: &Scheme) -> Harness {
        let engine = Arc::new(
            Engine::new(&EngineConfig {
                threads: 2,
                ..EngineConfig::default()
            })
            .unwrap(),
        );
        let revocations = RevocationList::new();
        revocations.apply_slots(
            &parse_jsonl_parallel(common::revocations_jsonl(NOW).as_bytes(), 1).unwrap(),
        );
        Harness {
            verifier: Verifier::new(engine, Limits::default()),
            trust: TrustContext::new(
                TrustStore::from_jwks(scheme.jwks().to_string().as_bytes()).unwrap(),
                1 << 20,
            ),
            revocations,
            replay: MemoryReplayStore::new(MemoryReplayOptions {
                capacity: 1000,
                watermark: None,
            }),
            policy: Policy {
                audiences: Audiences::Only(vec![AUDIENCE.into()]),
                ..Policy::default()
            },
        }
    }

    /// The one entry point of these tests.
    fn check_with(
        &self,
        presentations: &[String],
        return_claims: bool,
        revocation: &dyn RevocationSource,
    ) -> Vec<Verdict> {
        let batch = Batch::new(presentations, NOW, &self.policy, return_claims);
        self.verifier.verify(
            &batch,
            State {
                trust: &self.trust,
                revocation,
                replay: &self.replay,
            },
        )
    }

    fn check(&self, presentations: &[String]) -> Vec<Verdict> {
        self.check_with(presentations, false, &self.revocations)
    }

    fn outcome(&self, presentation: &str) -> Outcome {
        self.check(&[presentation.to_string()])[0].outcome
    }

    /// Signatures the engine has verified so far.
    fn signatures(&self) -> u64 {
        self.verifier
            .engine()
            .stats()
            .signatures
            .load(Ordering::Relaxed)
    }
}

#[test]
fn every_case_gets_its_outcome_in_one_batch_and_alone() {
    let mut scheme = Scheme::new(1);
    let cases = common::outcome_cases(&mut scheme);
    let presentations: Vec<String> = cases.iter().map(|c| c.presentation.clone()).collect();
    let verdicts = Harness::new(&scheme).check(&presentations);
    for (case, verdict) in cases.iter().zip(&verdicts) {
        assert_eq!(
            verdict.outcome.as_str(),
            case.expected,
            "case {:?}: {:?}",
            case.name,
            verdict.detail
        );
    }
    // Alone (a fresh replay store each, so the replay pair is judged as in the batch).
    for case in cases.iter().filter(|c| c.name != "screenshot shown again") {
        let outcome = Harness::new(&scheme).outcome(&case.presentation);
        assert_eq!(
            outcome.as_str(),
            case.expected,
            "case {:?} alone",
            case.name
        );
    }
}

#[test]
fn valid_results_carry_the_credential_and_revoked_ones_the_reason() {
    let mut scheme = Scheme::new(2);
    let harness = Harness::new(&scheme);
    let verdicts = harness.check(&[
        scheme.present("1012345678", "card-0001"),
        scheme.present("1012345678", "card-revoked"),
    ]);
    let valid = serde_json::to_value(&verdicts[0]).unwrap();
    assert_eq!(valid["outcome"], "valid");
    assert_eq!(valid["sub"], "1012345678");
    assert_eq!(valid["jti"], "card-0001");
    assert_eq!(valid["iss"], common::ISS);
    assert_eq!(valid["vct"], "urn:eudi:pid:1");
    assert!(valid.get("claims").is_none(), "claims only on request");
    let revoked = serde_json::to_value(&verdicts[1]).unwrap();
    assert_eq!(
        revoked,
        json!({"outcome": "revoked", "reason": "stolen", "since": NOW - 100})
    );
}

#[test]
fn stale_revocation_data_is_never_answered_as_valid() {
    struct Stale;
    impl RevocationSource for Stale {
        fn standing(&self, _: &str, _: &str, _: i64) -> Standing {
            Standing::Good
        }
        fn is_current(&self, _: i64) -> bool {
            false
        }
    }
    let mut scheme = Scheme::new(3);
    let harness = Harness::new(&scheme);
    let verdicts = harness.check_with(&[scheme.present("1", "c1")], false, &Stale);
    assert_eq!(verdicts[0].outcome, Outcome::StatusUndetermined);
}

#[test]
fn a_full_replay_store_fails_closed() {
    let mut scheme = Scheme::new(4);
    let mut harness = Harness::new(&scheme);
    harness.replay = MemoryReplayStore::new(MemoryReplayOptions {
        capacity: 1,
        watermark: None,
    });
    let verdicts = harness.check(&[scheme.present("1", "c1"), scheme.present("2", "c2")]);
    assert_eq!(verdicts[0].outcome, Outcome::Valid);
    assert_eq!(verdicts[1].outcome, Outcome::ReplayUnavailable);
}

#[test]
fn a_forged_item_never_burns_a_genuine_nonce() {
    let mut scheme = Scheme::new(5);
    let harness = Harness::new(&scheme);
    let genuine = scheme.present("1012345678", "card-0001");
    let forged = common::tamper_payload(&genuine);
    // Same (iss, jti, nonce) but a bad signature, placed first.
    let verdicts = harness.check(&[forged, genuine]);
    assert_eq!(verdicts[0].outcome, Outcome::BadSignature);
    assert_eq!(verdicts[1].outcome, Outcome::Valid);
}

#[test]
fn bearer_copies_pass_only_where_policy_allows_and_are_not_replay_tracked() {
    let mut scheme = Scheme::new(6);
    let mut harness = Harness::new(&scheme);
    harness.policy.require_key_binding = false;
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("1", "c1", NOW - 10, Some(holder.public_key())),
    );
    let bearer = Holder::sd_jwt(&credential, None);
    let verdicts = harness.check(&[bearer.clone(), bearer]);
    assert_eq!(verdicts[0].outcome, Outcome::Valid);
    assert_eq!(verdicts[1].outcome, Outcome::Valid);
}

#[test]
fn the_time_window_edges_follow_the_skew() {
    let mut scheme = Scheme::new(7);
    let harness = Harness::new(&scheme);
    let holder = scheme.holder();
    let mut spec = CredentialSpec::id_card("1", "c1", NOW - 100, Some(holder.public_key()));
    let mut at = |exp: i64, kb_iat: i64| {
        spec.exp = exp;
        let credential = scheme.issuer.issue(&mut scheme.rng, &spec);
        let mut kb = scheme.kb();
        kb.iat = kb_iat;
        harness.outcome(&holder.present(&credential, None, &kb))
    };
    // exp is exclusive, extended by the 5 s skew.
    assert_eq!(at(NOW - 4, NOW), Outcome::Valid);
    assert_eq!(at(NOW - 5, NOW), Outcome::Expired);
    // KB iat accepted within [now - 60 - 5, now + 5].
    assert_eq!(at(NOW + 999, NOW - 65), Outcome::Valid);
    assert_eq!(at(NOW + 999, NOW - 66), Outcome::PresentationStale);
    assert_eq!(at(NOW + 999, NOW + 5), Outcome::Valid);
    assert_eq!(at(NOW + 999, NOW + 6), Outcome::PresentationStale);
}

// ---- RFC 9901 §7 disclosure processing -------------------------------------------------------

/// Issues a credential whose payload is built by `build` from a list of disclosures the test
/// makes itself, then presents it with the given disclosure texts.
fn present_raw(scheme: &mut Scheme, payload_extra: Value, disclosures: &[String]) -> String {
    let holder = scheme.holder();
    let spec =
        CredentialSpec::id_card("1012345678", "card-9", NOW - 100, Some(holder.public_key()));
    let credential = scheme.issuer.issue(&mut scheme.rng, &spec);
    let forged = common::forge_issuer_jwt(&credential.issuer_jwt, &scheme.issuer, |_, payload| {
        for (name, value) in payload_extra.as_object().unwrap() {
            payload[name] = value.clone();
        }
    });
    let mut sd_jwt = format!("{forged}~");
    for disclosure in disclosures {
        sd_jwt.push_str(disclosure);
        sd_jwt.push('~');
    }
    let kb = scheme.kb();
    let kb_jwt = holder.key_binding_jwt(&sd_jwt, &kb);
    sd_jwt + &kb_jwt
}

fn array_disclosure(scheme: &mut Scheme, value: Value) -> String {
    let salt = mint::nonce(&mut scheme.rng);
    idgate::b64::encode(json!([salt, value]).to_string())
}

#[test]
fn nested_and_array_disclosures_are_applied_recursively() {
    let mut scheme = Scheme::new(8);
    let harness = Harness::new(&scheme);
    let locality = mint::disclosure(&mut scheme.rng, "locality", &json!("Lagos"));
    let address = mint::disclosure(
        &mut scheme.rng,
        "address",
        &json!({"_sd": [mint::digest(&locality)], "country": "NG"}),
    );
    let de = array_disclosure(&mut scheme, json!("DE"));
    let decoy = mint::digest("decoy");
    let extra = json!({
        "_sd": [mint::digest(&address), decoy],
        "nationalities": [{"...": mint::digest(&de)}, "FR", {"...": mint::digest("decoy element")}],
    });
    let presentation = present_raw(&mut scheme, extra, &[address, locality, de]);
    let verdict = &harness.check_with(&[presentation], true, &NoRevocations)[0];
    assert_eq!(verdict.outcome, Outcome::Valid, "{:?}", verdict.detail);
    let claims = verdict.claims.as_ref().unwrap();
    assert_eq!(
        claims["address"],
        json!({"locality": "Lagos", "country": "NG"})
    );
    assert_eq!(claims["nationalities"], json!(["DE", "FR"]));
    assert!(claims.get("_sd").is_none() && claims.get("_sd_alg").is_none());
    // The id_card's own disclosures were not presented, so they stay hidden.
    assert!(claims.get("given_name").is_none());
}

#[test]
fn disclosure_rule_violations_are_each_refused() {
    let mut scheme = Scheme::new(9);
    let harness = Harness::new(&scheme);
    let name = mint::disclosure(&mut scheme.rng, "given_name", &json!("Ada"));
    let element = array_disclosure(&mut scheme, json!("DE"));
    let reserved = mint::disclosure(&mut scheme.rng, "_sd", &json!([]));
    let sub_again = mint::disclosure(&mut scheme.rng, "sub", &json!("999"));
    let twin = mint::disclosure(&mut scheme.rng, "given_name", &json!("Eve"));
    let not_array = idgate::b64::encode(r#"{"a":1}"#);
    // Arrays of other lengths than 2 (element) and 3 (property) are not disclosures.
    let sized = |items: Value| idgate::b64::encode(items.to_string());
    let empty = sized(json!([]));
    let one = sized(json!(["salt-only-1234567890"]));
    let four = sized(json!(["salt-4-1234567890", "given_name", "Ada", "extra"]));
    let five = sized(json!(["salt-5-1234567890", "given_name", "Ada", {"a": [1]}, "x"]));
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        (
            "digest listed twice",
            json!({"_sd": [mint::digest(&name), mint::digest(&name)]}),
            vec![name.clone()],
        ),
        (
            "digest in two places",
            json!({"_sd": [mint::digest(&name)], "x": {"_sd": [mint::digest(&name)]}}),
            vec![name.clone()],
        ),
        (
            "array disclosure in an object",
            json!({"_sd": [mint::digest(&element)]}),
            vec![element.clone()],
        ),
        (
            "object disclosure in an array",
            json!({"list": [{"...": mint::digest(&name)}]}),
            vec![name.clone()],
        ),
        (
            "reserved name",
            json!({"_sd": [mint::digest(&reserved)]}),
            vec![reserved],
        ),
        (
            "collides with a plain claim",
            json!({"_sd": [mint::digest(&sub_again)]}),
            vec![sub_again],
        ),
        (
            "two disclosures, one name",
            json!({"_sd": [mint::digest(&name), mint::digest(&twin)]}),
            vec![name.clone(), twin],
        ),
        ("_sd not an array", json!({"x": {"_sd": "abc"}}), vec![]),
        (
            "disclosure not an array",
            json!({"_sd": [mint::digest(&not_array)]}),
            vec![not_array],
        ),
        ("disclosure not base64url", json!({}), vec!["!!!".into()]),
        (
            "empty array",
            json!({"_sd": [mint::digest(&empty)]}),
            vec![empty],
        ),
        (
            "one element",
            json!({"list": [{"...": mint::digest(&one)}]}),
            vec![one],
        ),
        (
            "four elements",
            json!({"_sd": [mint::digest(&four)]}),
            vec![four],
        ),
        (
            "five elements",
            json!({"_sd": [mint::digest(&five)]}),
            vec![five],
        ),
    ];
    for (label, extra, disclosures) in cases {
        let presentation = present_raw(&mut scheme, extra, &disclosures);
        let verdict = harness.check(&[presentation]).remove(0);
        assert_eq!(verdict.outcome, Outcome::DisclosureInvalid, "{label}");
        if [
            "empty array",
            "one element",
            "four elements",
            "five elements",
        ]
        .contains(&label)
        {
            assert_eq!(
                verdict.detail,
                Some("disclosure is not a 2- or 3-element array"),
                "{label}"
            );
        }
    }
}

// ---- the issuer cache -----------------------------------------------------------------------

#[test]
fn a_cached_credential_costs_one_signature_and_a_trust_change_empties_the_cache() {
    let mut scheme = Scheme::new(10);
    let harness = Harness::new(&scheme);
    // A new trust context (what a reload builds) starts empty.
    let reloaded = Harness::new(&scheme);
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("1", "c1", NOW - 10, Some(holder.public_key())),
    );
    let mut show = |harness: &Harness| {
        let kb = scheme.kb();
        harness.outcome(&holder.present(&credential, None, &kb))
    };
    let before = harness.signatures();
    assert_eq!(show(&harness), Outcome::Valid);
    assert_eq!(
        harness.signatures() - before,
        2,
        "first showing: issuer + holder"
    );
    let before = harness.signatures();
    assert_eq!(show(&harness), Outcome::Valid);
    assert_eq!(
        harness.signatures() - before,
        1,
        "second showing: holder only"
    );
    let before = reloaded.signatures();
    assert_eq!(show(&reloaded), Outcome::Valid);
    assert_eq!(reloaded.signatures() - before, 2);
}

#[test]
fn a_cached_credential_still_gets_every_per_presentation_check() {
    let mut scheme = Scheme::new(11);
    let harness = Harness::new(&scheme);
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("1", "c1", NOW - 10, Some(holder.public_key())),
    );
    let kb = scheme.kb();
    assert_eq!(
        harness.outcome(&holder.present(&credential, None, &kb)),
        Outcome::Valid
    );
    // Now cached: a stale KB, a foreign holder and a replay must still fail.
    let mut stale = scheme.kb();
    stale.iat = NOW - 3600;
    assert_eq!(
        harness.outcome(&holder.present(&credential, None, &stale)),
        Outcome::PresentationStale
    );
    let stranger = scheme.holder();
    let kb = scheme.kb();
    assert_eq!(
        harness.outcome(&stranger.present(&credential, None, &kb)),
        Outcome::KeyBindingInvalid
    );
    let kb = scheme.kb();
    let shown = holder.present(&credential, None, &kb);
    assert_eq!(harness.outcome(&shown), Outcome::Valid);
    assert_eq!(harness.outcome(&shown), Outcome::Replayed);
}

#[test]
fn a_cached_credential_returns_the_same_claims_as_its_first_showing() {
    // The cache keeps no payload text: claims of a cached credential are rebuilt from the
    // presentation's own issuer JWT, so for every selection of disclosures they must equal what
    // a verifier without a cache returns for the same presentation.
    let mut scheme = Scheme::new(12);
    let cached = Harness::new(&scheme);
    let mut uncached = Harness::new(&scheme);
    uncached.trust = TrustContext::new(
        TrustStore::from_jwks(scheme.jwks().to_string().as_bytes()).unwrap(),
        0,
    );
    let holder = scheme.holder();
    let credential = scheme.issuer.issue(
        &mut scheme.rng,
        &CredentialSpec::id_card("1", "c1", NOW - 10, Some(holder.public_key())),
    );
    let claims_of = |harness: &Harness, presentation: &str| {
        let verdict = harness
            .check_with(&[presentation.to_owned()], true, &harness.revocations)
            .remove(0);
        assert_eq!(verdict.outcome, Outcome::Valid, "{:?}", verdict.detail);
        verdict.claims.expect("claims requested")
    };
    // The first showing fills the cache.
    let kb = scheme.kb();
    claims_of(&cached, &holder.present(&credential, None, &kb));
    let selections: [Option<&[&str]>; 3] = [None, Some(&["given_name"]), Some(&[])];
    let mut seen = Vec::new();
    for reveal in selections {
        let kb = scheme.kb();
        let presentation = holder.present(&credential, reveal, &kb);
        let before = cached.signatures();
        let from_cache = claims_of(&cached, &presentation);
        assert_eq!(
            cached.signatures() - before,
            1,
            "served from the cache (holder signature only)"
        );
        let fresh = claims_of(&uncached, &presentation);
        assert_eq!(from_cache, fresh, "reveal {reveal:?}");
        seen.push(from_cache);
    }
    assert!(
        seen[0] != seen[1] && seen[1] != seen[2],
        "each selection discloses something different"
    );
}

// ---- robustness -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text, and mutations of a real presentation, always get exactly one outcome.
    #[test]
    fn any_input_gets_an_outcome_and_never_panics(
        noise in ".{0,300}",
        cut in 0usize..2000,
        flip in 0usize..2000,
        byte in any::<u8>(),
    ) {
        let mut scheme = Scheme::new(12);
        let harness = Harness::new(&scheme);
        let genuine = scheme.present("1012345678", "card-0001");
        let mut mutated = genuine.clone().into_bytes();
        let position = flip % mutated.len();
        mutated[position] = byte;
        let mutated = String::from_utf8_lossy(&mutated).into_owned();
        let truncated = genuine[..cut.min(genuine.len())].to_string();
        let inputs = vec![noise, mutated.clone(), truncated, format!("{mutated}~{mutated}")];
        let verdicts = harness.check(&inputs);
        prop_assert_eq!(verdicts.len(), inputs.len());
        if mutated != genuine {
            prop_assert_ne!(verdicts[1].outcome, Outcome::Valid);
        }
    }
}
