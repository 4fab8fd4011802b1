//! `idgate verify` and `idgate verify-signatures`: streaming offline verification through the
//! same engine and rule as the gateway.
//!
//! Three stages overlap: a reader thread cuts the input into blocks of lines (one signature batch
//! each), the engine verifies blocks on every core — each block one task, started in input order,
//! several per thread in flight, so no core waits at a block boundary — and a writer thread
//! resolves replays and serialises verdicts in input order. At most a few blocks per thread are
//! in flight (bounded channels), so memory stays flat however long the input.
//!
//! Within one run, a second presentation with the same replay key is `replayed` (a memory replay
//! store spans the whole run, without a start-up watermark since "now" may be `--at`).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::lines::{Block, BlockReader, Line};
use super::{SignatureArgs, VerifyArgs};
use crate::b64;
use crate::clock::unix_now;
use crate::ed25519::SignatureError;
use crate::replay::{MemoryReplayOptions, MemoryReplayStore};
use crate::revocation::RevocationList;
use crate::trust::TrustStore;
use crate::verify::{
    Audiences, Batch, Engine, EngineConfig, Limits, NoRevocations, Outcome, Policy, Rejection,
    RevocationSource, SignatureInput, Standing, State, TrustContext, Verdict, Verifier,
};

/// A revocation file with a notion of age, for check 13 offline.
struct FileRevocations {
    list: RevocationList,
    as_of: i64,
    max_staleness: Option<i64>,
}

impl RevocationSource for FileRevocations {
    fn standing(&self, sub: &str, jti: &str, iat: i64) -> Standing {
        self.list.standing(sub, jti, iat)
    }
    fn is_current(&self, now: i64) -> bool {
        self.max_staleness.is_none_or(|max| now - self.as_of <= max)
    }
}

fn load_revocations(args: &VerifyArgs) -> Result<Box<dyn RevocationSource + Send + Sync>> {
    let Some(path) = &args.revocations else {
        return Ok(Box::new(NoRevocations));
    };
    let list = RevocationList::load_jsonl(path)
        .with_context(|| format!("revocations {}", path.display()))?;
    let as_of = match args.revocations_as_of {
        Some(at) => at,
        None => {
            let modified = std::fs::metadata(path).and_then(|m| m.modified())?;
            modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }
    };
    Ok(Box::new(FileRevocations {
        list,
        as_of,
        max_staleness: args.max_staleness,
    }))
}

/// The `--stats` summary.
#[derive(Serialize)]
struct RunStats {
    items: u64,
    threads: usize,
    threads_used: usize,
    signatures: u64,
    batches_ok: u64,
    batches_fallback: u64,
    elapsed_s: f64,
}

impl RunStats {
    fn print(engine: &Engine, items: u64, started: std::time::Instant) {
        let stats = engine.stats();
        let summary = RunStats {
            items,
            threads: engine.threads(),
            threads_used: stats.threads_used(),
            signatures: stats.signatures.load(Ordering::Relaxed),
            batches_ok: stats.batches_ok.load(Ordering::Relaxed),
            batches_fallback: stats.batches_fallback.load(Ordering::Relaxed),
            elapsed_s: started.elapsed().as_secs_f64(),
        };
        if let Ok(text) = serde_json::to_string(&summary) {
            eprintln!("{text}");
        }
    }
}

fn open_input(path: Option<&Path>) -> Result<Box<dyn Read + Send>> {
    Ok(match path {
        None => Box::new(io::stdin()),
        Some(path) if path.as_os_str() == "-" => Box::new(io::stdin()),
        Some(path) => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
    })
}

/// Blocks being verified or waiting to be written at once, per pool thread.
const BLOCKS_PER_THREAD: usize = 3;

