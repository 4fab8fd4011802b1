//! The ordered checks of SPEC §3 for one chunk of a batch: checks 1–4 while the item is parsed
//! and its signatures are queued ([`Verifier::prepare`]), the chunk's signatures verified as one
//! batch, then checks 5–13 in SPEC order ([`decide`]). Checks 14–15 are in `replays.rs`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::outcome::{CredentialSummary, Outcome, Rejection, Verdict};
use super::policy::{Batch, Policy};
use super::ports::{ReplayRequest, RevocationSource, Standing, State, TrustContext, replay_key};
use super::presentation::{self, Disclosure, HolderKey, IssuerJwt, KbJwt, KeyBinding, Limits};
use super::skeleton::Digest;
use super::{Verifier, disclosure};
use crate::ed25519::SignatureJob;

/// An item between checks 13 and 14.
pub(super) enum BeforeReplay {
    /// The verdict is final (a rejection, or a bearer copy that is not replay-tracked).
    Final(Verdict),
    /// Passed checks 1–13; valid unless the replay store says otherwise.
    NeedsReplay(Verdict, ReplayRequest),
}

/// An item after checks 1–4, with its signatures queued in the chunk's batch.
pub(super) struct Prepared<'a> {
    issuer: Arc<IssuerJwt>,
    /// Set when the issuer JWT was parsed (not cached) and should be cached once verified.
    cache_key: Option<[u8; 32]>,
    issuer_job: Option<usize>,
    holder_job: Option<usize>,
    key_binding: KeyBinding<'a>,
    /// A key-binding failure found before any signature work (`key_binding_invalid`).
    key_binding_problem: Option<&'static str>,
    /// Result of disclosure processing: the processed claims (if asked for) or check-8 failure.
    disclosed: Result<Option<Map<String, Value>>, Rejection>,
}

impl Verifier {
    /// Checks 1–13 for one chunk, with its signatures verified as one batch.
    pub(super) fn verify_chunk<S: AsRef<str>>(
        &self,
        items: &[S],
        offset: usize,
        batch: &Batch<'_, S>,
        state: State<'_>,
    ) -> Vec<BeforeReplay> {
        let mut jobs = Vec::with_capacity(items.len() * 2);
        let prepared: Vec<Result<Prepared<'_>, Rejection>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                self.prepare(
                    item.as_ref(),
                    batch.item(offset + i).1,
                    state.trust,
                    &mut jobs,
                )
            })
            .collect();
        let results = self.engine.verify_jobs(&jobs);
        let passed = |slot: Option<usize>| slot.map(|i| results.get(i).is_some_and(Result::is_ok));
        prepared
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Err(rejection) => BeforeReplay::Final(Verdict::rejected(rejection)),
                Ok(item) => {
                    let issuer_ok = passed(item.issuer_job);
                    let holder_ok = passed(item.holder_job);
                    if let (Some(true), Some(key)) = (issuer_ok, item.cache_key) {
                        state.trust.cache.insert(key, Arc::clone(&item.issuer));
                    }
                    decide(
                        item,
                        issuer_ok,
                        holder_ok,
                        batch.item(offset + i).0,
                        batch.now,
                        state.revocation,
                    )
                }
            })
            .collect()
    }

    /// Checks 1–4 and everything that needs no signature verdict; queues the signatures.
    fn prepare<'a>(
        &self,
        presentation: &'a str,
        return_claims: bool,
        trust: &TrustContext,
        jobs: &mut Vec<SignatureJob>,
    ) -> Result<Prepared<'a>, Rejection> {
        let limits = &self.limits;
        let parts = presentation::split(presentation, limits)?;
        let digests = presentation::digests(&parts, !parts.kb_jwt.is_empty());
        let (issuer, cache_key) = match trust.cache.get(&digests.cache_key) {
            Some(cached) => (cached, None),
            None => {
                let mut parsed = presentation::parse_issuer(parts.issuer_jwt, limits)?;
                parsed.claims.holder_key = parsed.claims.holder_key.decompressed();
                (Arc::new(parsed), Some(digests.cache_key))
            }
        };
        let disclosures = presentation::decode_disclosures(&parts.disclosures, limits)?;
        let key_binding = presentation::parse_key_binding(parts.kb_jwt, limits)?;
        // Disclosure processing can hit the depth limit (check 1), so it runs before check 2.
        let disclosed = match &disclosures {
            Ok(disclosures) => process_disclosures(
                &issuer,
                parts.issuer_jwt,
                disclosures,
                limits,
                return_claims,
            )?,
            Err(detail) => Err(Rejection::new(Outcome::DisclosureInvalid, detail)),
        };
        if !issuer.algorithms_supported {
            return Err(Rejection::new(
                Outcome::UnsupportedAlg,
                "alg must be EdDSA or Ed25519 and _sd_alg sha-256",
            ));
        }
        let trusted = trust
            .keys
            .issuer_key(&issuer.kid, issuer.claims.iat)
            .ok_or(Rejection::new(
                Outcome::UnknownKey,
                "no trusted key with this kid",
            ))?;
        if trusted.issuer.is_some_and(|iss| iss != issuer.claims.iss) {
            return Err(Rejection::new(
                Outcome::UnknownKey,
                "the key with this kid belongs to another issuer",
            ));
        }
        if !trusted.valid_for_credential {
            return Err(Rejection::new(
                Outcome::KeyNotValid,
                "issuer key retired or not valid at the credential's iat",
            ));
        }
        let bad_signature = Rejection::new(Outcome::BadSignature, "issuer signature fails");
        let issuer_job = match cache_key {
            // A cache hit means this exact JWT's signature already passed under this trust store.
            None => None,
            Some(_) => {
                let signature = issuer.signature.as_ref().ok_or(bad_signature)?;
                let message = parts
                    .issuer_jwt
                    .as_bytes()
                    .get(..issuer.signing_input_len)
                    .ok_or(bad_signature)?;
                jobs.push(
                    SignatureJob::new(trusted.key, signature, message, Some(trusted.group))
                        .map_err(|_| bad_signature)?,
                );
                Some(jobs.len() - 1)
            }
        };
        let (holder_job, key_binding_problem) = match &key_binding {
            KeyBinding::Present(kb) => match queue_holder_signature(
                &issuer.claims.holder_key,
                kb,
                digests.sd_hash.as_ref(),
                jobs,
            ) {
                Ok(slot) => (Some(slot), None),
                Err(problem) => (None, Some(problem)),
            },
            _ => (None, None),
        };
        Ok(Prepared {
            issuer,
            cache_key,
            issuer_job,
            holder_job,
            key_binding,
            key_binding_problem,
            disclosed,
        })
    }
}

