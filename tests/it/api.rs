//! The HTTP API in-process: the real router over a real service, store and runtime, driven with `oneshot`, no
//! socket.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use converge_engine::RayonExecutor;
use converge_http::{Auth, HttpConfig, app};
use converge_runtime::{Registry, WasmRuntime};
use converge_sandbox::{Sandbox, SandboxConfig};
use converge_service::{AdaptiveExecutor, Service, ServiceConfig, Watchers};
use converge_store::{SqliteStore, Store};
use converge_tests::{MARKET_CYCLES, MARKET_HASH, REVIEW_ANSWER, REVIEW_CYCLES, REVIEW_HASH, REVIEW_QUESTION, example};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// How long any job may take to reach a state the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A service, its store and its router, as `converge serve` builds them.
struct Api {
    app: axum::Router,
    svc: Arc<Service>,
    store: Arc<SqliteStore>,
    /// The bearer token sent with every request, if any.
    token: Option<&'static str>,
}

struct Options {
    workers: usize,
    queue: usize,
    validations_waiting: usize,
    http: HttpConfig,
    /// The compiled-code cache; the one all tests share unless a test needs its own.
    cache: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self { workers: 2, queue: 64, validations_waiting: 3, http: HttpConfig::default(), cache: cache_dir() }
    }
}

/// The compiled-code cache every API test shares, so each component is compiled once.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("service-cache")
}

/// Build and start a service over `dir/data` with the agents in `dir/agents`.
fn start(dir: &Path, opts: Options) -> Api {
    let watchers = Arc::new(Watchers::default());
    let hook = Arc::clone(&watchers);
    let store = Arc::new(SqliteStore::open(&dir.join("data"), Some(Arc::new(move |e| hook.publish(e)))).unwrap());
    let sandbox =
        Arc::new(Sandbox::new(SandboxConfig { instances: 16, pooling: true, ..SandboxConfig::default() }).unwrap());
    let tools = Some(dir.join("agents").join("tools")).filter(|d| d.is_dir());
    let registry = Registry::new(Arc::clone(&sandbox), dir.join("agents"), Some(opts.cache)).with_tools(tools);
    let runtime = Arc::new(WasmRuntime::new(registry));
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(2).stack_size(converge_sandbox::GUEST_STACK).build().unwrap();
    let config = ServiceConfig {
        workers: opts.workers,
        queue: opts.queue,
        validations_waiting: opts.validations_waiting,
        ..ServiceConfig::default()
    };
    let svc = Service::new(
        Arc::clone(&store) as Arc<dyn Store>,
        runtime,
        AdaptiveExecutor::new(RayonExecutor::new(Arc::new(pool)), 2),
        watchers,
        config,
    )
    .unwrap();
    svc.start().unwrap();
    let app = app(Arc::clone(&svc), opts.http);
    Api { app, svc, store, token: None }
}

fn fresh(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api").join(test);
    converge_tests::example_agents(&dir).unwrap();
    dir
}

/// A response, read whole.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Assert the SPEC error shape `{"error": {"kind", "message"}}` and nothing else; returns the message.
    fn error(&self, status: StatusCode, kind: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.header("content-type").is_some_and(|c| c.starts_with("application/json")),
            "{status}: content-type {:?}",
            self.header("content-type")
        );
        let v = self.json();
        let outer: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(outer, ["error"], "{v}");
        let inner: BTreeSet<&str> = v["error"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(inner, BTreeSet::from(["kind", "message"]), "{v}");
        assert_eq!(v["error"]["kind"], kind, "{v}");
        let message = v["error"]["message"].as_str().unwrap().to_owned();
        assert!(!message.is_empty(), "{v}");
        message
    }
}

impl Api {
    fn with_token(&self, token: &'static str) -> Self {
        Self { app: self.app.clone(), svc: Arc::clone(&self.svc), store: Arc::clone(&self.store), token: Some(token) }
    }

    fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        let b = Request::builder().method(method).uri(path);
        match self.token {
            Some(t) => b.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => b,
        }
    }

    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = tokio::time::timeout(PATIENCE, self.app.clone().oneshot(req)).await.unwrap().unwrap();
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(PATIENCE, body.collect()).await.unwrap().unwrap().to_bytes();
        Resp { status: parts.status, headers: parts.headers, body }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path).body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, body: impl Into<String>) -> Resp {
        let req = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.into()))
            .unwrap();
        self.send(req).await
    }

    /// Submit without waiting: 202 with `{id, status}` and a Location; returns the id.
    async fn submit(&self, spec: &str) -> String {
        let r = self.post("/v1/jobs", spec).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        let v = r.json();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(r.header("location"), Some(format!("/v1/jobs/{id}").as_str()));
        id
    }

    /// Submit with `?wait=30` and expect the job to end within it: 200 with the result.
    async fn submit_and_wait(&self, spec: &str) -> Value {
        let r = self.post("/v1/jobs?wait=30", spec).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Poll `GET /v1/jobs/{id}` until its status is `status`.
    async fn poll(&self, id: &str, status: &str) -> Value {
        let start = Instant::now();
        loop {
            let r = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let v = r.json();
            if v["status"] == status {
                return v;
            }
            assert!(start.elapsed() < PATIENCE, "job {id} is {} after {PATIENCE:?}, not {status}", v["status"]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn list(&self, query: &str) -> Value {
        let r = self.get(&format!("/v1/jobs{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    fn stop(self) {
        self.svc.shutdown();
        self.store.close();
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
}

fn market() -> String {
    example("market-entry.json")
}

fn review() -> String {
    example("review.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_wait_answers_the_converged_result() {
    let api = start(&fresh("wait"), Options::default());
    let r = api.post("/v1/jobs?wait=30", market()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let id = v["id"].as_str().unwrap();
    assert_eq!(r.header("location"), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!(v["status"], "converged");
    assert_eq!(v["context_hash"], MARKET_HASH);
    assert_eq!(v["cycles"], MARKET_CYCLES);
    assert_eq!(v["deterministic"], true);
    assert!(v["facts"].as_array().unwrap().iter().any(|f| f["key"] == "signals"));
    // The Location names the stored result.
    let again = api.get(r.header("location").unwrap()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["context_hash"], MARKET_HASH);
    assert_eq!(again.json()["facts"], v["facts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_wait_is_accepted_and_polling_reaches_converged() {
    let api = start(&fresh("poll"), Options::default());
    let r = api.post("/v1/jobs", market()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let v = r.json();
    // The status as it stands when the answer is sent: the job may have started already.
    assert!(["queued", "running", "converged"].contains(&v["status"].as_str().unwrap()), "{v}");
    let id = v["id"].as_str().unwrap();
    let done = api.poll(id, "converged").await;
    assert_eq!(done["id"], id);
    assert_eq!(done["context_hash"], MARKET_HASH);
    assert_eq!(done["cycles"], MARKET_CYCLES);
    // ?wait=0 answers 202 at once, whatever happens next.
    let r = api.post("/v1/jobs?wait=0", market()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    // A wait beyond any Duration is the longest wait, not a panic.
    let r = api.post("/v1/jobs?wait=1e300", market()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["context_hash"], MARKET_HASH);
    // A charset parameter is still JSON.
    let req = Request::post("/v1/jobs?wait=30")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(market()))
        .unwrap();
    let r = api.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_honest_statuses_and_json_errors_and_write_nothing() {
    let http = HttpConfig { max_body: 4096, body_timeout: Duration::from_millis(300), ..HttpConfig::default() };
    let api = start(&fresh("bad"), Options { http, ..Options::default() });

    api.post("/v1/jobs", r#"{"goal": "x""#).await.error(StatusCode::BAD_REQUEST, "invalid_json");
    api.post("/v1/jobs", "not json").await.error(StatusCode::BAD_REQUEST, "invalid_json");

    let m = api
        .post("/v1/jobs", r#"{"goal": "x", "bogus": 1}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("bogus"), "{m}");
    let m = api
        .post("/v1/jobs", r#"{"goal": "x", "agents": ["market-signals", "no-such-agent"]}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("no-such-agent"), "{m}");
    let m = api
        .post("/v1/jobs", r#"{"goal": "x", "invariants": ["no-such-invariant"]}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("no-such-invariant"), "{m}");
    let m = api
        .post("/v1/jobs", r#"{"goal": "x", "budget": {"memory_mb": 0}}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("budget.memory_mb"), "{m}");
    let m = api.post("/v1/jobs", r#"{"agents": []}"#).await.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("goal"), "{m}");
    let r = api.post("/v1/jobs?wait=-1", market()).await;
    r.error(StatusCode::BAD_REQUEST, "bad_request");
    let r = api.post("/v1/jobs?bogus=1", market()).await;
    r.error(StatusCode::BAD_REQUEST, "bad_request");

    // Wrong media type.
    let req = Request::post("/v1/jobs").header(header::CONTENT_TYPE, "text/plain").body(Body::from(market())).unwrap();
    api.send(req).await.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Too large: announced by Content-Length, and streamed without one.
    let big = format!(r#"{{"goal": "{}"}}"#, "x".repeat(10_000));
    let req = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    api.send(req).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        big.as_bytes().chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let req = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream::iter(chunks)))
        .unwrap();
    api.send(req).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // A body that never arrives.
    let req = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream::pending::<Result<Bytes, std::io::Error>>()))
        .unwrap();
    api.send(req).await.error(StatusCode::REQUEST_TIMEOUT, "timeout");
    // The same limit on answers.
    let req = Request::post("/v1/jobs/job_x/answers")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    api.send(req).await.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Unknown routes and methods are JSON errors too.
    api.get("/v1/nope").await.error(StatusCode::NOT_FOUND, "not_found");
    api.get("/").await.error(StatusCode::NOT_FOUND, "not_found");
    let r = api.send(Request::delete("/v1/jobs").body(Body::empty()).unwrap()).await;
    r.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")), "{:?}", r.headers);
    api.get("/v1/jobs/job_1/cancel").await.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    api.get("/v1/jobs/job_does_not_exist").await.error(StatusCode::NOT_FOUND, "not_found");
    api.get("/v1/jobs/bad%20id").await.error(StatusCode::NOT_FOUND, "not_found");
    api.get(&format!("/v1/jobs/job_{}", "x".repeat(100))).await.error(StatusCode::NOT_FOUND, "not_found");
    api.get("/v1/jobs/%FF").await.error(StatusCode::BAD_REQUEST, "bad_request");

    // Nothing above was admitted.
    assert_eq!(ids(&api.list("").await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_job_or_a_conflict() {
    let api = start(&fresh("idempotency"), Options::default());
    let keyed = |key: &str, body: String, wait: bool| {
        Request::post(if wait { "/v1/jobs?wait=30" } else { "/v1/jobs" })
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body))
            .unwrap()
    };
    let first = api.send(keyed("key-1", market(), false)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let second = api.send(keyed("key-1", market(), false)).await;
    assert!(second.status.is_success(), "{}", second.text());
    assert_eq!(second.json()["id"], id.as_str());
    assert_eq!(second.header("location"), Some(format!("/v1/jobs/{id}").as_str()));
    // Waiting on a replay waits for the original job.
    let third = api.send(keyed("key-1", market(), true)).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
    assert_eq!(third.json()["id"], id.as_str());
    assert_eq!(third.json()["context_hash"], MARKET_HASH);
    // Same key, another body.
    let m = api.send(keyed("key-1", review(), false)).await.error(StatusCode::CONFLICT, "idempotency_conflict");
    assert!(m.contains(&id), "{m}");
    assert_eq!(ids(&api.list("").await), [id.as_str()], "one job for one key");
    // Replaying a key of a job that waits for answers, with a wait, answers at once: waiting is a stop.
    let waiting = api.send(keyed("key-review", review(), true)).await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED, "{}", waiting.text());
    assert_eq!(waiting.json()["status"], "waiting");
    let replay = keyed("key-review", review(), true);
    let replayed = tokio::time::timeout(Duration::from_secs(10), api.send(replay))
        .await
        .expect("a replay with ?wait=30 of a waiting job blocked instead of answering");
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.text());
    assert_eq!(replayed.json()["id"], waiting.json()["id"]);
    assert_eq!(replayed.json()["status"], "waiting");
    // Another key is another job.
    let other = api.send(keyed("key-2", market(), false)).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert_ne!(other.json()["id"], id.as_str());
    assert_eq!(ids(&api.list("").await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_tenants_see_only_their_jobs() {
    let auth = Auth::parse("acme tok-acme-0123456789\nglobex tok-globex-0123456789").unwrap();
    let api =
        start(&fresh("auth"), Options { http: HttpConfig { auth, ..HttpConfig::default() }, ..Options::default() });

    let r = api.get("/v1/jobs").await;
    r.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // The document says so: a bearer scheme on /v1/ only, and 401 only there.
    let doc = api.get("/openapi.json").await.json();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "{doc}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let guarded = path.starts_with("/v1/");
            assert_eq!(op.get("security").is_some(), guarded, "{method} {path}");
            assert_eq!(op["responses"].get("401").is_some(), guarded, "{method} {path}");
        }
    }
    let r = api.post("/v1/jobs", market()).await;
    r.error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.with_token("tok-nobody-0123456789").get("/v1/jobs").await.error(StatusCode::UNAUTHORIZED, "unauthorized");
    let basic = Request::get("/v1/jobs").header(header::AUTHORIZATION, "Basic YWNtZTp4").body(Body::empty()).unwrap();
    api.send(basic).await.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(ids(&api.with_token("tok-acme-0123456789").list("").await), Vec::<String>::new(), "nothing admitted");

    let acme = api.with_token("tok-acme-0123456789");
    let globex = api.with_token("tok-globex-0123456789");
    let done = acme.submit_and_wait(&market()).await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(done["context_hash"], MARKET_HASH);
    let waiting = acme.post("/v1/jobs?wait=30", review()).await.json();
    let review_id = waiting["id"].as_str().unwrap();

    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/trace"), format!("/v1/jobs/{id}/events")] {
        globex.get(&path).await.error(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(acme.get(&path).await.status, StatusCode::OK, "{path}");
    }
    globex.post(&format!("/v1/jobs/{review_id}/cancel"), "").await.error(StatusCode::NOT_FOUND, "not_found");
    let answer = json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
    globex.post(&format!("/v1/jobs/{review_id}/answers"), answer).await.error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(acme.poll(review_id, "waiting").await["open_questions"][0]["id"], REVIEW_QUESTION, "untouched");

    assert_eq!(ids(&globex.list("").await), Vec::<String>::new());
    assert_eq!(ids(&globex.list("?status=converged").await), Vec::<String>::new());
    assert_eq!(ids(&acme.list("").await), [review_id, id]);
    // An idempotency key is the tenant's own.
    let keyed = |api: &Api| {
        api.request(Method::POST, "/v1/jobs")
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", "shared-key")
            .body(Body::from(market()))
            .unwrap()
    };
    let a = acme.send(keyed(&acme)).await.json();
    let g = globex.send(keyed(&globex)).await.json();
    assert_ne!(a["id"], g["id"]);

    // Operations stay open.
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    assert_eq!(api.get("/ready").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_resumes_a_waiting_job_to_the_expected_hash() {
    let api = start(&fresh("answers"), Options::default());
    let r = api.post("/v1/jobs?wait=30", review()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "waiting is not an end: {}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "waiting", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let waiting = api.get(&format!("/v1/jobs/{id}")).await.json();
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["open_questions"].as_array().unwrap().len(), 1, "{waiting}");
    assert_eq!(waiting["open_questions"][0]["id"], REVIEW_QUESTION);
    assert_eq!(waiting["open_questions"][0]["agent"], "governance");
    assert!(waiting["open_questions"][0]["prompt"].as_str().unwrap().contains(REVIEW_ANSWER));

    // A stream opened while the job waits follows it through the answer to its end.
    let req = Request::get(format!("/v1/jobs/{id}/events")).body(Body::empty()).unwrap();
    let live = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    let path = format!("/v1/jobs/{id}/answers");
    let answer = |q: &str| json!({"question": q, "answer": REVIEW_ANSWER}).to_string();
    api.post(&path, answer("no-such-question")).await.error(StatusCode::CONFLICT, "unknown_question");
    api.post("/v1/jobs/job_unknown/answers", answer(REVIEW_QUESTION)).await.error(StatusCode::NOT_FOUND, "not_found");
    let m = api
        .post(&path, json!({"question": REVIEW_QUESTION, "answer": "x", "bogus": 1}).to_string())
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(m.contains("bogus"), "{m}");
    let m = api
        .post(&path, json!({"question": REVIEW_QUESTION}).to_string())
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(m.contains("answer"), "{m}");
    api.post(&path, "{").await.error(StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(api.get(&format!("/v1/jobs/{id}")).await.json()["status"], "waiting", "no mistake resumed it");

    let r = api.post(&path, answer(REVIEW_QUESTION)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let v = r.json();
    assert_eq!(v["resumed"], true, "{v}");
    assert_eq!(v["question"], REVIEW_QUESTION);
    let done = api.poll(&id, "converged").await;
    assert_eq!(done["context_hash"], REVIEW_HASH);
    assert_eq!(done["cycles"], REVIEW_CYCLES);
    assert_eq!(done["open_questions"], json!([]));
    let streamed = tokio::time::timeout(PATIENCE, live.into_body().collect()).await.unwrap().unwrap().to_bytes();
    let records = sse_records(&String::from_utf8_lossy(&streamed));
    let seqs: Vec<u64> = records.iter().map(|r| r.1).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>(), "{records:?}");
    let kinds: Vec<&str> = records.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "cycle").count() as u64, REVIEW_CYCLES, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "started").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"waiting") && kinds.contains(&"answer"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"));
    assert!(
        done["facts"].as_array().unwrap().iter().any(|f| f["key"] == "answers" && f["id"] == REVIEW_QUESTION),
        "the answer is a fact"
    );
    let r = api.post(&path, answer(REVIEW_QUESTION)).await;
    let kind = r.json()["error"]["kind"].as_str().unwrap_or_default().to_owned();
    assert!(kind == "already_answered" || kind == "job_finished", "{}", r.text());
    r.error(StatusCode::CONFLICT, &kind);

    // The trail holds each cycle once although the job ran twice.
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    assert_eq!(trace["attempts"], 2);
    let cycles: Vec<u64> = trace["cycles"].as_array().unwrap().iter().map(|c| c["cycle"].as_u64().unwrap()).collect();
    assert_eq!(cycles, (1..=REVIEW_CYCLES).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_job_ends_it_once() {
    let api = start(&fresh("cancel"), Options::default());
    let id = api.post("/v1/jobs?wait=30", review()).await.json()["id"].as_str().unwrap().to_owned();
    api.poll(&id, "waiting").await;
    let r = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "waiting");
    assert_eq!(v["cancel_requested"], true);
    let done = api.poll(&id, "cancelled").await;
    assert_eq!(done["id"], id.as_str());
    api.post(&format!("/v1/jobs/{id}/cancel"), "").await.error(StatusCode::CONFLICT, "job_finished");
    let answer = json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
    api.post(&format!("/v1/jobs/{id}/answers"), answer).await.error(StatusCode::CONFLICT, "job_finished");
    api.post("/v1/jobs/job_unknown/cancel", "").await.error(StatusCode::NOT_FOUND, "not_found");
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    let kinds: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "end").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&"cancel_requested"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_at_its_next_cycle() {
    let dir = fresh("cancel-running");
    let (_, spin) = converge_tests::GUESTS.iter().find(|(name, _)| *name == "spin").unwrap();
    std::fs::copy(spin, dir.join("agents").join("spin.wasm")).unwrap();
    let api = start(&dir, Options::default());
    // One call that spins until its 3 s deadline: the cancel lands while it runs.
    let spec = json!({"goal": "spin", "agents": ["spin"],
        "budget": {"call_timeout_ms": 3000, "fuel_per_call": 1_000_000_000_000_u64}});
    let id = api.submit(&spec.to_string()).await;
    api.poll(&id, "running").await;
    let r = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.json()["status"], "running");
    let done = api.poll(&id, "cancelled").await;
    assert_eq!(done["cycles"], 1, "the cycle under way finishes, no other starts: {done}");
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    let kinds: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "started", "cancel_requested", "cycle", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_ends_cancelled_without_running() {
    let dir = fresh("cancel-queued");
    let api = start(&dir, Options { workers: 0, ..Options::default() });
    let id = api.submit(&market()).await;
    let r = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(r.json()["status"], "queued");
    // Nothing runs here, so the job stays queued with the cancel on record.
    assert_eq!(api.get(&format!("/v1/jobs/{id}")).await.json()["status"], "queued");
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    let kinds: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "cancel_requested"]);
    assert!(api.store.job(None, &id).unwrap().unwrap().cancel_requested);
    let r = api.post(&format!("/v1/jobs/{id}/cancel"), "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "asking twice is harmless while it has not ended: {}", r.text());
    // The first worker to pick it up ends it without a cycle.
    api.stop();
    let api = start(&dir, Options::default());
    let done = api.poll(&id, "cancelled").await;
    assert_eq!(done["cycles"], 0, "{done}");
    api.post(&format!("/v1/jobs/{id}/cancel"), "").await.error(StatusCode::CONFLICT, "job_finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_and_pages_without_duplicates() {
    let api = start(&fresh("list"), Options::default());
    let mut market_ids = Vec::new();
    for _ in 0..3 {
        market_ids.push(api.submit_and_wait(&market()).await["id"].as_str().unwrap().to_owned());
    }
    let review_id = api.post("/v1/jobs?wait=30", review()).await.json()["id"].as_str().unwrap().to_owned();
    api.poll(&review_id, "waiting").await;
    market_ids.reverse(); // newest first

    let all = api.list("").await;
    assert_eq!(ids(&all), [vec![review_id.clone()], market_ids.clone()].concat());
    assert!(all.get("next_cursor").is_none(), "{all}");
    let first = &all["jobs"][1];
    assert_eq!(first["status"], "converged");
    assert_eq!(first["context_hash"], MARKET_HASH);
    assert_eq!(first["cycles"], MARKET_CYCLES);
    assert_eq!(first["labels"]["example"], "market-entry");
    assert!(first["goal"].as_str().unwrap().contains("Nordic"));

    assert_eq!(ids(&api.list("?status=converged").await), market_ids);
    assert_eq!(ids(&api.list("?status=waiting").await), [review_id.as_str()]);
    assert_eq!(ids(&api.list("?status=cancelled").await), Vec::<String>::new());
    assert_eq!(ids(&api.list("?label=example=market-entry").await), market_ids);
    assert_eq!(ids(&api.list("?label=example=review&status=waiting").await), [review_id.as_str()]);
    assert_eq!(ids(&api.list("?label=example=nothing").await), Vec::<String>::new());

    // One at a time, through every job once.
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = api.list(&query).await;
        let got = ids(&page);
        assert!(got.len() <= 1, "{page}");
        seen.extend(got);
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) => query = format!("?limit=1&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 4, "the cursor loops: {seen:?}");
    }
    assert_eq!(seen, ids(&all));
    // Pages of two, with a filter.
    let page = api.list("?limit=2&status=converged").await;
    assert_eq!(ids(&page), market_ids[..2]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = api.list(&format!("?limit=2&status=converged&cursor={cursor}")).await;
    assert_eq!(ids(&rest), market_ids[2..]);
    assert!(rest.get("next_cursor").is_none());

    for bad in [
        "?status=bogus",
        "?status=",
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?cursor=abc",
        "?cursor=0",
        "?cursor=-5",
        "?label=novalue",
        "?bogus=1",
    ] {
        let r = api.get(&format!("/v1/jobs{bad}")).await;
        r.error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let m = api.get("/v1/jobs?status=bogus").await.error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("status"), "{m}");
    let m = api.get("/v1/jobs?limit=0").await.error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("limit"), "{m}");
    let m = api.get("/v1/jobs?cursor=abc").await.error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("cursor"), "{m}");
}

/// Parse a `text/event-stream` body into `(event, id, data)` records.
fn sse_records(text: &str) -> Vec<(String, u64, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            Some((event?, id?, data))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_events_record_every_cycle_and_one_end() {
    let api = start(&fresh("trace"), Options::default());
    let id = api.submit_and_wait(&market()).await["id"].as_str().unwrap().to_owned();

    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    assert_eq!(trace["id"], id.as_str());
    assert_eq!(trace["status"], "converged");
    assert_eq!(trace["attempts"], 1);
    assert_eq!(trace["components"].as_object().unwrap().len(), 8, "7 agents and 1 invariant: {}", trace["components"]);
    let cycles = trace["cycles"].as_array().unwrap();
    assert_eq!(cycles.len() as u64, MARKET_CYCLES);
    for (i, c) in cycles.iter().enumerate() {
        assert_eq!(c["cycle"], i as u64 + 1);
        let agents = c["agents"].as_array().unwrap();
        assert!(!agents.is_empty(), "{c}");
        for a in agents {
            assert!(a["fuel"].as_u64().is_some_and(|f| f > 0), "{a}");
            assert!(a.get("outcome").is_some(), "{a}");
            assert!(a["agent"].is_string(), "{a}");
        }
    }
    let events = trace["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "end").count(), 1, "{kinds:?}");
    assert_eq!(kinds.first(), Some(&"created"));
    assert_eq!(kinds.last(), Some(&"end"));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["data"]["context_hash"], MARKET_HASH);

    // An ended job's stream is its trail, closed after `end`.
    let r = api.get(&format!("/v1/jobs/{id}/events")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = r.text();
    assert!(text.contains("event: cycle"), "{text}");
    let records = sse_records(&text);
    assert_eq!(records.len(), events.len(), "{text}");
    assert_eq!(records.last().unwrap().0, "end", "{text}");
    assert_eq!(records.iter().filter(|r| r.0 == "cycle").count() as u64, MARKET_CYCLES);
    // Last-Event-ID resumes after it.
    let req = Request::get(format!("/v1/jobs/{id}/events")).header("last-event-id", "3").body(Body::empty()).unwrap();
    let rest = sse_records(&api.send(req).await.text());
    assert_eq!(rest.first().unwrap().1, 4);
    assert_eq!(rest.len(), events.len() - 3);

    // A live stream, opened before the job runs, sees each event once and ends with `end`.
    let id = api.submit(&market()).await;
    let r = api.get(&format!("/v1/jobs/{id}/events")).await;
    let records = sse_records(&r.text());
    let seqs: Vec<u64> = records.iter().map(|r| r.1).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>(), "{records:?}");
    let cycles: Vec<u64> = records
        .iter()
        .filter(|r| r.0 == "cycle")
        .map(|r| serde_json::from_str::<Value>(&r.2).unwrap()["cycle"].as_u64().unwrap())
        .collect();
    assert_eq!(cycles, (1..=MARKET_CYCLES).collect::<Vec<_>>());
    assert_eq!(records.last().unwrap().0, "end");
    assert_eq!(records.iter().filter(|r| r.0 == "end").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_report_metrics_status_and_the_api() {
    let api = start(&fresh("operations"), Options::default());
    api.submit_and_wait(&market()).await;

    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for name in [
        "converge_jobs{status=\"converged\"} 1",
        "converge_job_duration_seconds_bucket{le=\"+Inf\"} 1",
        "converge_job_duration_seconds_count 1",
        "converge_agent_calls_total{agent=\"market-signals\",outcome=\"applied\"}",
        "converge_agent_fuel_total{agent=\"market-signals\"}",
        "converge_tool_calls_total{tool=\"score\",outcome=\"ok\"} 3",
        "converge_tool_calls_total{tool=\"rank\",outcome=\"ok\"} 1",
        "converge_tool_fuel_total{tool=\"score\"}",
        "converge_queue_depth 0",
        "converge_running_jobs 0",
        "converge_workers 2",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }

    let status = api.get("/v1/status").await.json();
    assert_eq!(status["status"], "healthy", "{status}");
    assert_eq!(status["agents"], 7);
    assert_eq!(status["workers"], 2);
    assert_eq!(status["jobs_finished"], 1);
    assert!(status["slowest_agent"]["name"].is_string(), "{status}");

    let health = api.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let ready = api.get("/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);

    let agents = api.get("/v1/agents").await.json();
    let names: Vec<&str> = agents["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.contains(&"governance"));
    assert_eq!(agents["invariants"][0]["name"], "decision-consistency");

    let doc = api.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/trace", "get"),
        ("/v1/jobs/{id}/events", "get"),
        ("/v1/jobs/{id}/answers", "post"),
        ("/v1/jobs/{id}/cancel", "post"),
        ("/v1/agents", "get"),
        ("/v1/tools/validate", "post"),
        ("/v1/tools", "get"),
        ("/v1/tools/{id}", "get"),
        ("/v1/tools/{id}/review", "post"),
        ("/v1/status", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI paths"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["JobSpec", "JobResult", "ErrorBody", "SseEvent", "Manifest"] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // Without tokens nothing asks for one; query parameters are in the query; the agents a spec may name are
    // the ones loaded.
    assert!(doc.get("security").is_none() && doc["components"].get("securitySchemes").is_none(), "{doc}");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op.get("security").is_none() && op["responses"].get("401").is_none(), "{method} {path}");
        }
    }
    let list = &doc["paths"]["/v1/jobs"]["get"]["parameters"];
    assert!(list.as_array().unwrap().iter().all(|p| p["in"] == "query" && p["required"] == false), "{list}");
    let agents = &schemas["JobSpec"]["properties"]["agents"]["oneOf"][0]["items"]["enum"];
    assert_eq!(agents.as_array().unwrap().len(), 7, "{agents}");
    assert_eq!(schemas["JobSpec"]["properties"]["goal"]["minLength"], 1);
    // Every documented route answers something other than 404 from the router.
    for path in paths.keys() {
        let concrete = path.replace("{id}", "job_x");
        let r = api.get(&concrete).await;
        assert!(r.status != StatusCode::NOT_FOUND || r.json()["error"]["message"] != "no such route", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_agent_is_gone_at_its_start_fails_naming_it() {
    let dir = fresh("agent-gone");
    let api = start(&dir, Options { workers: 0, ..Options::default() });
    let id = api.submit(&market()).await;
    api.stop();
    std::fs::remove_file(dir.join("agents").join("report.wasm")).unwrap();
    let api = start(&dir, Options::default());
    let done = api.poll(&id, "agent_failed").await;
    assert_eq!(done["error"]["kind"], "unknown_agent", "{done}");
    assert!(done["error"]["message"].as_str().unwrap().contains("report"), "{done}");
    // New submissions naming it are refused up front.
    let m = api.post("/v1/jobs", market()).await.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert!(m.contains("report"), "{m}");
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    let kinds: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // A worker claimed it (its attempt is recorded), found the agent gone, and ended it.
    assert_eq!(kinds, ["created", "started", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_503_and_writes_nothing() {
    let api = start(&fresh("overload"), Options { workers: 0, queue: 2, ..Options::default() });
    let a = api.submit(&market()).await;
    let b = api.submit(&market()).await;
    for _ in 0..2 {
        let r = api.post("/v1/jobs", market()).await;
        let m = r.error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        assert!(m.contains("queue"), "{m}");
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry >= 1);
    }
    // Refused with a wait, too, and at once.
    let r = api.post("/v1/jobs?wait=30", market()).await;
    r.error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    // A bad spec is still a 422, not a 503.
    api.post("/v1/jobs", r#"{"goal": "x", "bogus": 1}"#).await.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert_eq!(ids(&api.list("").await), [b.clone(), a.clone()], "only the accepted jobs are stored");
    let metrics = api.get("/metrics").await.text();
    assert!(metrics.contains("converge_queue_depth 2"), "{metrics}");
    assert!(metrics.contains("converge_jobs{status=\"queued\"} 2"), "{metrics}");
    let status = api.get("/v1/status").await.json();
    assert_eq!(status["status"], "critical", "{status}");
    assert_eq!(status["queue_depth"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_job_survives_a_restart_and_converges() {
    let dir = fresh("restart");
    let api = start(&dir, Options { workers: 0, ..Options::default() });
    let id = api.submit(&market()).await;
    let waiting = api.post("/v1/jobs", review()).await.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(api.get(&format!("/v1/jobs/{id}")).await.json()["status"], "queued");
    api.stop();

    let api = start(&dir, Options::default());
    let done = api.poll(&id, "converged").await;
    assert_eq!(done["context_hash"], MARKET_HASH);
    assert_eq!(done["cycles"], MARKET_CYCLES);
    let v = api.poll(&waiting, "waiting").await;
    assert_eq!(v["open_questions"][0]["id"], REVIEW_QUESTION);
    let trace = api.get(&format!("/v1/jobs/{id}/trace")).await.json();
    assert_eq!(trace["attempts"], 1);
    let kinds: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "end").count(), 1);
    api.stop();

    // And a waiting job stays waiting across a restart, then resumes on its answer.
    let api = start(&dir, Options::default());
    assert_eq!(api.get(&format!("/v1/jobs/{waiting}")).await.json()["status"], "waiting");
    let answer = json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
    let r = api.post(&format!("/v1/jobs/{waiting}/answers"), answer).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let done = api.poll(&waiting, "converged").await;
    assert_eq!(done["context_hash"], REVIEW_HASH);
}

fn guest_bytes(name: &str) -> Vec<u8> {
    let (_, path) = converge_tests::GUESTS.iter().find(|(n, _)| *n == name).unwrap();
    std::fs::read(path).unwrap()
}

/// `tests` tests whose expectations any `ok` output meets.
fn manifest(name: &str, tests: usize) -> String {
    let tests: Vec<Value> =
        (0..tests).map(|i| json!({"name": format!("t{i}"), "input": "x", "expect": {"contains": ""}})).collect();
    json!({"name": name, "description": "", "tests": tests}).to_string()
}

impl Api {
    async fn validate_raw(&self, component: Vec<u8>, manifest: &str) -> Resp {
        let req = self
            .request(Method::POST, "/v1/tools/validate")
            .header(header::CONTENT_TYPE, "application/wasm")
            .header("converge-manifest", manifest)
            .body(Body::from(component))
            .unwrap();
        self.send(req).await
    }

    async fn validate_multipart(&self, parts: &[(&str, &[u8])]) -> Resp {
        let mut body = Vec::new();
        for (name, bytes) in parts {
            body.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        let req = self
            .request(Method::POST, "/v1/tools/validate")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// Run the `tool-caller` agent on one call; its `results/1` fact.
    async fn call_tool(&self, tool: &str, input: &str) -> String {
        let spec = json!({"goal": "call", "agents": ["tool-caller"],
            "facts": [{"key": "calls", "id": "1", "content": format!("{tool}\n{input}")}]});
        let result = self.submit_and_wait(&spec.to_string()).await;
        let facts = result["facts"].as_array().unwrap();
        let fact = facts.iter().find(|f| f["key"] == "results").unwrap_or_else(|| panic!("{result}"));
        fact["content"].as_str().unwrap().to_owned()
    }

    async fn tool(&self, name: &str) -> Value {
        let r = self.get("/v1/tools").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        v["tools"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap_or_else(|| panic!("{v}"))
    }
}

/// Replay job `id` over the store and agents of `dir` (what `converge replay ID` runs): its report, after checking
/// it found the run identical.
fn replay(dir: &Path, cache: &Path, id: &str) -> Value {
    let store = SqliteStore::open_existing(&dir.join("data")).unwrap();
    let sandbox =
        Arc::new(Sandbox::new(SandboxConfig { instances: 16, pooling: true, ..SandboxConfig::default() }).unwrap());
    let tools = Some(dir.join("agents").join("tools")).filter(|d| d.is_dir());
    let registry = Registry::new(sandbox, dir.join("agents"), Some(cache.to_path_buf())).with_tools(tools);
    let report = converge_runtime::replay::replay(&store, registry, id, &converge_engine::SerialExecutor, |_| {});
    store.close();
    let report = serde_json::to_value(report.unwrap()).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_submitted_over_http_is_validated_reviewed_and_stays_callable_after_a_restart() {
    let dir = fresh("tools");
    std::fs::write(dir.join("agents").join("tool-caller.wasm"), guest_bytes("tool-caller")).unwrap();
    let cache = dir.join("cache");
    let api = start(&dir, Options { cache: cache.clone(), ..Options::default() });
    assert!(api.call_tool("upper", "hi").await.starts_with("unknown:"));

    // Raw component, manifest in a header, three tests: accepted and callable at once.
    let r = api.validate_raw(guest_bytes("tool-upper"), &manifest("upper", 3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let upper = r.json();
    assert_eq!(upper["verdict"], "accepted", "{upper}");
    assert_eq!(api.call_tool("upper", "hi").await, "ok:HI");
    let listed = api.tool("upper").await;
    assert_eq!((listed["status"].as_str(), listed["callable"].as_bool()), (Some("accepted"), Some(true)));
    assert_eq!(listed["id"], upper["digest"]);
    // Its compiled code is kept, so a restart loads it instead of compiling it again.
    let cached = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path());
    let prefix = upper["digest"].as_str().unwrap();
    assert!(cached.into_iter().any(|p| {
        p.extension().is_some_and(|x| x == "cwasm") && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
    }));
    // The same submission again: the same record.
    let again = api.validate_raw(guest_bytes("tool-upper"), &manifest("upper", 3)).await.json();
    assert_eq!(again["digest"], upper["digest"]);

    // Multipart, two tests: needs review, not callable until approved.
    let clock = guest_bytes("tool-clock");
    let m = manifest("clock", 2);
    let r = api.validate_multipart(&[("manifest", m.as_bytes()), ("component", &clock)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let report = r.json();
    assert_eq!(report["verdict"], "needs_review", "{report}");
    let digest = report["digest"].as_str().unwrap().to_owned();
    assert!(api.call_tool("clock", "").await.starts_with("unknown:"));
    assert_eq!(api.tool("clock").await["callable"], false);

    // Reviews: bad id, unknown tool, bad body, a tool that is not pending.
    let review = |d: &str| json!({"decision": d, "reviewer": "ada", "comment": "read the source"}).to_string();
    api.post("/v1/tools/nope/review", review("approve")).await.error(StatusCode::NOT_FOUND, "not_found");
    let zeros = "0".repeat(64);
    api.post(&format!("/v1/tools/{zeros}/review"), review("approve")).await.error(StatusCode::NOT_FOUND, "not_found");
    let path = format!("/v1/tools/{digest}/review");
    let m = api
        .post(&path, r#"{"decision": "maybe", "reviewer": "ada"}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(m.contains("decision"), "{m}");
    let upper_review = format!("/v1/tools/{}/review", upper["digest"].as_str().unwrap());
    api.post(&upper_review, review("approve")).await.error(StatusCode::CONFLICT, "not_pending");
    // Approve: callable, with the decision in the trail; a second review is a conflict.
    let r = api.post(&path, review("approve")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!((v["status"].as_str(), v["callable"].as_bool()), (Some("accepted"), Some(true)), "{v}");
    assert_eq!(v["reviews"][0]["reviewer"], "ada");
    assert!(api.call_tool("clock", "").await.starts_with("ok:"));
    api.post(&path, review("reject")).await.error(StatusCode::CONFLICT, "not_pending");

    // Hostile bytes are a rejected report, not an error; malformed requests are errors naming the problem.
    let r = api.validate_raw(b"\0asm\x01\0\0\0".to_vec(), &manifest("core", 3)).await;
    assert_eq!(r.json()["verdict"], "rejected");
    assert!(r.json()["reasons"][0].as_str().unwrap().contains("core WebAssembly module"));
    let req = api
        .request(Method::POST, "/v1/tools/validate")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("x"))
        .unwrap();
    api.send(req).await.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let m = api
        .validate_multipart(&[("component", &clock)])
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(m.contains("manifest"), "{m}");
    let req = api
        .request(Method::POST, "/v1/tools/validate")
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from(clock.clone()))
        .unwrap();
    api.send(req).await.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let m = api
        .validate_raw(clock.clone(), r#"{"name": "clock", "tests": [], "oops": 1}"#)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(m.contains("oops"), "{m}");
    let r = api.get("/v1/tools").await.json();
    let sources: Vec<&str> = r["tools"].as_array().unwrap().iter().map(|t| t["source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        ["trusted", "trusted", "validated", "validated", "validated"],
        "score, rank; upper, clock, core: {r}"
    );
    api.stop();

    // A restart loads the accepted and the approved tools again.
    let api = start(&dir, Options { cache: cache.clone(), ..Options::default() });
    assert_eq!(api.call_tool("upper", "again").await, "ok:AGAIN");
    assert!(api.call_tool("clock", "").await.starts_with("ok:"));
    assert_eq!(api.tool("core").await["status"], "rejected");
    let calls = ["upper\nreplay me", "clock\n", "core\n"].iter().enumerate();
    let facts: Vec<Value> = calls.map(|(i, c)| json!({"key": "calls", "id": format!("{i}"), "content": c})).collect();
    let job =
        api.submit_and_wait(&json!({"goal": "call", "agents": ["tool-caller"], "facts": facts}).to_string()).await;
    api.stop();

    // `converge replay` calls the very tools the job called, from the store, and gets the same trail.
    let report = replay(&dir, &cache, job["id"].as_str().unwrap());
    assert_eq!((report["identical"].as_bool(), report["tool_calls"]["stored"].as_u64()), (Some(true), Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tool_is_not_callable_stays_revoked_and_its_jobs_still_replay() {
    let dir = fresh("tool-revoke");
    std::fs::write(dir.join("agents").join("tool-caller.wasm"), guest_bytes("tool-caller")).unwrap();
    let cache = dir.join("cache");
    let api = start(&dir, Options { cache: cache.clone(), ..Options::default() });
    let upper = api.validate_raw(guest_bytes("tool-upper"), &manifest("upper", 3)).await.json();
    assert_eq!(
        (upper["verdict"].as_str(), upper["status"].as_str(), upper["callable"].as_bool()),
        (Some("accepted"), Some("accepted"), Some(true)),
        "{upper}"
    );
    let spec = json!({"goal": "call", "agents": ["tool-caller"], "facts": [{"key": "calls", "id": "1", "content": "upper\nbefore"}]});
    let before = api.submit_and_wait(&spec.to_string()).await;

    let path = format!("/v1/tools/{}/review", upper["digest"].as_str().unwrap());
    let decide = |d: &str| json!({"decision": d, "reviewer": "ada", "comment": "it leaks"}).to_string();
    let r = api.post(&path, decide("revoke")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["callable"].as_bool(), v["reviews"][0]["decision"].as_str()),
        (Some("revoked"), Some(false), Some("revoke")),
        "{v}"
    );
    assert!(api.call_tool("upper", "after").await.starts_with("unknown:"));
    let m = api.post(&path, decide("revoke")).await.error(StatusCode::CONFLICT, "not_pending");
    assert!(m.contains("only an accepted tool can be revoked"), "{m}");
    api.post(&path, decide("approve")).await.error(StatusCode::CONFLICT, "not_pending");

    // Submitting it again, with the same manifest or another, does not undo the decision.
    for tests in [3, 4] {
        let again = api.validate_raw(guest_bytes("tool-upper"), &manifest("upper", tests)).await.json();
        assert_eq!(
            (again["verdict"].as_str(), again["status"].as_str(), again["callable"].as_bool()),
            (Some("accepted"), Some("revoked"), Some(false)),
            "{again}"
        );
    }
    assert!(api.call_tool("upper", "after").await.starts_with("unknown:"));
    api.stop();
    let api = start(&dir, Options { cache: cache.clone(), ..Options::default() });
    assert_eq!(api.tool("upper").await["status"], "revoked");
    assert!(api.call_tool("upper", "after a restart").await.starts_with("unknown:"));
    // Its history: every submission (what it changed) and the review, in order.
    let r = api.get(&format!("/v1/tools/{}", upper["digest"].as_str().unwrap())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let detail = r.json();
    assert_eq!((detail["name"].as_str(), detail["status"].as_str()), (Some("upper"), Some("revoked")), "{detail}");
    let history: Vec<(String, String)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["data"]["outcome"].as_str().unwrap_or("-").to_owned()))
        .collect();
    let expected =
        [("submitted", "new"), ("reviewed", "-"), ("submitted", "unchanged"), ("submitted", "kept_by_review")];
    assert_eq!(history, expected.map(|(k, o)| (k.to_owned(), o.to_owned())), "{detail}");
    assert_eq!(detail["history"][1]["data"]["reviewer"], "ada");
    assert_eq!(detail["history"][3]["data"]["status"], "revoked");
    api.get(&format!("/v1/tools/{}", "0".repeat(64))).await.error(StatusCode::NOT_FOUND, "not_found");
    api.get("/v1/tools/nope").await.error(StatusCode::NOT_FOUND, "not_found");
    api.stop();

    // The job that called it before still replays: a revoked tool's component stays in the store.
    let report = replay(&dir, &cache, before["id"].as_str().unwrap());
    assert_eq!((report["identical"].as_bool(), report["tool_calls"]["stored"].as_u64()), (Some(true), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_neither_see_nor_call_nor_review_each_others_tools() {
    let dir = fresh("tool-tenants");
    std::fs::write(dir.join("agents").join("tool-caller.wasm"), guest_bytes("tool-caller")).unwrap();
    let auth = Auth::parse("acme tok-acme-0123456789\nglobex tok-globex-0123456789").unwrap();
    let api = start(&dir, Options { http: HttpConfig { auth, ..HttpConfig::default() }, ..Options::default() });
    let (acme, globex) = (api.with_token("tok-acme-0123456789"), api.with_token("tok-globex-0123456789"));
    let validated = |v: Value| -> Vec<String> {
        let tools = v["tools"].as_array().unwrap().iter().filter(|t| t["source"] == "validated");
        tools.map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };

    // acme's accepted tool: acme's jobs call it; globex's jobs cannot, nor does globex see it.
    let upper = acme.validate_raw(guest_bytes("tool-upper"), &manifest("upper", 3)).await.json();
    assert_eq!(upper["verdict"], "accepted", "{upper}");
    assert_eq!(acme.call_tool("upper", "hi").await, "ok:HI");
    assert!(globex.call_tool("upper", "hi").await.starts_with("unknown:"));
    assert_eq!(validated(globex.get("/v1/tools").await.json()), Vec::<String>::new());
    assert_eq!(validated(acme.get("/v1/tools").await.json()), ["upper"]);
    let one = format!("/v1/tools/{}", upper["digest"].as_str().unwrap());
    globex.get(&one).await.error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(acme.get(&one).await.json()["history"][0]["data"]["verdict"], "accepted");
    // A trusted tool is everyone's, with no history.
    let score = globex.tool("score").await;
    let r = globex.get(&format!("/v1/tools/{}", score["id"].as_str().unwrap())).await.json();
    assert_eq!((r["source"].as_str(), r["history"].as_array().map(Vec::len)), (Some("trusted"), Some(0)), "{r}");

    // acme's tool that waits for a review: globex cannot approve it (not found), acme can.
    let clock = acme.validate_raw(guest_bytes("tool-clock"), &manifest("clock", 2)).await.json();
    assert_eq!(clock["verdict"], "needs_review", "{clock}");
    let path = format!("/v1/tools/{}/review", clock["digest"].as_str().unwrap());
    let approve = json!({"decision": "approve", "reviewer": "mallory"}).to_string();
    globex.post(&path, approve.clone()).await.error(StatusCode::NOT_FOUND, "not_found");
    assert!(globex.call_tool("clock", "").await.starts_with("unknown:"));
    let r = acme.post(&path, approve).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(acme.call_tool("clock", "").await.starts_with("ok:"));
    assert!(globex.call_tool("clock", "").await.starts_with("unknown:"));

    // The same bytes from globex are globex's own record and tool; acme's stays acme's.
    let mine = globex.validate_raw(guest_bytes("tool-upper"), &manifest("upper", 3)).await.json();
    assert_eq!((mine["verdict"].as_str(), mine["digest"].as_str()), (Some("accepted"), upper["digest"].as_str()));
    assert_eq!(globex.call_tool("upper", "yo").await, "ok:YO");
    assert_eq!(acme.tool("upper").await["tenant"], "acme");
    assert_eq!(globex.tool("upper").await["tenant"], "globex");
    assert_eq!(validated(globex.get("/v1/tools").await.json()), ["upper"]);
    api.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_beyond_the_line_get_503_before_their_body_is_read() {
    let api = start(&fresh("validation-line"), Options { validations_waiting: 0, ..Options::default() });
    // One submission whose body has not finished arriving holds the only place.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let slow = api
        .request(Method::POST, "/v1/tools/validate")
        .header(header::CONTENT_TYPE, "application/wasm")
        .header("converge-manifest", manifest("upper", 3))
        .body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .unwrap();
    let held = tokio::spawn({
        let app = api.app.clone();
        async move { app.oneshot(slow).await }
    });
    // The channel holds one chunk: once the second is accepted, the handler has read the first, so it holds
    // the place.
    let bytes = guest_bytes("tool-upper");
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    tx.send(Ok(Bytes::copy_from_slice(first))).await.unwrap();
    tx.send(Ok(Bytes::copy_from_slice(rest))).await.unwrap();
    let r = api.validate_raw(b"garbage".to_vec(), &manifest("garbage", 3)).await;
    let m = r.error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(m.contains("line of tool validations is full (1 running or waiting)"), "{m}");
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    // The held one finishes; the place is free again.
    drop(tx);
    let done = held.await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let r = api.validate_raw(b"garbage".to_vec(), &manifest("garbage", 3)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["verdict"], "rejected");
    api.stop();
}
