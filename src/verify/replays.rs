//! Checks 14–15 for a batch, on the calling thread, in input order: an in-batch duplicate is
//! `replayed`, every other nonce goes to the replay store in one call, and a store that cannot
//! answer makes the item `replay_unavailable` — never `valid`.

use hashbrown::HashSet;

use super::checks::BeforeReplay;
use super::outcome::{Outcome, Rejection, Verdict};
use super::ports::{ReplayAnswer, ReplayGuard};

/// Checks 14–15, in input order: in-batch duplicates first, then one call to the store.
pub(super) fn resolve_replays(
    pending: Vec<BeforeReplay>,
    now: i64,
    replay: &dyn ReplayGuard,
) -> Vec<Verdict> {
    let mut seen: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
    let mut requests = Vec::new();
    // Per item: None = final, Some(i) = answer i of the store, or a duplicate marker.
    let mut slots: Vec<ReplayStep> = Vec::with_capacity(pending.len());
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(pending.len());
    for item in pending {
        match item {
            BeforeReplay::Final(verdict) => {
                slots.push(ReplayStep::Final);
                verdicts.push(verdict);
            }
            BeforeReplay::NeedsReplay(verdict, request) => {
                if seen.insert(request.key) {
                    slots.push(ReplayStep::Store(requests.len()));
                    requests.push(request);
                } else {
                    slots.push(ReplayStep::Duplicate);
                }
                verdicts.push(verdict);
            }
        }
    }
    let answers = if requests.is_empty() {
        Vec::new()
    } else {
        replay.check_and_insert(&requests, now)
    };
    for (verdict, slot) in verdicts.iter_mut().zip(slots) {
        let answer = match slot {
            ReplayStep::Final => continue,
            ReplayStep::Duplicate => ReplayAnswer::Replayed,
            // A store that answers short is treated as unavailable: fail closed.
            ReplayStep::Store(i) => answers.get(i).copied().unwrap_or(ReplayAnswer::Unavailable),
        };
        let rejection = match answer {
            ReplayAnswer::Fresh => continue,
            ReplayAnswer::Replayed => Rejection::new(
                Outcome::Replayed,
                "this presentation's nonce was already used",
            ),
            ReplayAnswer::Unavailable => Rejection::new(
                Outcome::ReplayUnavailable,
                "the replay store cannot record this nonce",
            ),
        };
        *verdict = Verdict::rejected(rejection);
    }
    verdicts
}

/// Where an item's replay answer comes from.
enum ReplayStep {
    Final,
    Store(usize),
    Duplicate,
}
