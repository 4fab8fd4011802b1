//! Shared test fixtures: a small ID scheme (issuers, holders, trust store, revocations), the
//! case table that produces every outcome of SPEC §3, the reference Ed25519 rule, and access to
//! the shared vectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod crash;
pub mod gateway;
pub mod http;
pub mod redis;

use std::path::{Path, PathBuf};

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use idgate::mint::{self, CredentialSpec, Holder, Issuer, KeyBindingSpec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

/// "Now" for every fixture: 2025-11-23.
pub const NOW: i64 = 1_763_900_000;
pub const AUDIENCE: &str = "https://verifier.example/bank";
pub const ISS: &str = "https://id.example.gov";

/// The scheme: issuers, their trust store, a seeded RNG, and the time everything is minted for.
pub struct Scheme {
    pub issuer: Issuer,
    pub retired: Issuer,
    pub future: Issuer,
    pub other: Issuer,
    pub rng: StdRng,
    /// "Now" for minting: [`NOW`] for library tests, the wall clock for gateway tests.
    pub now: i64,
}

impl Scheme {
    pub fn new(seed: u64) -> Scheme {
        Scheme::at(seed, NOW)
    }

    /// A scheme minting for time `now` (KB-JWTs get `iat = now - 2`).
    pub fn at(seed: u64, now: i64) -> Scheme {
        let mut rng = StdRng::seed_from_u64(seed);
        Scheme {
            issuer: Issuer::generate(&mut rng, "issuer-1", ISS),
            retired: Issuer::generate(&mut rng, "retired-1", ISS),
            future: Issuer::generate(&mut rng, "future-1", ISS),
            other: Issuer::generate(&mut rng, "other-1", "https://other.example"),
            rng,
            now,
        }
    }

    /// A scheme minting for the wall clock, for gateways (which check freshness and replays
    /// against their own clock). KB-JWTs get `iat = now - 2`, so "now" is taken four seconds
    /// ahead: presentations are stamped two seconds after the scheme is made, so after the start
    /// of a gateway started within those two seconds (its replay watermark, in whole seconds),
    /// yet inside the clock skew (5 s) and the freshness window.
    pub fn live(seed: u64) -> Scheme {
        Scheme::at(seed, idgate::clock::unix_now() + 4)
    }

    /// The JWKS trusting all four keys: `retired-1` retired, `future-1` only for credentials
    /// issued from now + 1000 on.
    pub fn jwks(&self) -> Value {
        let now = self.now;
        let mut retired = self.retired.jwk();
        retired["status"] = json!("retired");
        let mut future = self.future.jwk();
        future["nbf"] = json!(now + 1000);
        json!({"keys": [self.issuer.jwk(), retired, future, self.other.jwk()]})
    }

    pub fn holder(&mut self) -> Holder {
        Holder::generate(&mut self.rng)
    }

    pub fn kb(&mut self) -> KeyBindingSpec {
        let now = self.now;
        KeyBindingSpec {
            aud: AUDIENCE.into(),
            nonce: mint::nonce(&mut self.rng),
            iat: now - 2,
        }
    }

    /// A valid presentation of a fresh credential for `sub`/`jti`.
    pub fn present(&mut self, sub: &str, jti: &str) -> String {
        let now = self.now;
        let holder = self.holder();
        let spec = CredentialSpec::id_card(sub, jti, now - 86_400, Some(holder.public_key()));
        let credential = self.issuer.issue(&mut self.rng, &spec);
        let kb = self.kb();
        holder.present(&credential, None, &kb)
    }
}

/// One presentation and the outcome it must get.
pub struct Case {
    pub name: &'static str,
    pub presentation: String,
    pub expected: &'static str,
}

/// Re-signs an issuer JWT after `edit` changes its header and payload.
pub fn forge_issuer_jwt(
    issuer_jwt: &str,
    key: &Issuer,
    edit: impl FnOnce(&mut Value, &mut Value),
) -> String {
    let mut parts = issuer_jwt.split('.');
    let mut header: Value =
        serde_json::from_slice(&idgate::b64::decode(parts.next().unwrap()).unwrap()).unwrap();
    let mut payload: Value =
        serde_json::from_slice(&idgate::b64::decode(parts.next().unwrap()).unwrap()).unwrap();
    edit(&mut header, &mut payload);
    let signing = ed25519_dalek::SigningKey::from_bytes(&key.secret());
    mint::sign_jws(&signing, &header, &payload)
}

/// The revocation entries the case table relies on (JSON Lines).
pub fn revocations_jsonl(now: i64) -> String {
    [
        json!({"kind": "credential", "id": "card-revoked", "status": "revoked", "reason": "stolen", "at": now - 100}),
        json!({"kind": "subject", "id": "2000000002", "status": "suspended", "reason": "other", "at": now - 50}),
        json!({"kind": "subject", "id": "3000000003", "status": "revoked", "reason": "lost", "before": now - 10, "at": now - 10}),
    ]
    .iter()
    .map(|e| format!("{e}\n"))
    .collect()
}

/// Presentations that between them produce every outcome of SPEC §3 except the two that need
/// special store settings (`status_undetermined`, `replay_unavailable`), verified at `scheme.now` with
/// audience AUDIENCE, key binding required, and [`revocations_jsonl`] loaded.
pub fn outcome_cases(scheme: &mut Scheme) -> Vec<Case> {
    let now = scheme.now;
    let mut cases = Vec::new();
    let mut add = |name, presentation: String, expected| {
        cases.push(Case {
            name,
            presentation,
            expected,
        })
    };

    add("valid", scheme.present("1012345678", "card-0001"), "valid");

    // 1. malformed
    add(
        "no tilde",
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA".into(),
        "malformed",
    );
    add("garbage", "~~~".into(), "malformed");
    add(
        "oversized",
        format!("{}~", "a".repeat(17 * 1024)),
        "malformed",
    );
    let holder = scheme.holder();
    let base = CredentialSpec::id_card(
        "1012345678",
        "card-0002",
        now - 86_400,
        Some(holder.public_key()),
    );
    let mut many = base.clone();
    many.disclosable = (0..65).map(|i| (format!("claim{i}"), json!(i))).collect();
    let credential = scheme.issuer.issue(&mut scheme.rng, &many);
    let kb = scheme.kb();
    add(
        "65 disclosures",
        holder.present(&credential, None, &kb),
        "malformed",
    );
    let mut deep = base.clone();
    deep.plain = vec![(
        "deep".into(),
        serde_json::from_str(&format!("{}1{}", "[".repeat(16), "]".repeat(16))).unwrap(),
    )];
    let credential = scheme.issuer.issue(&mut scheme.rng, &deep);
    let kb = scheme.kb();
    add(
        "nesting 17",
        holder.present(&credential, None, &kb),
        "malformed",
    );
    let mut bad_sub = base.clone();
    bad_sub.sub = "has space".into();
    let credential = scheme.issuer.issue(&mut scheme.rng, &bad_sub);
    let kb = scheme.kb();
    add(
        "sub not an ID number",
        holder.present(&credential, None, &kb),
        "malformed",
    );
    let credential = scheme.issuer.issue(&mut scheme.rng, &base);
    let wrong_typ = forge_issuer_jwt(&credential.issuer_jwt, &scheme.issuer, |h, _| {
        h["typ"] = json!("JWT")
    });
    add("issuer typ JWT", format!("{wrong_typ}~"), "malformed");

    // 2. unsupported_alg
    let rs256 = forge_issuer_jwt(&credential.issuer_jwt, &scheme.issuer, |h, _| {
        h["alg"] = json!("RS256")
    });
    add("alg RS256", format!("{rs256}~"), "unsupported_alg");
    let sha512 = forge_issuer_jwt(&credential.issuer_jwt, &scheme.issuer, |_, p| {
        p["_sd_alg"] = json!("sha-512")
    });
    add("_sd_alg sha-512", format!("{sha512}~"), "unsupported_alg");

    // A KB-JWT with a foreign alg (and a wrong typ): check 2 comes before check 7.
    let secret = [0x42u8; 32];
    let own = Holder::new(secret);
    let own_spec = CredentialSpec::id_card(
        "1012345678",
        "card-0009",
        now - 86_400,
        Some(own.public_key()),
    );
    let own_credential = scheme.issuer.issue(&mut scheme.rng, &own_spec);
    let sd_jwt = Holder::sd_jwt(&own_credential, None);
    let kb_payload = json!({"iat": now - 2, "aud": AUDIENCE, "nonce": "n-hs256", "sd_hash": mint::digest(&sd_jwt)});
    let hs256 = mint::sign_jws(
        &ed25519_dalek::SigningKey::from_bytes(&secret),
        &json!({"alg": "HS256", "typ": "JWT"}),
        &kb_payload,
    );
    add(
        "KB alg HS256",
        format!("{sd_jwt}{hs256}"),
        "unsupported_alg",
    );

    // 3. unknown_key
    let unknown_kid = forge_issuer_jwt(&credential.issuer_jwt, &scheme.issuer, |h, _| {
        h["kid"] = json!("nobody")
    });
    add("unknown kid", format!("{unknown_kid}~"), "unknown_key");
    let wrong_iss = forge_issuer_jwt(&credential.issuer_jwt, &scheme.other, |h, _| {
        h["kid"] = json!("other-1")
    });
    add(
        "kid of another issuer",
        format!("{wrong_iss}~"),
        "unknown_key",
    );

    // 4. key_not_valid
    let retired = scheme.retired.issue(&mut scheme.rng, &base);
    add(
        "retired key",
        format!("{}~", retired.issuer_jwt),
        "key_not_valid",
    );
    let early = scheme.future.issue(&mut scheme.rng, &base);
    add(
        "iat before key nbf",
        format!("{}~", early.issuer_jwt),
        "key_not_valid",
    );

    // 5. bad_signature
    let kb = scheme.kb();
    let genuine = holder.present(&credential, None, &kb);
    let tampered = tamper_payload(&genuine);
    add("payload changed", tampered, "bad_signature");
    let impostor = Issuer::generate(&mut scheme.rng, "issuer-1", ISS);
    let forged = impostor.issue(&mut scheme.rng, &base);
    let kb = scheme.kb();
    add(
        "signed by an impostor key",
        holder.present(&forged, None, &kb),
        "bad_signature",
    );

    // 6. key_binding_missing
    add(
        "bearer copy",
        Holder::sd_jwt(&credential, None),
        "key_binding_missing",
    );

    // 7. key_binding_invalid
    let sd_jwt = Holder::sd_jwt(&credential, None);
    let kb = scheme.kb();
    let other_prefix = Holder::sd_jwt(&credential, Some(&["given_name"]));
    add(
        "sd_hash of another prefix",
        format!("{sd_jwt}{}", holder.key_binding_jwt(&other_prefix, &kb)),
        "key_binding_invalid",
    );
    let stranger = scheme.holder();
    let kb = scheme.kb();
    add(
        "KB signed by another key",
        format!("{sd_jwt}{}", stranger.key_binding_jwt(&sd_jwt, &kb)),
        "key_binding_invalid",
    );
    let kb = scheme.kb();
    let mut kb_jwt = holder.key_binding_jwt(&sd_jwt, &kb);
    flip_last_signature_char(&mut kb_jwt);
    add(
        "KB signature altered",
        format!("{sd_jwt}{kb_jwt}"),
        "key_binding_invalid",
    );
    let mut no_cnf = base.clone();
    no_cnf.holder = None;
    let bearer_credential = scheme.issuer.issue(&mut scheme.rng, &no_cnf);
    let kb = scheme.kb();
    add(
        "KB without cnf",
        holder.present(&bearer_credential, None, &kb),
        "key_binding_invalid",
    );
    add(
        "KB not a JWT",
        format!("{sd_jwt}not-a-jwt"),
        "key_binding_invalid",
    );

    // 8. disclosure_invalid
    let stray = mint::disclosure(&mut scheme.rng, "given_name", &json!("Mallory"));
    let with_stray = format!("{sd_jwt}{stray}~");
    let kb = scheme.kb();
    add(
        "unreferenced disclosure",
        format!("{with_stray}{}", holder.key_binding_jwt(&with_stray, &kb)),
        "disclosure_invalid",
    );
    let first = &credential.disclosures[0].1;
    let doubled = format!("{sd_jwt}{first}~");
    let kb = scheme.kb();
    add(
        "disclosure presented twice",
        format!("{doubled}{}", holder.key_binding_jwt(&doubled, &kb)),
        "disclosure_invalid",
    );

    // 9. not_yet_valid / expired
    let mut future = base.clone();
    future.nbf = Some(now + 3600);
    let credential_future = scheme.issuer.issue(&mut scheme.rng, &future);
    let kb = scheme.kb();
    add(
        "nbf in the future",
        holder.present(&credential_future, None, &kb),
        "not_yet_valid",
    );
    let mut old = base.clone();
    old.iat = now - 4 * 365 * 86_400;
    old.exp = now - 10;
    let expired = scheme.issuer.issue(&mut scheme.rng, &old);
    let kb = scheme.kb();
    add("exp passed", holder.present(&expired, None, &kb), "expired");

    // 10. presentation_stale
    let mut kb = scheme.kb();
    kb.iat = now - 600;
    add(
        "KB iat ten minutes old",
        holder.present(&credential, None, &kb),
        "presentation_stale",
    );

    // 11. audience_mismatch
    let mut kb = scheme.kb();
    kb.aud = "https://someone-else.example".into();
    add(
        "KB for another verifier",
        holder.present(&credential, None, &kb),
        "audience_mismatch",
    );

    // 12. revoked / suspended (see revocations_jsonl)
    add(
        "credential revoked",
        scheme.present("1012345678", "card-revoked"),
        "revoked",
    );
    add(
        "subject suspended",
        scheme.present("2000000002", "card-0003"),
        "suspended",
    );
    let holder3 = scheme.holder();
    let mut lost = CredentialSpec::id_card(
        "3000000003",
        "card-0004",
        now - 86_400,
        Some(holder3.public_key()),
    );
    let old_card = scheme.issuer.issue(&mut scheme.rng, &lost);
    let kb = scheme.kb();
    add(
        "subject revoked before reissue",
        holder3.present(&old_card, None, &kb),
        "revoked",
    );
    lost.iat = now - 5;
    lost.jti = "card-0005".into();
    let new_card = scheme.issuer.issue(&mut scheme.rng, &lost);
    let kb = scheme.kb();
    add(
        "reissued card after a loss",
        holder3.present(&new_card, None, &kb),
        "valid",
    );

    // 14. replayed: the same QR code shown twice
    let shown = scheme.present("4000000004", "card-0006");
    add("first showing", shown.clone(), "valid");
    add("screenshot shown again", shown, "replayed");
    cases
}

/// Changes one character of the issuer payload (keeping it base64url) without re-signing.
pub fn tamper_payload(presentation: &str) -> String {
    let (issuer_jwt, rest) = presentation.split_once('~').unwrap();
    let mut parts: Vec<String> = issuer_jwt.split('.').map(str::to_string).collect();
    let mut payload: Value =
        serde_json::from_slice(&idgate::b64::decode(&parts[1]).unwrap()).unwrap();
    payload["exp"] = json!(payload["exp"].as_i64().unwrap() + 1);
    parts[1] = idgate::b64::encode(payload.to_string());
    format!("{}~{rest}", parts.join("."))
}

/// Alters a JWS signature while keeping it 64 bytes of valid base64url.
pub fn flip_last_signature_char(jws: &mut String) {
    let dot = jws.rfind('.').unwrap();
    let mut signature = idgate::b64::decode(&jws[dot + 1..]).unwrap();
    signature[5] ^= 0x01;
    jws.truncate(dot + 1);
    jws.push_str(&idgate::b64::encode(signature));
}

/// The rule of SPEC §2 written independently with curve25519-dalek, as the tests' oracle:
/// canonicity by decompress/recompress, small order by multiplication, cofactored equation.
pub fn reference_verdict(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let (Ok(a_bytes), Ok(signature)) = (
        <[u8; 32]>::try_from(public_key),
        <[u8; 64]>::try_from(signature),
    ) else {
        return false;
    };
    let r_bytes: [u8; 32] = signature[..32].try_into().unwrap();
    let s_bytes: [u8; 32] = signature[32..].try_into().unwrap();
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let point = |bytes: [u8; 32]| -> Option<EdwardsPoint> {
        let point = CompressedEdwardsY(bytes).decompress()?;
        (point.compress().0 == bytes && !point.is_small_order()).then_some(point)
    };
    let (Some(a), Some(r)) = (point(a_bytes), point(r_bytes)) else {
        return false;
    };
    let mut hasher = Sha512::new();
    hasher.update(r_bytes);
    hasher.update(a_bytes);
    hasher.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&hasher.finalize().into());
    let check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &(-a), &s) - r;
    check.mul_by_cofactor().is_identity()
}