/// Check 8 (and check 1 for the processed depth): the outer `Err` is a limit violation to report
/// at once, the inner one a `disclosure_invalid` to report in order.
fn process_disclosures(
    issuer: &IssuerJwt,
    issuer_jwt: &str,
    disclosures: &[Disclosure<'_>],
    limits: &Limits,
    build: bool,
) -> Result<Result<Option<Map<String, Value>>, Rejection>, Rejection> {
    let payload = match &issuer.sd {
        Ok(payload) => payload,
        Err(detail) => return Ok(Err(Rejection::new(Outcome::DisclosureInvalid, detail))),
    };
    let checked =
        disclosure::validate(payload, disclosures, limits.max_json_depth).and_then(|()| {
            if build {
                // `issuer` was parsed from (or cached under the digest of) these exact bytes.
                let payload = presentation::decode_payload(issuer_jwt).ok_or(Rejection::new(
                    Outcome::Malformed,
                    "issuer JWT payload is not base64url",
                ))?;
                disclosure::build_claims(&payload, disclosures, limits.max_json_depth).map(Some)
            } else {
                Ok(None)
            }
        });
    match checked {
        Ok(claims) => Ok(Ok(claims)),
        Err(rejection) if rejection.outcome == Outcome::Malformed => Err(rejection),
        Err(rejection) => Ok(Err(rejection)),
    }
}

/// Check 7's preconditions, then queue the holder's signature. `Err` is the problem's detail.
fn queue_holder_signature(
    holder_key: &HolderKey,
    kb: &KbJwt<'_>,
    sd_hash: Option<&Digest>,
    jobs: &mut Vec<SignatureJob>,
) -> Result<usize, &'static str> {
    let HolderKey::Key(key) = holder_key else {
        return Err("no usable cnf.jwk to check the KB-JWT against");
    };
    if sd_hash.is_none_or(|digest| kb.claims.sd_hash.as_ref() != Some(digest)) {
        return Err("KB-JWT sd_hash does not match the presentation");
    }
    let signature = kb.signature.as_ref().ok_or("KB-JWT signature fails")?;
    jobs.push(
        SignatureJob::new(key, signature, kb.signing_input.as_bytes(), None)
            .map_err(|_| "KB-JWT signature fails")?,
    );
    Ok(jobs.len() - 1)
}

