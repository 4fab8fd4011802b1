//! HTTP: routes and the request and response shapes of SPEC §4. The only module that knows
//! HTTP, JSON request bodies and status codes.
//!
//! Every request gets a request id (`x-request-id`, taken from the client when it is a short
//! token, generated otherwise), one structured log line, and metrics by route and status.
//! **Invariant:** logs and errors carry counts, routes, tenants and ids — never presentations,
//! ID numbers or keys.

pub mod error;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde::Deserialize;

pub use error::ApiError;
use error::{json_response, text_response};

use crate::gateway::coalesce::Job;
use crate::gateway::{Gateway, Tenant, Texts, tenants};
use crate::metrics::{Route, Shed};
use crate::revocation::{self, Kind, Record, Status, unix_now};
use crate::verify::presentation::is_valid_id;
use crate::verify::{
    Batch, Outcome, RevocationSource, SignatureError, SignatureInput, State, Verdict,
};

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public,
    Operator,
}

/// What a handler reports besides its response (for the log line and metrics).
struct Handled {
    response: Response,
    items: usize,
    tenant: Option<String>,
}

impl Handled {
    fn plain(response: Response) -> Handled {
        Handled {
            response,
            items: 0,
            tenant: None,
        }
    }
}

fn route_of(listener: Listener, method: &Method, path: &str) -> Route {
    match (listener, path) {
        (Listener::Public, "/v1/verify") => Route::Verify,
        (Listener::Public, "/v1/signatures/verify") => Route::Signatures,
        (Listener::Public, "/v1/status") => Route::Status,
        (Listener::Operator, "/metrics") => Route::Metrics,
        (Listener::Operator, "/livez") => Route::Livez,
        (Listener::Operator, "/readyz") => Route::Readyz,
        (Listener::Operator, "/admin/v1/trust/reload") => Route::AdminTrustReload,
        (Listener::Operator, "/admin/v1/revocations") if method == Method::POST => {
            Route::AdminRevocationsPost
        }
        (Listener::Operator, path) if path.starts_with("/admin/v1/revocations/") => {
            Route::AdminRevocationsGet
        }
        _ => Route::Other,
    }
}

/// The client's `x-request-id` if it is a short token, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return id.to_string();
    }
    format!(
        "{:08x}{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Time allowed for one `POST /admin/v1/revocations` (a large bulk upload).
const BULK_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Entry point for every request on either listener.
pub async fn handle(gateway: Gateway, listener: Listener, request: Request) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = request.method().clone();
    let route = route_of(listener, &method, request.uri().path());
    // Bulk revocation uploads may be large (streamed, up to `max_admin_body_bytes`).
    let timeout = if route == Route::AdminRevocationsPost {
        gateway.settings.request_timeout.max(BULK_UPLOAD_TIMEOUT)
    } else {
        gateway.settings.request_timeout
    };
    let handled =
        match tokio::time::timeout(timeout, dispatch(&gateway, listener, route, request)).await {
            Ok(Ok(handled)) => handled,
            Ok(Err(error)) => {
                match &error {
                    ApiError::RateLimited(_) => gateway.metrics.shed(Shed::RateLimit),
                    ApiError::Overloaded(_) => gateway.metrics.shed(Shed::Pending),
                    ApiError::TooLarge(_) => gateway.metrics.shed(Shed::TooLarge),
                    _ => {}
                }
                Handled::plain(error.response())
            }
            Err(_) => {
                gateway.metrics.shed(Shed::Timeout);
                Handled::plain(ApiError::Timeout.response())
            }
        };
    let mut response = handled.response;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    gateway
        .metrics
        .request(route, status, elapsed.as_secs_f64());
    tracing::info!(
        target: "idgate::request",
        request_id = %request_id,
        method = %method,
        route = route.as_str(),
        status,
        duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        items = handled.items,
        tenant = handled.tenant.as_deref().unwrap_or("-"),
    );
    response
}

