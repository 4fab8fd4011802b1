//! Test-side helpers shared by idgate's integration tests (`tests/common/`) and the load
//! generator (`loadtest/`), so that each exists once:
//!
//! - [`http`]: a blocking HTTP/1.1 client on hyper, one connection per call, every call bounded
//!   in time;
//! - [`metrics`]: a Prometheus text-format parser for scraping `/metrics`.
//!
//! Never a dependency of the gateway itself.
#![forbid(unsafe_code)]

pub mod http;
pub mod metrics;
