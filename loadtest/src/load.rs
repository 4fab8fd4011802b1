//! The load engine: N keep-alive HTTP/1.1 connections, closed or open loop.
//!
//! - **Closed loop**: each connection sends its next request as soon as the previous answer
//!   arrives. Latency is measured from the send.
//! - **Open loop** (wrk2's model): each connection has a fixed schedule (rate / N requests per
//!   second, staggered). Latency is measured from the *intended* send time, so when the server
//!   stalls, the requests that should have been sent meanwhile count their waiting time: a stall
//!   shows up in the tail instead of being hidden (coordinated omission). A send that starts late
//!   is counted: late because the connection was still waiting for the server (the server's
//!   doing), or late although the connection was free (the generator's own lag). If the
//!   generator lags, the run says so and fails instead of reporting figures it did not produce.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// One prebuilt request.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: &'static str,
    pub body: Bytes,
    pub items: u32,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub requests: Arc<Vec<Request>>,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    pub bearer: String,
    pub timeout: Duration,
}

/// A send that starts more than this after its schedule counts as late.
const LATE: Duration = Duration::from_millis(5);

/// Latencies are recorded in microseconds up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .expect("1 µs to 60 s at 3 significant figures are valid bounds")
}

/// One second of the measured window.
#[derive(Clone, Debug)]
pub struct Second {
    pub requests: u64,
    pub items: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            requests: 0,
            items: 0,
            errors: 0,
            latency: histogram(),
        }
    }
}

/// Counts from one connection, or all of them merged.
#[derive(Clone, Debug)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub items: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub series: Vec<Second>,
    /// Sends that started late because the connection was still busy (server backpressure).
    pub late_server: u64,
    /// Sends that started late although the connection was free (the generator fell behind).
    pub late_generator: u64,
    pub max_generator_lag: Duration,
    /// Every answered request including warm-up, by route and status (for the `/metrics`
    /// cross-check).
    pub all_statuses: BTreeMap<(&'static str, u16), u64>,
    pub all_outcomes: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: histogram(),
            requests: 0,
            items: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            series: Vec::new(),
            late_server: 0,
            late_generator: 0,
            max_generator_lag: Duration::ZERO,
            all_statuses: BTreeMap::new(),
            all_outcomes: BTreeMap::new(),
        }
    }
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.items += other.items;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in other.all_statuses {
            *self.all_statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.all_outcomes {
            *self.all_outcomes.entry(k).or_default() += v;
        }
        if self.series.len() < other.series.len() {
            self.series.resize_with(other.series.len(), Second::default);
        }
        for (mine, theirs) in self.series.iter_mut().zip(other.series) {
            mine.requests += theirs.requests;
            mine.items += theirs.items;
            mine.errors += theirs.errors;
            let _ = mine.latency.add(&theirs.latency);
        }
        self.late_server += other.late_server;
        self.late_generator += other.late_generator;
        self.max_generator_lag = self.max_generator_lag.max(other.max_generator_lag);
    }

    /// Share of sends the generator itself started late.
    pub fn generator_late_share(&self) -> f64 {
        let sends = self.requests + self.errors.values().sum::<u64>();
        if sends == 0 {
            0.0
        } else {
            self.late_generator as f64 / sends as f64
        }
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub requests: AtomicU64,
    pub items: AtomicU64,
    pub errors: AtomicU64,
}

/// Reads `"counts":{...}` from the end of a `/v1/verify` answer.
fn outcome_counts(body: &[u8]) -> Option<BTreeMap<String, u64>> {
    let at = memchr_last(body, b"\"counts\":")?;
    let object = body.get(at + 9..body.len().checked_sub(1)?)?;
    serde_json::from_slice(object).ok()
}

fn memchr_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

async fn connect(addr: SocketAddr) -> Option<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