/// `../shared/vectors` (or `IDGATE_VECTORS_DIR`), or `None` when absent (see [`cannot_run`]).
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("IDGATE_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    if dir.join("cctv_ed25519vectors.json").is_file() {
        return Some(dir);
    }
    cannot_run(&format!(
        "no shared vectors at {} (set IDGATE_VECTORS_DIR)",
        dir.display()
    ));
    None
}

/// For a test that cannot run because something outside the repository is missing (`why`
/// says what, and how to get it): with `CI=true` the test fails here. Otherwise this prints a
/// notice and appends it to the file named by `IDGATE_TEST_NOTICES` (`scripts/test` sets it
/// and lists the notices after the run, since nextest shows no output of a passing test); the
/// caller then returns without testing.
pub fn cannot_run(why: &str) {
    // The test binary's crate (this module is compiled into each) and the test's thread name.
    let test = format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        std::thread::current().name().unwrap_or("?")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, but {test} cannot run: {why}");
    }
    let notice = format!("skipped: {test}: {why}\n");
    eprint!("NOTICE: {notice}");
    if let Some(path) = std::env::var_os("IDGATE_TEST_NOTICES") {
        // One short append per notice: lines from tests running at once do not interleave.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, notice.as_bytes()));
        if let Err(error) = appended {
            panic!(
                "cannot record the skip in {}: {error}",
                Path::new(&path).display()
            );
        }
    }
}

pub fn hex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

/// The `idgate` binary under test.
pub fn idgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_idgate"))
}