/// Runs reader → `work` → writer. Each block of `block_lines` lines — one signature batch's
/// worth — is one task on the engine's pool (`work` runs on the calling pool thread, no further
/// splitting); tasks start in input order, several per thread in flight, so the oldest block
/// finishes first, and a thread that finishes picks up the next block at once while the writer
/// renders finished ones. (With larger blocks split across the pool, rayon's newest-first
/// scheduling of a thread's own work finished the oldest block last: every few blocks the pool
/// ran dry waiting for it — 4–8% of the run idle, BENCHMARKS.md.) `render` (on the writer thread) takes the results
/// strictly in input order. Every channel is bounded: a few blocks per thread at most are in
/// memory however long the input. Returns the number of lines read.
fn pipeline<T: Send>(
    engine: &Engine,
    input: Box<dyn Read + Send>,
    block_lines: usize,
    max_line_bytes: usize,
    work: impl Fn(&Block) -> T + Sync,
    mut render: impl FnMut(T, &mut Vec<u8>) + Send,
) -> Result<u64> {
    let (line_tx, line_rx): (SyncSender<Block>, Receiver<Block>) = sync_channel(2);
    // Finished blocks' buffers go back to the reader, so a run reuses a few of them.
    let (spare_tx, spare_rx): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) =
        sync_channel(BLOCKS_PER_THREAD * engine.threads() + 2);
    // One receiver per block, in input order.
    let (order_tx, order_rx): (SyncSender<Receiver<T>>, Receiver<Receiver<T>>) =
        sync_channel(BLOCKS_PER_THREAD * engine.threads());
    thread::scope(|threads| {
        let reader = threads.spawn(move || -> io::Result<()> {
            let mut reader = BlockReader::new(input, block_lines, max_line_bytes);
            loop {
                let block = reader.read_block(spare_rx.try_recv().unwrap_or_default())?;
                if block.is_empty() || line_tx.send(block).is_err() {
                    return Ok(());
                }
            }
        });
        let writer = threads.spawn(move || -> io::Result<()> {
            let mut stdout = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            let mut buffer = Vec::new();
            for block in order_rx {
                let results = block
                    .recv()
                    .map_err(|_| io::Error::other("a verification task failed"))?;
                buffer.clear();
                render(results, &mut buffer);
                stdout.write_all(&buffer)?;
            }
            stdout.flush()
        });
        let mut lines = 0u64;
        let work = &work;
        engine.in_place_scope_fifo(|scope| {
            for block in line_rx {
                lines += block.len() as u64;
                let (done_tx, done_rx) = sync_channel(1);
                let spare_tx = spare_tx.clone();
                // Blocks here while the writer is that many blocks behind; fails if it quit.
                if order_tx.send(done_rx).is_err() {
                    break;
                }
                scope.spawn_fifo(move |_| {
                    let _ = done_tx.send(work(&block));
                    // If the reader has enough spares (or has finished), the buffer is freed.
                    let _ = spare_tx.try_send(block.into_buffer());
                });
            }
        });
        drop(order_tx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
        read.context("reading input")?;
        written.context("writing output")?;
        Ok(lines)
    })
}

