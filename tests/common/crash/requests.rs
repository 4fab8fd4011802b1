//! The revocation requests the crash tests send: their entries (a function of the seed and the
//! request number), their bodies, and what each request's answer obliges a restarted gateway
//! to hold.

use std::ops::RangeInclusive;

use idgate::revocation::Reason;
use rand::RngExt;

use super::Stream;

/// Entries per request.
const ENTRIES: RangeInclusive<u64> = 50..=300;
/// `at` of entry `i` of request `q` is `AT_BASE + q * 1000 + i`: distinct for every entry.
const AT_BASE: i64 = 1_600_000_000;

/// One entry as sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub subject: bool,
    pub id: String,
    pub status: &'static str,
    pub reason: &'static str,
    pub before: Option<i64>,
    pub at: i64,
}

impl Sent {
    pub fn kind(&self) -> &'static str {
        if self.subject {
            "subject"
        } else {
            "credential"
        }
    }

    pub fn other_kind(&self) -> &'static str {
        if self.subject {
            "credential"
        } else {
            "subject"
        }
    }
}

/// The entries of request `number` (sent in round `round`): a function of the seed.
pub fn entries_for(seed: u64, round: usize, number: u64) -> Vec<Sent> {
    let mut rng = super::rng(seed, Stream::Entries, number);
    let count = rng.random_range(ENTRIES);
    (0..count)
        .map(|i| {
            let subject = rng.random_ratio(40, 100);
            Sent {
                subject,
                id: format!("r{round}-q{number}-{i}"),
                status: if rng.random_ratio(30, 100) {
                    "suspended"
                } else {
                    "revoked"
                },
                reason: Reason::ALL[rng.random_range(0..Reason::ALL.len())].as_str(),
                before: (subject && rng.random_ratio(50, 100))
                    .then(|| 1_500_000_000 + rng.random_range(0..100_000_000)),
                at: AT_BASE + number as i64 * 1000 + i as i64,
            }
        })
        .collect()
}

/// The JSON Lines body of a request; its style varies with the request number (key order, CRLF
/// line ends, no newline after the last line), all of which the API accepts.
pub fn body_of(entries: &[Sent], number: u64) -> String {
    let style = number % 4;
    let mut body = String::with_capacity(entries.len() * 120);
    for (i, e) in entries.iter().enumerate() {
        let before = e
            .before
            .map(|b| format!(",\"before\":{b}"))
            .unwrap_or_default();
        if style == 3 {
            body.push_str(&format!(
                "{{\"at\":{},\"reason\":\"{}\"{before},\"status\":\"{}\",\"id\":\"{}\",\"kind\":\"{}\"}}",
                e.at,
                e.reason,
                e.status,
                e.id,
                e.kind()
            ));
        } else {
            body.push_str(&format!(
                "{{\"kind\":\"{}\",\"id\":\"{}\",\"status\":\"{}\",\"reason\":\"{}\"{before},\"at\":{}}}",
                e.kind(),
                e.id,
                e.status,
                e.reason,
                e.at
            ));
        }
        let last = i + 1 == entries.len();
        match style {
            1 => body.push_str("\r\n"),
            2 if last => {}
            _ => body.push('\n'),
        }
    }
    body
}

/// How the gateway answered a request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200`: durable, must survive every later crash.
    Acked,
    /// A definite error status: nothing may be applied.
    Refused { status: u16, body: String },
    /// No (complete) answer: the process died while the request was in flight.
    Unanswered(String),
}

/// What a request's entries must look like after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Acknowledged: every entry present, exactly.
    Acked,
    /// Refused: no entry present, ever.
    Refused,
    /// Unacknowledged and not yet observed: all or nothing.
    Unknown,
    /// Unacknowledged, found whole after the restart of this round: must stay whole.
    FoundWhole(usize),
    /// Unacknowledged, found absent after the restart of this round: must stay absent.
    FoundAbsent(usize),
}

#[derive(Debug)]
pub struct Request {
    pub round: usize,
    pub number: u64,
    pub client: usize,
    pub entries: Vec<Sent>,
    pub answer: Answer,
    pub fate: Fate,
}

impl Request {
    pub fn new(
        round: usize,
        number: u64,
        client: usize,
        entries: Vec<Sent>,
        answer: Answer,
    ) -> Self {
        let fate = match answer {
            Answer::Acked => Fate::Acked,
            Answer::Refused { .. } => Fate::Refused,
            Answer::Unanswered(_) => Fate::Unknown,
        };
        Request {
            round,
            number,
            client,
            entries,
            answer,
            fate,
        }
    }

    pub fn describe(&self) -> String {
        let answer = match &self.answer {
            Answer::Acked => "acknowledged (200)".to_string(),
            Answer::Refused { status, body } => format!("refused ({status}: {body})"),
            Answer::Unanswered(error) => format!("no answer ({error})"),
        };
        format!(
            "request q{} (round {}, client {}, {} entries, {answer}, {:?})",
            self.number,
            self.round,
            self.client,
            self.entries.len(),
            self.fate
        )
    }
}