async fn dispatch(
    gateway: &Gateway,
    listener: Listener,
    route: Route,
    request: Request,
) -> Result<Handled, ApiError> {
    let method = request.method().clone();
    let needs = |expected: Method| {
        if method == expected {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    };
    match route {
        Route::Verify => {
            needs(Method::POST)?;
            verify(gateway, request).await
        }
        Route::Signatures => {
            needs(Method::POST)?;
            signatures(gateway, request).await
        }
        Route::Status => {
            needs(Method::POST)?;
            status(gateway, request).await
        }
        Route::Metrics => {
            needs(Method::GET)?;
            let text = gateway.metrics.render(&gateway.gauges());
            Ok(Handled::plain(text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )))
        }
        Route::Livez => Ok(Handled::plain(text_response(
            StatusCode::OK,
            "text/plain",
            "ok\n",
        ))),
        Route::Readyz => Ok(Handled::plain(if gateway.is_ready() {
            text_response(StatusCode::OK, "text/plain", "ready\n")
        } else {
            text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
        })),
        Route::AdminRevocationsPost => {
            admin_auth(gateway, &request)?;
            post_revocations(gateway, request).await
        }
        Route::AdminRevocationsGet => {
            needs(Method::GET)?;
            admin_auth(gateway, &request)?;
            get_revocation(gateway, request.uri().path())
        }
        Route::AdminTrustReload => {
            needs(Method::POST)?;
            admin_auth(gateway, &request)?;
            reload_trust(gateway)
        }
        Route::Other
            if listener == Listener::Operator
                && request.uri().path() == "/admin/v1/revocations" =>
        {
            Err(ApiError::MethodNotAllowed)
        }
        Route::Other => Err(ApiError::NotFound),
    }
}

// ---- shared steps --------------------------------------------------------------------------

fn authenticate<'g>(gateway: &'g Gateway, request: &Request) -> Result<&'g Tenant, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    gateway
        .tenants
        .authenticate(header)
        .ok_or(ApiError::Unauthorized)
}

fn admin_auth(gateway: &Gateway, request: &Request) -> Result<(), ApiError> {
    let expected = gateway
        .settings
        .admin_token_sha256
        .ok_or(ApiError::Forbidden(
            "the admin API is disabled (set admin.token_sha256)",
        ))?;
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if tenants::token_matches(header, &expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the body is larger than {limit} bytes"))
}

/// Refuses a body whose declared `Content-Length` is over `limit`, before reading any of it.
fn refuse_declared_length(request: &Request, limit: usize) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(body_too_large(limit));
    }
    Ok(())
}

/// Reads the whole body, refusing more than `limit` bytes (before reading, when the client
/// declares a length).
async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || body_too_large(limit);
    refuse_declared_length(&request, limit)?;
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::BadRequest("the body could not be read".into())),
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        // serde's message names fields and positions, never values (it does quote unknown
        // *field names*, which come from the request's structure, not its data).
        let message = error.to_string();
        let message = message.split(" at line").next().unwrap_or("invalid JSON");
        ApiError::BadRequest(format!("malformed request body: {message}"))
    })
}

/// Item count, tenant rate limit, pending bound: in that order, so a request that could never
/// run (too many items) does not spend the tenant's budget.
fn admit(
    gateway: &Gateway,
    tenant: &Tenant,
    items: usize,
) -> Result<crate::gateway::Reservation, ApiError> {
    if items > gateway.settings.max_batch_items {
        return Err(ApiError::TooLarge(format!(
            "{items} items; at most {} per request",
            gateway.settings.max_batch_items
        )));
    }
    tenant
        .admit(items as u64, Instant::now())
        .map_err(ApiError::RateLimited)?;
    gateway
        .reserve(items)
        .ok_or(ApiError::Overloaded(Duration::from_secs(1)))
}

