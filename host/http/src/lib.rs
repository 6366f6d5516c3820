//! converge-http: the HTTP API of SPEC §5 over a [`Service`], and the listener that serves it.
//!
//! [`app`] builds the whole application as an axum `Router`, so tests drive it with `oneshot` and no socket;
//! [`server::serve`] puts it on a listener with connection-level limits. Handlers only translate: a request
//! into a service call, the answer into JSON, a [`ServiceError`](converge_service::ServiceError) into one
//! [`ApiError`] with an honest status. The OpenAPI document is generated from the same handlers and types
//! (`utoipa`), so it cannot list a route the router lacks.
//!
//! # Invariants of this crate
//!
//! - Every error leaves as `{"error": {"kind", "message"}}`; a client's mistake is never a 5xx.
//! - This layer never runs a job and never blocks the async runtime: it awaits the service.
//! - Nothing here knows wasmtime or a database: only the service.

mod auth;
mod body;
mod error;
mod jobs;
mod openapi;
mod ops;
pub mod server;
mod tools;
mod ui;

pub use auth::{Auth, AuthError, DEFAULT_TENANT};
pub use error::{ApiError, ErrorBody};
pub use jobs::{Accepted, AnswerAccepted, CancelAccepted, JobPage, JobTrace};
pub use ops::{AgentsView, RejectedView};
pub use tools::{MANIFEST_HEADER, ToolView, ToolsView, Validation};

use converge_service::Service;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How the HTTP layer runs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Who may call: bearer tokens by tenant, or nobody checks.
    pub auth: Auth,
    /// Largest request body, in bytes (413 above); tool validations have their own cap.
    pub max_body: usize,
    /// Time allowed to receive a request body (408 after).
    pub body_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { auth: Auth::none(), max_body: 1 << 20, body_timeout: Duration::from_secs(10) }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) svc: Arc<Service>,
    pub(crate) config: Arc<HttpConfig>,
    pub(crate) openapi: Arc<utoipa::openapi::OpenApi>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Converge", description = "Sandboxed WebAssembly agents that converge on a shared context (SPEC §5)."),
    components(schemas(converge_store::Manifest, converge_store::TestCase, converge_store::Expect)),
    tags((name = "jobs"), (name = "agents"), (name = "tools"), (name = "operations"))
)]
struct ApiDoc;

/// The routes, by area, and the OpenAPI document built from them.
fn routes() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::get_trace))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::answer))
        .routes(routes!(jobs::cancel))
        .routes(routes!(ops::list_agents))
        .routes(routes!(tools::validate_tool))
        .routes(routes!(tools::list_tools))
        .routes(routes!(tools::get_tool))
        .routes(routes!(tools::review_tool))
        .routes(routes!(ops::status))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .split_for_parts()
}

/// The OpenAPI document as JSON, of a server without tokens and with nothing loaded; a running server serves
/// its own at `/openapi.json` (with its authentication and the agents it has loaded).
pub fn openapi_json() -> String {
    openapi::document(&routes().1, &openapi::Facts::default())
}

/// The whole HTTP application over `svc`.
pub fn app(svc: Arc<Service>, config: HttpConfig) -> axum::Router {
    let (router, api) = routes();
    let state = AppState { svc, config: Arc::new(config), openapi: Arc::new(api) };
    router
        .merge(ui::routes())
        .fallback(error::fallback)
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}
