//! The command line (SPEC §9). `idgate` alone starts the demo gateway; subcommands run the
//! gateway from a config file (`serve`), the demo wallet (`mint`) or the offline tools.
//!
//! Tools read JSON Lines (or raw lines) and write JSON Lines; they exit 0 when every line was
//! answered (whatever the verdicts), 1 on an I/O or usage error, 2 on bad arguments (clap).

mod lines;
mod revocations;
pub mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Verification gateway for SD-JWT VC digital-ID presentations (Ed25519).
#[derive(Debug, Parser)]
#[command(name = "idgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway from a TOML config file (IDGATE_<SECTION>_<KEY> variables override it).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a fresh presentation from the demo issuer (the demo's phone wallet).
    Mint {
        /// The demo's data directory.
        #[arg(long, default_value = "idgate-data", value_name = "DIR")]
        data_dir: PathBuf,
        /// KB-JWT audience.
        #[arg(long, default_value = serve::DEMO_AUDIENCE, value_name = "AUD")]
        audience: String,
        /// The subject's ID number.
        #[arg(long, default_value = "1012345678", value_name = "ID")]
        sub: String,
    },
    /// Verify presentations offline: one per input line, one JSON result per output line.
    Verify(VerifyArgs),
    /// Verify raw Ed25519 signatures: JSON Lines {"public_key","message","signature"} (base64url).
    VerifySignatures(SignatureArgs),
    /// Manage revocation data offline: bulk import, statistics.
    Revocations {
        #[command(subcommand)]
        action: RevocationsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RevocationsCommand {
    /// Import a JSON Lines file of entries (SPEC §5) into a data directory: all entries or none
    /// (the first bad line is reported by number). Stop the gateway on that directory first.
    Import {
        /// JSON Lines file, one entry per line.
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
        /// The gateway's data directory (`revocation.data_dir`).
        #[arg(long, default_value = "idgate-data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Publish the file to a shared revocation feed instead (`revocation.redis_url`):
        /// every running instance applies it, all entries at once. Gateways keep running.
        #[arg(long, value_name = "redis://HOST:PORT")]
        feed: Option<String>,
        /// The feed's stream key (`revocation.feed_stream`).
        #[arg(long, default_value = "idgate:revocations", value_name = "KEY")]
        feed_stream: String,
        /// Accept a feed Redis without an append-only file (tests and demos only).
        #[arg(long)]
        feed_allow_volatile: bool,
    },
    /// Print counts by kind, status and reason (read-only; safe while a gateway runs).
    Stats {
        /// The gateway's data directory (`revocation.data_dir`).
        #[arg(long, default_value = "idgate-data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `idgate verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Trust store: a JWKS file of issuer keys.
    #[arg(long, value_name = "JWKS")]
    pub trust: PathBuf,
    /// Revocation entries (SPEC §5), JSON Lines.
    #[arg(long, value_name = "FILE.jsonl")]
    pub revocations: Option<PathBuf>,
    /// Accepted KB-JWT audience (repeatable); none means any audience.
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,
    /// Verify as of this Unix time instead of the clock.
    #[arg(long, value_name = "UNIX")]
    pub at: Option<i64>,
    /// Accept bearer copies (presentations without a KB-JWT).
    #[arg(long)]
    pub allow_bearer: bool,
    /// Allowed clock skew in seconds.
    #[arg(long, default_value_t = crate::verify::policy::DEFAULT_CLOCK_SKEW_S, value_name = "SECONDS")]
    pub clock_skew: i64,
    /// Maximum age of a KB-JWT in seconds.
    #[arg(long, default_value_t = crate::verify::policy::DEFAULT_MAX_PRESENTATION_AGE_S, value_name = "SECONDS")]
    pub max_age: i64,
    /// Include the disclosed claims of valid presentations.
    #[arg(long)]
    pub claims: bool,
    /// Treat the revocation file as stale (`status_undetermined`) once it is older than this.
    #[arg(long, value_name = "SECONDS", requires = "revocations")]
    pub max_staleness: Option<i64>,
    /// When the revocation file was current (Unix time); default: its modification time.
    #[arg(long, value_name = "UNIX", requires = "revocations")]
    pub revocations_as_of: Option<i64>,
    /// Memory for the cache of verified issuer JWTs, in MiB (0 disables it). Repeated credentials
    /// then cost one signature instead of two.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub cache_mb: u64,
    /// Most replay keys one run may hold; past it, items get `replay_unavailable`.
    #[arg(long, default_value_t = 50_000_000, value_name = "N")]
    pub replay_capacity: usize,
    /// Verification threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print a JSON summary (counts, threads used, elapsed time) to standard error at the end.
    #[arg(long)]
    pub stats: bool,
    /// Input file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// Options of `idgate verify-signatures`.
#[derive(Debug, Args)]
pub struct SignatureArgs {
    /// Verification threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print a JSON summary (counts, threads used, elapsed time) to standard error at the end.
    #[arg(long)]
    pub stats: bool,
    /// Input file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve { config }) => serve::serve(&config),
        Some(Command::Mint {
            data_dir,
            audience,
            sub,
        }) => serve::mint_presentation(&data_dir, &audience, &sub)
            .map(|presentation| println!("{presentation}")),
        Some(Command::Verify(args)) => verify::run_verify(&args),
        Some(Command::VerifySignatures(args)) => verify::run_verify_signatures(&args),
        Some(Command::Revocations {
            action:
                RevocationsCommand::Import {
                    file,
                    data_dir,
                    feed,
                    feed_stream,
                    feed_allow_volatile,
                },
        }) => match feed {
            Some(url) => {
                revocations::import_to_feed(&file, &url, &feed_stream, feed_allow_volatile)
            }
            None => revocations::import(&file, &data_dir),
        },
        Some(Command::Revocations {
            action: RevocationsCommand::Stats { data_dir, json },
        }) => revocations::stats(&data_dir, json),
        None => serve::demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("idgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