// ---- POST /v1/verify -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest<'a> {
    #[serde(borrow)]
    presentations: Vec<Cow<'a, str>>,
    #[serde(default)]
    return_claims: bool,
}

/// `{"results": [...], "counts": {...}}`, and the outcome counts for metrics.
fn render_verdicts(verdicts: &[Verdict]) -> (Bytes, [u32; Outcome::ALL.len()]) {
    let mut counts = [0u32; Outcome::ALL.len()];
    let mut out = Vec::with_capacity(32 + verdicts.len() * 160);
    out.extend_from_slice(b"{\"results\":[");
    for (index, verdict) in verdicts.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        // Our own plain structs: serialising into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, verdict);
        if let Some(count) = counts.get_mut(verdict.outcome.index()) {
            *count += 1;
        }
    }
    out.extend_from_slice(b"],\"counts\":{");
    let mut first = true;
    for (outcome, count) in Outcome::ALL.iter().zip(counts) {
        if count > 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            let _ = write!(CountWriter(&mut out), "\"{}\":{count}", outcome.as_str());
        }
    }
    out.extend_from_slice(b"}}");
    (Bytes::from(out), counts)
}

struct CountWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for CountWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn verify(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    let body = read_body(request, gateway.settings.max_body_bytes).await?;
    let parsed: VerifyRequest<'_> = parse_json(&body)?;
    let items = parsed.presentations.len();
    let reservation = admit(gateway, tenant, items)?;
    gateway.metrics.batch(Route::Verify, items);
    let mut texts = Texts::new(body.clone());
    for presentation in &parsed.presentations {
        texts.push(presentation);
    }
    let return_claims = parsed.return_claims;
    let small = items * 4 <= gateway.settings.coalesce_max_items;
    let (body, counts) = match gateway.coalescer() {
        Some(coalescer) if small && items > 0 => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = Job {
                texts,
                tenant: tenant.index,
                return_claims,
                reservation,
                reply,
            };
            coalescer
                .submit(job)
                .await
                .map_err(|_| ApiError::Unavailable("the gateway is shutting down".into()))?;
            let verdicts = answer
                .await
                .map_err(|_| ApiError::Internal("verification failed"))?
                .map_err(|_| ApiError::Internal("verification failed"))?;
            render_verdicts(&verdicts)
        }
        _ => {
            let engine_side = gateway.clone();
            let tenant_index = tenant.index;
            gateway
                .on_engine(move || {
                    let _reservation = reservation;
                    let presentations = texts.all();
                    let policy = engine_side.tenants.get(tenant_index).map(|t| &t.policy);
                    let fallback = crate::verify::Policy::default();
                    let batch = Batch::new(
                        &presentations,
                        unix_now(),
                        policy.unwrap_or(&fallback),
                        return_claims,
                    );
                    let trust = engine_side.trust();
                    let state = State {
                        trust: &trust,
                        revocation: engine_side.revocations.list().as_ref(),
                        replay: &engine_side.replay,
                    };
                    render_verdicts(&engine_side.verifier.verify(&batch, state))
                })
                .await
                .map_err(|_| ApiError::Internal("verification failed"))?
        }
    };
    for (outcome, count) in Outcome::ALL.iter().zip(counts) {
        if count > 0 {
            gateway
                .metrics
                .verifications(tenant.index, *outcome, u64::from(count));
        }
    }
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}

// ---- POST /v1/signatures/verify ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignaturesRequest<'a> {
    #[serde(borrow)]
    items: Vec<SignatureItem<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureItem<'a> {
    #[serde(borrow)]
    public_key: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    signature: Cow<'a, str>,
}