async fn connection(
    addr: SocketAddr,
    plan: Arc<Plan>,
    next: Arc<AtomicUsize>,
    clock: Arc<Clock>,
    index: usize,
    progress: Arc<Progress>,
) -> Stats {
    let mut stats = Stats::default();
    let seconds = plan.duration.as_secs() as usize + 2;
    stats.series.resize_with(seconds, Second::default);
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate));
    let offset = interval.map_or(Duration::ZERO, |i| {
        i.mul_f64(index as f64 / plan.connections as f64)
    });
    let authorization = format!("Bearer {}", plan.bearer);
    let host = addr.to_string();
    let mut sender = None;
    let mut previous_done = clock.start;
    let mut sent: u32 = 0;
    loop {
        let scheduled = match interval {
            Some(interval) => clock.start + offset + interval * sent,
            None => Instant::now(),
        };
        if scheduled >= clock.end {
            break;
        }
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        if sender.is_none() {
            sender = connect(addr).await;
        }
        let Some(client) = sender.as_mut() else {
            *stats.errors.entry("connect").or_default() += 1;
            progress.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            sent += 1;
            continue;
        };
        let send_at = Instant::now();
        if interval.is_some() && send_at.saturating_duration_since(scheduled) > LATE {
            // Whose fault: was the connection still waiting for the server at the schedule?
            let free_at = previous_done.max(scheduled);
            let generator_lag = send_at.saturating_duration_since(free_at);
            if previous_done > scheduled + LATE {
                stats.late_server += 1;
            }
            if generator_lag > LATE {
                stats.late_generator += 1;
                stats.max_generator_lag = stats.max_generator_lag.max(generator_lag);
            }
        }
        let request = &plan.requests[next.fetch_add(1, Ordering::Relaxed) % plan.requests.len()];
        let http_request = hyper::Request::post(request.path)
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::AUTHORIZATION, authorization.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(request.body.clone()));
        let Ok(http_request) = http_request else {
            break;
        };
        let exchange = async {
            let response = client.send_request(http_request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let result = tokio::time::timeout(plan.timeout, exchange).await;
        let done = Instant::now();
        previous_done = done;
        sent += 1;
        let measured = scheduled >= clock.measure_from;
        match result {
            Ok(Ok((status, body))) => {
                *stats
                    .all_statuses
                    .entry((request.path, status))
                    .or_default() += 1;
                let counts = if request.path == "/v1/verify" && status == 200 {
                    outcome_counts(&body)
                } else {
                    None
                };
                if let Some(counts) = &counts {
                    for (outcome, count) in counts {
                        *stats.all_outcomes.entry(outcome.clone()).or_default() += count;
                    }
                }
                progress.requests.fetch_add(1, Ordering::Relaxed);
                progress
                    .items
                    .fetch_add(u64::from(request.items), Ordering::Relaxed);
                if measured {
                    let latency = done.saturating_duration_since(if interval.is_some() {
                        scheduled
                    } else {
                        send_at
                    });
                    let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
                    let _ = stats.latency.record(micros);
                    stats.requests += 1;
                    stats.items += u64::from(request.items);
                    *stats.statuses.entry(status).or_default() += 1;
                    for (outcome, count) in counts.into_iter().flatten() {
                        *stats.outcomes.entry(outcome).or_default() += count;
                    }
                    let second =
                        done.saturating_duration_since(clock.measure_from).as_secs() as usize;
                    if let Some(bucket) = stats.series.get_mut(second) {
                        bucket.requests += 1;
                        bucket.items += u64::from(request.items);
                        let _ = bucket.latency.record(micros);
                    }
                }
            }
            failure => {
                let kind = if failure.is_err() { "timeout" } else { "io" };
                progress.errors.fetch_add(1, Ordering::Relaxed);
                if measured {
                    *stats.errors.entry(kind).or_default() += 1;
                    let second =
                        done.saturating_duration_since(clock.measure_from).as_secs() as usize;
                    if let Some(bucket) = stats.series.get_mut(second) {
                        bucket.errors += 1;
                    }
                }
                // The connection is unusable after an error; open a new one next time.
                sender = None;
            }
        }
    }
    stats
}

/// Runs `plan` against `addr`; returns merged stats for the measured window.
pub async fn run(addr: SocketAddr, plan: Plan, progress: Arc<Progress>) -> Stats {
    let plan = Arc::new(plan);
    let start = Instant::now() + Duration::from_millis(50);
    let clock = Arc::new(Clock {
        start,
        measure_from: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
    });
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|index| {
            tokio::spawn(connection(
                addr,
                Arc::clone(&plan),
                Arc::clone(&next),
                Arc::clone(&clock),
                index,
                Arc::clone(&progress),
            ))
        })
        .collect();
    let mut total = Stats::default();
    total
        .series
        .resize_with(plan.duration.as_secs() as usize + 2, Second::default);
    for task in tasks {
        if let Ok(stats) = task.await {
            total.merge(stats);
        }
    }
    // Only whole seconds of the measured window.
    total.series.truncate(plan.duration.as_secs() as usize);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_are_read_from_the_tail_of_an_answer() {
        let body =
            br#"{"results":[{"outcome":"valid","counts":1}],"counts":{"valid":3,"replayed":1}}"#;
        let counts = outcome_counts(body).unwrap();
        assert_eq!(counts.get("valid"), Some(&3));
        assert_eq!(counts.get("replayed"), Some(&1));
    }
}
