//! The wall clock, in the one unit every check and record uses: Unix seconds.
//!
//! A leaf module. Everything that asks "what time is it" asks here, so a test or a tool that
//! needs another "now" passes it explicitly (the verifier takes `now` as an argument and never
//! reads the clock itself).

/// The wall clock in Unix seconds (0 if the system clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