async fn signatures(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    let body = read_body(request, gateway.settings.max_body_bytes).await?;
    let parsed: SignaturesRequest<'_> = parse_json(&body)?;
    let items = parsed.items.len();
    let reservation = admit(gateway, tenant, items)?;
    gateway.metrics.batch(Route::Signatures, items);
    // base64url errors are item-level (`malformed`), not request-level.
    let inputs: Vec<Option<SignatureInput>> = parsed
        .items
        .iter()
        .map(|item| {
            Some(SignatureInput {
                public_key: crate::b64::decode(&item.public_key).ok()?,
                message: crate::b64::decode(&item.message).ok()?,
                signature: crate::b64::decode(&item.signature).ok()?,
            })
        })
        .collect();
    let engine_side = gateway.clone();
    let body = gateway
        .on_engine(move || {
            let _reservation = reservation;
            let usable: Vec<SignatureInput> = inputs
                .iter()
                .map(|i| i.clone().unwrap_or_default())
                .collect();
            let results = engine_side.verifier.verify_signatures(&usable);
            let mut out = Vec::with_capacity(16 + results.len() * 40);
            out.extend_from_slice(b"{\"results\":[");
            for (index, (input, result)) in inputs.iter().zip(results).enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                let result = if input.is_some() {
                    result
                } else {
                    Err(SignatureError::Malformed)
                };
                match result {
                    Ok(()) => out.extend_from_slice(b"{\"valid\":true}"),
                    Err(error) => {
                        out.extend_from_slice(b"{\"valid\":false,\"error\":\"");
                        out.extend_from_slice(error.as_str().as_bytes());
                        out.extend_from_slice(b"\"}");
                    }
                }
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .await
        .map_err(|_| ApiError::Internal("verification failed"))?;
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}

// ---- POST /v1/status -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest<'a> {
    #[serde(borrow, default)]
    subjects: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    credentials: Vec<Cow<'a, str>>,
}

/// Appends one status result. IDs are validated to `[A-Za-z0-9._-]`, so they need no escaping.
fn write_status(out: &mut Vec<u8>, kind: Kind, id: &str, record: Option<Record>, current: bool) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    let mut writer = CountWriter(out);
    match record {
        _ if !current => {
            let _ = write!(writer, "\",\"status\":\"undetermined\"}}");
        }
        Some(record) if record.status != Status::Active => {
            let reason = record.reason.map_or("other", |r| r.as_str());
            match (kind, record.before) {
                // A subject with `before` is in good standing now; only older credentials are
                // affected (a lost phone, re-provisioned).
                (Kind::Subject, Some(before)) => {
                    let _ = write!(
                        writer,
                        "\",\"status\":\"active\",\"reason\":\"{reason}\",\"since\":{},\"revoked_before\":{before}}}",
                        record.at
                    );
                }
                _ => {
                    let _ = write!(
                        writer,
                        "\",\"status\":\"{}\",\"reason\":\"{reason}\",\"since\":{}}}",
                        record.status.as_str(),
                        record.at
                    );
                }
            }
        }
        _ => {
            let _ = write!(writer, "\",\"status\":\"active\"}}");
        }
    }
}