/// A line may hold the presentation as is, or as a JSON string.
fn presentation_text(line: Line<'_>) -> Result<std::borrow::Cow<'_, str>, Rejection> {
    let malformed = |detail| Rejection::new(Outcome::Malformed, detail);
    match line {
        Line::TooLong => Err(malformed("presentation exceeds the size limit")),
        Line::NotUtf8 => Err(malformed("line is not UTF-8")),
        Line::Text(text) => {
            let trimmed = text.trim();
            if trimmed.starts_with('"') {
                serde_json::from_str::<String>(trimmed)
                    .map(Into::into)
                    .map_err(|_| malformed("line is neither a presentation nor a JSON string"))
            } else {
                Ok(trimmed.into())
            }
        }
    }
}

fn engine(threads: usize) -> Result<Arc<Engine>> {
    Ok(Arc::new(Engine::new(&EngineConfig {
        threads,
        ..EngineConfig::default()
    })?))
}

pub fn run_verify(args: &VerifyArgs) -> Result<()> {
    let store = TrustStore::load(&args.trust)?;
    let trust = TrustContext::new(store, args.cache_mb.saturating_mul(1 << 20));
    let started = std::time::Instant::now();
    let revocations = load_revocations(args)?;
    let replay = MemoryReplayStore::new(MemoryReplayOptions {
        capacity: args.replay_capacity,
        watermark: None,
    });
    let policy = Policy {
        clock_skew_s: args.clock_skew,
        max_presentation_age_s: args.max_age,
        require_key_binding: !args.allow_bearer,
        audiences: if args.audiences.is_empty() {
            Audiences::Any
        } else {
            Audiences::Only(args.audiences.clone())
        },
    };
    let limits = Limits::default();
    let verifier = Verifier::new(engine(args.threads)?, limits);
    let state = State {
        trust: &trust,
        revocation: revocations.as_ref(),
        replay: &replay,
    };
    let input = open_input(args.input.as_deref())?;
    // Allow JSON-string quoting and a CR on top of the presentation limit before calling a
    // line too long; the parser applies the exact limit.
    let max_line = limits.max_presentation_bytes * 2 + 16;
    let items = pipeline(
        verifier.engine(),
        input,
        verifier.engine().items_per_batch(2),
        max_line,
        |block| {
            let texts: Vec<Result<std::borrow::Cow<'_, str>, Rejection>> =
                block.lines().map(presentation_text).collect();
            let presentations: Vec<&str> =
                texts.iter().map(|t| t.as_deref().unwrap_or("")).collect();
            let now = args.at.unwrap_or_else(unix_now);
            let batch = Batch::new(&presentations, now, &policy, args.claims);
            let unresolved = verifier.verify_before_replay_sequential(&batch, state);
            // A line that never became a presentation keeps its own reason.
            let line_rejections: Vec<Option<Rejection>> =
                texts.iter().map(|t| t.as_ref().err().copied()).collect();
            (line_rejections, unresolved)
        },
        |(line_rejections, unresolved), out| {
            // The replay check, in input order across blocks.
            let verdicts = unresolved.resolve(state.replay);
            for (rejection, verdict) in line_rejections.into_iter().zip(verdicts) {
                match rejection {
                    Some(rejection) => write_json_line(out, &Verdict::rejected(rejection)),
                    None => write_json_line(out, &verdict),
                }
            }
        },
    )?;
    if args.stats {
        RunStats::print(verifier.engine(), items, started);
    }
    // The process ends next: freeing every cached credential and replay key one by one would
    // only delay the exit (measured: ~2% of a 50,000-line run, on one core while the other
    // idles), and the operating system reclaims the memory at once.
    std::mem::forget(trust);
    std::mem::forget(replay);
    Ok(())
}

fn write_json_line(out: &mut Vec<u8>, value: &impl Serialize) {
    // Serialising our own plain structs into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}

#[derive(Deserialize)]
struct SignatureLine {
    public_key: String,
    message: String,
    signature: String,
}

/// One output line of `verify-signatures` (same shape as the HTTP API's items).
#[derive(Serialize)]
pub struct SignatureResult {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

impl From<Result<(), SignatureError>> for SignatureResult {
    fn from(result: Result<(), SignatureError>) -> Self {
        match result {
            Ok(()) => SignatureResult {
                valid: true,
                error: None,
            },
            Err(error) => SignatureResult {
                valid: false,
                error: Some(error.as_str()),
            },
        }
    }
}

/// Decodes one signature line; `None` means malformed.
fn signature_input(line: Line<'_>) -> Option<SignatureInput> {
    let Line::Text(text) = line else { return None };
    let parsed: SignatureLine = serde_json::from_str(text).ok()?;
    Some(SignatureInput {
        public_key: b64::decode(&parsed.public_key).ok()?,
        message: b64::decode(&parsed.message).ok()?,
        signature: b64::decode(&parsed.signature).ok()?,
    })
}

pub fn run_verify_signatures(args: &SignatureArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let verifier = Verifier::new(engine(args.threads)?, Limits::default());
    let input = open_input(args.input.as_deref())?;
    let items = pipeline(
        verifier.engine(),
        input,
        verifier.engine().items_per_batch(1),
        1 << 20,
        |block| {
            let inputs: Vec<Option<SignatureInput>> = block.lines().map(signature_input).collect();
            let usable: Vec<SignatureInput> = inputs
                .iter()
                .map(|i| i.clone().unwrap_or_default())
                .collect();
            let results = verifier.verify_signatures_sequential(&usable);
            inputs
                .iter()
                .zip(results)
                .map(|(input, result)| {
                    if input.is_some() {
                        result
                    } else {
                        Err(SignatureError::Malformed)
                    }
                })
                .collect::<Vec<_>>()
        },
        |results, out| {
            for result in results {
                write_json_line(out, &SignatureResult::from(result));
            }
        },
    )?;
    if args.stats {
        RunStats::print(verifier.engine(), items, started);
    }
    Ok(())
}
