//! Support for the crash tests (`tests/crash.rs`, `tests/damaged_log.rs`): the revocation
//! requests they send (a function of a printed seed), starting and stopping the binary on one
//! data directory, and the check that a restarted gateway holds exactly what was acknowledged.
//!
//! Randomness is `rand`'s `StdRng`, seeded from the run's seed and the purpose of the stream
//! ([`Stream`]), so a run's choices are reproduced by `IDGATE_CRASH_SEED=<seed>` and one
//! stream's use never shifts another's.

pub mod check;
pub mod launch;
pub mod requests;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::Scheme;
use super::gateway::{Options, write_config};

/// IDs per `POST /v1/status` (the gateway's `max_batch_items` is raised to this).
pub const STATUS_CHUNK: usize = 25_000;

/// What a random stream is for: each purpose has its own, so drawing more from one (say, a
/// round that got more requests through) leaves the others as they were.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// The kill-nine harness' per-round choices (clients, delays, endings).
    Rounds = 1,
    /// The entries of request number `index`.
    Entries = 2,
    /// What the check of start number `index` samples.
    Sampling = 3,
}

/// The random stream `stream`/`index` of the run with seed `seed`.
pub fn rng(seed: u64, stream: Stream, index: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(stream as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    StdRng::from_seed(key)
}

/// The run's seed: `IDGATE_CRASH_SEED`, or the clock. Tests print it before using it.
pub fn seed() -> u64 {
    std::env::var("IDGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Writes the trust store and config into `dir` (status queries of up to [`STATUS_CHUNK`] IDs)
/// and returns the config path.
pub fn config_in(dir: &Path, snapshot_log_bytes: Option<u64>) -> PathBuf {
    let scheme = Scheme::new(0xC4A5);
    let options = Options {
        max_batch_items: STATUS_CHUNK,
        ..Options::default()
    };
    let config = write_config(dir, &scheme, &options);
    if let Some(bytes) = snapshot_log_bytes {
        set_snapshot_log_bytes(&config, bytes);
    }
    config
}

/// Sets `revocation.snapshot_log_bytes` in a config written by `write_config`.
fn set_snapshot_log_bytes(config: &Path, bytes: u64) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(
        text.contains("\n[revocation]\n") && !text.contains("snapshot_log_bytes"),
        "write_config's [revocation] section changed; set snapshot_log_bytes another way"
    );
    let text = text.replacen(
        "\n[revocation]\n",
        &format!("\n[revocation]\nsnapshot_log_bytes = {bytes}\n"),
        1,
    );
    std::fs::write(config, text).unwrap();
}