async fn status(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let tenant = authenticate(gateway, &request)?;
    if !tenant.allow_status_queries {
        return Err(ApiError::Forbidden(
            "this tenant may not make status queries",
        ));
    }
    let body = read_body(request, gateway.settings.max_body_bytes).await?;
    let parsed: StatusRequest<'_> = parse_json(&body)?;
    for (list, name) in [
        (&parsed.subjects, "subjects"),
        (&parsed.credentials, "credentials"),
    ] {
        if let Some(index) = list.iter().position(|id| !is_valid_id(id)) {
            return Err(ApiError::BadRequest(format!(
                "{name}[{index}] is not an ID (1-64 characters of [A-Za-z0-9._-])"
            )));
        }
    }
    let items = parsed.subjects.len() + parsed.credentials.len();
    let reservation = admit(gateway, tenant, items)?;
    gateway.metrics.batch(Route::Status, items);
    let mut subjects = Texts::new(body.clone());
    parsed.subjects.iter().for_each(|id| subjects.push(id));
    let mut credentials = Texts::new(body.clone());
    parsed
        .credentials
        .iter()
        .for_each(|id| credentials.push(id));
    let engine_side = gateway.clone();
    let body = gateway
        .on_engine(move || {
            let _reservation = reservation;
            let list = engine_side.revocations.list();
            let now = unix_now();
            let current = list.is_current(now);
            let mut out = Vec::with_capacity(48 + items * 64);
            let _ = write!(CountWriter(&mut out), "{{\"as_of\":{now},\"results\":[");
            let mut first = true;
            for (kind, ids) in [(Kind::Subject, &subjects), (Kind::Credential, &credentials)] {
                for index in 0..ids.len() {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    let id = ids.get(index);
                    write_status(&mut out, kind, id, list.lookup(kind, id), current);
                }
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .await
        .map_err(|_| ApiError::Internal("status lookup failed"))?;
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: Some(tenant.name.clone()),
    })
}

// ---- operator: admin routes ----------------------------------------------------------------

/// Streams a JSON Lines body into one log record: each piece is parsed as it arrives, so
/// memory holds the packed entries, not the text. All or nothing.
async fn post_revocations(gateway: &Gateway, request: Request) -> Result<Handled, ApiError> {
    let limit = gateway.settings.max_admin_body_bytes;
    let too_large = || body_too_large(limit);
    refuse_declared_length(&request, limit)?;
    let mut body = request.into_body();
    let mut stream = revocation::import::JsonlStream::default();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > limit {
            return Err(too_large());
        }
        stream
            .feed(&data)
            .map_err(|error| ApiError::BadRequest(format!("nothing applied: {error}")))?;
    }
    let record = stream
        .finish()
        .map_err(|error| ApiError::BadRequest(format!("nothing applied: {error}")))?;
    let items = record.len();
    gateway
        .revocations
        .commit_record(record)
        .await
        .map_err(|error| ApiError::Unavailable(format!("nothing applied: {error}")))?;
    let body = format!(
        "{{\"applied\":{items},\"entries\":{}}}",
        gateway.revocations.list().len()
    );
    Ok(Handled {
        response: json_response(StatusCode::OK, body),
        items,
        tenant: None,
    })
}

fn get_revocation(gateway: &Gateway, path: &str) -> Result<Handled, ApiError> {
    let rest = path
        .strip_prefix("/admin/v1/revocations/")
        .unwrap_or_default();
    let (kind, id) = rest.split_once('/').ok_or(ApiError::NotFound)?;
    let kind = Kind::parse(kind).ok_or(ApiError::BadRequest(
        "kind must be subject or credential".into(),
    ))?;
    if !is_valid_id(id) {
        return Err(ApiError::BadRequest(
            "not an ID (1-64 characters of [A-Za-z0-9._-])".into(),
        ));
    }
    let record = gateway
        .revocations
        .list()
        .lookup(kind, id)
        .ok_or(ApiError::NotFound)?;
    let body = serde_json::json!({
        "kind": kind.as_str(),
        "id": id,
        "status": record.status.as_str(),
        "reason": record.reason.map(|r| r.as_str()),
        "before": record.before,
        "at": record.at,
    });
    Ok(Handled::plain(json_response(
        StatusCode::OK,
        body.to_string(),
    )))
}

fn reload_trust(gateway: &Gateway) -> Result<Handled, ApiError> {
    match gateway.reload_trust() {
        Ok(keys) => {
            tracing::info!(keys, "trust store reloaded");
            Ok(Handled::plain(json_response(
                StatusCode::OK,
                format!("{{\"keys\":{keys}}}"),
            )))
        }
        Err(error) => {
            tracing::warn!(error = %error, "trust store reload refused; the previous keys stay in force");
            Err(ApiError::BadRequest(format!(
                "trust store not reloaded, the previous keys stay in force: {error}"
            )))
        }
    }
}
