//! idgate: a verification gateway for national digital-ID presentations (SD-JWT VC, Ed25519).
//!
//! Table of contents (ARCHITECTURE.md has the bird's-eye view):
//! - [`verify`]: SD-JWT parsing, the rayon batch engine, the per-item checks of SPEC §3, and
//!   the ports (key lookup, revocation, replay) other modules implement. Synchronous; knows
//!   nothing of HTTP or tokio.
//! - [`ed25519`]: the one Ed25519 rule of SPEC §2 and the batch equation (a leaf module).
//! - [`trust`]: the JWKS trust store (SPEC §6).
//! - [`revocation`]: revocation entries, the in-memory list and its durable log (SPEC §5).
//! - [`replay`]: the replay-nonce stores (SPEC §3, §8): in memory, or shared through Redis.
//! - [`mint`]: issuer and wallet simulator for tests, benches, the demo and the load generator.
//! - [`gateway`]: the service's shared state, tenants, the async→pool bridge, coalescing.
//! - [`api`]: HTTP routes and JSON shapes (SPEC §4); the only module that knows status codes.
//! - [`server`]: listeners, connection limits, timeouts, graceful shutdown.
//! - [`config`]: the TOML configuration and its `IDGATE_*` overrides.
//! - [`metrics`]: Prometheus metrics (SPEC §10).
//! - [`cli`]: the command line, including the offline tools of SPEC §9.
//! - [`b64`]: strict base64url.
//! - [`id`], [`clock`], [`json_error`]: ID numbers parsed once, the wall clock, parse errors
//!   described without quoting the input (leaf modules).
#![forbid(unsafe_code)]

pub mod api;
pub mod b64;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ed25519;
pub mod gateway;
pub mod id;
pub mod json_error;
pub mod metrics;
pub mod mint;
pub mod replay;
pub mod revocation;
pub mod server;
pub mod trust;
pub mod verify;
