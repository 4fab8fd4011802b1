//! Replay stores (SPEC §3, §8): nonce check-and-insert for key-bound presentations, behind
//! the verifier's `ReplayGuard` seam (ARCHITECTURE.md).
//!
//! - [`memory`]: one instance's own store (`replay.backend = "memory"`, the default).
//! - [`redis`]: shared by every instance through Redis (`replay.backend = "redis"`).

pub mod memory;
pub mod redis;

pub use memory::{MemoryReplayOptions, MemoryReplayStore};
pub use redis::{RedisReplay, RedisReplayOptions, RedisStartError, RedisTarget};
