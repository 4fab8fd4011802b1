//! The API's routes: what [`super::handle`] dispatches on, and the label each is counted under
//! in `idgate_requests_total{route}` (the metrics module takes the labels as a closed set).

use hyper::Method;

use super::Listener;

/// One route of SPEC §4 (or none: `Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Verify,
    Signatures,
    Status,
    Metrics,
    Livez,
    Readyz,
    AdminRevocationsPost,
    AdminRevocationsGet,
    AdminTrustReload,
    Other,
}

/// Every route's metric label, indexed by [`Route::index`]; `other` last.
pub const LABELS: &[&str] = &[
    "/v1/verify",
    "/v1/signatures/verify",
    "/v1/status",
    "/metrics",
    "/livez",
    "/readyz",
    "POST /admin/v1/revocations",
    "GET /admin/v1/revocations",
    "/admin/v1/trust/reload",
    "other",
];

impl Route {
    /// The route a request is for.
    pub fn of(listener: Listener, method: &Method, path: &str) -> Route {
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

    /// Position in [`LABELS`] (the metrics index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        LABELS.get(self.index()).copied().unwrap_or("other")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_label() {
        let all = [
            Route::Verify,
            Route::Signatures,
            Route::Status,
            Route::Metrics,
            Route::Livez,
            Route::Readyz,
            Route::AdminRevocationsPost,
            Route::AdminRevocationsGet,
            Route::AdminTrustReload,
            Route::Other,
        ];
        assert_eq!(all.len(), LABELS.len());
        for (index, route) in all.iter().enumerate() {
            assert_eq!(route.index(), index);
            assert_eq!(route.as_str(), LABELS[index]);
        }
        assert_eq!(Route::Other.as_str(), "other");
    }
}
