//! Checks 14–15 for a batch, in input order: an in-batch duplicate is `replayed`, every other
//! nonce goes to the replay store in one call, and a store that cannot answer makes the item
//! `replay_unavailable` — never `valid`.
//!
//! The step is split in two so that a store answered over the network (Redis) never holds a
//! thread while it waits: [`plan`] dedups the batch and returns the store requests,
//! [`AwaitingReplay::finish`] applies the store's answers. [`resolve_replays`] is both, for a
//! store that answers at once (memory).

use hashbrown::HashSet;

use super::checks::BeforeReplay;
use super::outcome::{Outcome, Rejection, Verdict};
use super::ports::{ReplayAnswer, ReplayGuard, ReplayRequest};

/// Checks 14–15 against a store that answers synchronously.
pub(super) fn resolve_replays(
    pending: Vec<BeforeReplay>,
    now: i64,
    replay: &dyn ReplayGuard,
) -> Vec<Verdict> {
    let (requests, awaiting) = plan(pending, now);
    let answers = if requests.is_empty() {
        Vec::new()
    } else {
        replay.check_and_insert(&requests, now)
    };
    awaiting.finish(&answers)
}

/// Dedups the batch: the store requests (one per distinct nonce among the items that passed
/// every other check, in item order) and what is needed to apply their answers.
pub(super) fn plan(pending: Vec<BeforeReplay>, now: i64) -> (Vec<ReplayRequest>, AwaitingReplay) {
    let mut seen: HashSet<u128, foldhash::fast::RandomState> = HashSet::default();
    let mut requests = Vec::new();
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
    (
        requests,
        AwaitingReplay {
            verdicts,
            slots,
            now,
        },
    )
}

/// A batch whose replay requests are out at the store: every other check is done.
pub struct AwaitingReplay {
    verdicts: Vec<Verdict>,
    slots: Vec<ReplayStep>,
    now: i64,
}

impl std::fmt::Debug for AwaitingReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitingReplay")
            .field("items", &self.verdicts.len())
            .finish_non_exhaustive()
    }
}

impl AwaitingReplay {
    /// The batch's "now" (the store needs it for its watermark and expiry).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Applies the store's answers (one per request, in order); one verdict per item. A store
    /// that answers short is treated as unavailable for the missing items: fail closed.
    pub fn finish(self, answers: &[ReplayAnswer]) -> Vec<Verdict> {
        let mut verdicts = self.verdicts;
        for (verdict, slot) in verdicts.iter_mut().zip(self.slots) {
            let answer = match slot {
                ReplayStep::Final => continue,
                ReplayStep::Duplicate => ReplayAnswer::Replayed,
                ReplayStep::Store(i) => {
                    answers.get(i).copied().unwrap_or(ReplayAnswer::Unavailable)
                }
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
}

/// Where an item's replay answer comes from.
enum ReplayStep {
    Final,
    Store(usize),
    Duplicate,
}