/// Checks 5–13 in SPEC order, once the signatures are known.
fn decide(
    item: Prepared<'_>,
    issuer_ok: Option<bool>,
    holder_ok: Option<bool>,
    policy: &Policy,
    now: i64,
    revocation: &dyn RevocationSource,
) -> BeforeReplay {
    let reject =
        |outcome, detail| BeforeReplay::Final(Verdict::rejected(Rejection::new(outcome, detail)));
    let claims = &item.issuer.claims;
    if issuer_ok == Some(false) {
        return reject(Outcome::BadSignature, "issuer signature fails");
    }
    let kb = match &item.key_binding {
        KeyBinding::Absent if policy.require_key_binding => {
            return reject(
                Outcome::KeyBindingMissing,
                "no KB-JWT and the policy requires key binding",
            );
        }
        KeyBinding::Absent => None,
        KeyBinding::Invalid(detail) => return reject(Outcome::KeyBindingInvalid, detail),
        KeyBinding::Present(kb) => Some(kb),
    };
    if let Some(problem) = item.key_binding_problem {
        return reject(Outcome::KeyBindingInvalid, problem);
    }
    if holder_ok == Some(false) {
        return reject(Outcome::KeyBindingInvalid, "KB-JWT signature fails");
    }
    let disclosed_claims = match item.disclosed {
        Ok(claims) => claims,
        Err(rejection) => return BeforeReplay::Final(Verdict::rejected(rejection)),
    };
    let skew = policy.clock_skew_s;
    if claims.nbf.is_some_and(|nbf| nbf > now + skew) || claims.iat > now + skew {
        return reject(Outcome::NotYetValid, "credential nbf/iat is in the future");
    }
    if now - skew >= claims.exp {
        return reject(Outcome::Expired, "credential exp has passed");
    }
    if let Some(kb) = kb {
        let oldest = now - policy.max_presentation_age_s - skew;
        if kb.claims.iat < oldest || kb.claims.iat > now + skew {
            return reject(
                Outcome::PresentationStale,
                "KB-JWT iat outside the accepted window",
            );
        }
        if !policy.audiences.accepts(&kb.claims.audiences) {
            return reject(
                Outcome::AudienceMismatch,
                "KB-JWT aud is not an accepted audience",
            );
        }
    }
    match revocation.standing(&claims.sub, &claims.jti, claims.iat) {
        Standing::Good => {}
        Standing::Revoked { reason, since } => {
            return BeforeReplay::Final(adverse(Outcome::Revoked, reason, since));
        }
        Standing::Suspended { reason, since } => {
            return BeforeReplay::Final(adverse(Outcome::Suspended, reason, since));
        }
    }
    if !revocation.is_current(now) {
        return reject(
            Outcome::StatusUndetermined,
            "revocation data is older than max_staleness",
        );
    }
    let verdict = Verdict {
        outcome: Outcome::Valid,
        detail: None,
        credential: Some(CredentialSummary(Arc::clone(&item.issuer))),
        reason: None,
        since: None,
        claims: disclosed_claims.map(Value::Object),
    };
    match kb {
        // A bearer copy is not replay-tracked (SPEC §3).
        None => BeforeReplay::Final(verdict),
        Some(kb) => BeforeReplay::NeedsReplay(
            verdict,
            ReplayRequest {
                key: replay_key(&claims.iss, &claims.jti, &kb.claims.nonce),
                kb_iat: kb.claims.iat,
                expires_at: kb.claims.iat + policy.max_presentation_age_s + skew,
            },
        ),
    }
}

fn adverse(outcome: Outcome, reason: &'static str, since: i64) -> Verdict {
    Verdict {
        outcome,
        detail: None,
        credential: None,
        reason: Some(reason),
        since: Some(since),
        claims: None,
    }
}
