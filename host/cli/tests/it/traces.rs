//! OpenTelemetry (SPEC §8): `converge serve` exports its spans over OTLP/HTTP to a collector, here a fake one
//! in this process that decodes what arrives as the OTLP protobuf it must be. A `traceparent` given at
//! submission makes every run of the job a child of the caller's span, also a run in another process after a
//! restart; `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` send nothing.

use crate::common::{self, REVIEW_ANSWER, REVIEW_HASH, REVIEW_QUESTION, example};
use crate::serve::{PATIENCE, Server, request};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    id: String,
    parent: String,
    attributes: BTreeMap<String, Value>,
    /// The resource's `service.name`.
    service: String,
    /// 2 is `STATUS_CODE_ERROR`.
    status: i32,
}

impl Span {
    fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

/// A fake OTLP/HTTP collector: answers `POST /v1/traces` as a collector does, keeps every span.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&spans), Arc::clone(&requests));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (s, r) = (Arc::clone(&s), Arc::clone(&r));
                std::thread::spawn(move || serve(conn, &s, &r));
            }
        });
        Self { endpoint, spans, requests }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of job `id`, once some with `name` have arrived.
    fn wait_for(&self, id: &str, name: &str, count: usize) -> Vec<Span> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mine: Vec<Span> =
                self.spans().into_iter().filter(|s| s.attr("converge.job_id").as_str() == Some(id)).collect();
            if mine.iter().filter(|s| s.name == name).count() >= count {
                return mine;
            }
            assert!(Instant::now() < deadline, "{count} {name} spans of {id} never arrived; got {mine:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Requests on one connection (the exporter keeps it alive), each answered as a collector does.
fn serve(conn: TcpStream, spans: &Mutex<Vec<Span>>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim_end().to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let len: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        requests.lock().unwrap().push(format!("{request_line} {content_type}"));
        let (status, reply) =
            if request_line.starts_with("POST /v1/traces ") && content_type == "application/x-protobuf" {
                match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(export) => {
                        spans.lock().unwrap().extend(flatten(&export));
                        ("200 OK", ExportTraceServiceResponse::default().encode_to_vec())
                    }
                    Err(_) => ("400 Bad Request", Vec::new()),
                }
            } else {
                ("404 Not Found", Vec::new())
            };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&reply)).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn value(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        other => json!(format!("{other:?}")),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter().map(|kv| (kv.key.clone(), value(kv.value.as_ref()))).collect()
}

fn flatten(export: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &export.resource_spans {
        let resource = attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        let service = resource.get("service.name").and_then(Value::as_str).unwrap_or_default().to_owned();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(Span {
                    name: s.name.clone(),
                    trace_id: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    attributes: attributes(&s.attributes),
                    service: service.clone(),
                    status: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    out
}

fn exporting(collector: &Collector, more: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
        ("OTEL_SERVICE_NAME", "converge-under-test".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    env.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

fn submit(server: &Server, spec: &str, traceparent: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = traceparent.map(|t| ("traceparent", t)).into_iter().collect();
    let r = request(&server.addr, "POST", "/v1/jobs?wait=30", &headers, Some(spec)).unwrap();
    assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn stop(mut server: Server) {
    server.signal("-TERM");
    assert!(server.wait().success(), "{}", server.log());
}

/// Checks the tree of one run: a `job` span, its cycles, their agent calls, merges and tool calls (the
/// evaluator's `score` among them), all in one trace.
fn check_run(spans: &[Span], job_span: &Span, trace: &str) {
    let children = |of: &Span, name: &str| -> Vec<Span> {
        spans.iter().filter(|s| s.parent == of.id && s.name == name).cloned().collect()
    };
    let cycles = children(job_span, "cycle");
    assert!(!cycles.is_empty(), "no cycle under {job_span:?}");
    let mut numbers: Vec<i64> =
        cycles.iter().map(|c| c.attr("converge.cycle").as_i64().unwrap_or_else(|| panic!("{c:?}"))).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=i64::try_from(numbers.len()).unwrap()).collect::<Vec<_>>(), "cycles 1, 2, ...");
    let mut tools = std::collections::BTreeSet::new();
    for cycle in &cycles {
        assert_eq!(cycle.trace_id, trace);
        let agents = children(cycle, "agent");
        assert_eq!(
            agents.len(),
            usize::try_from(cycle.attr("converge.eligible").as_i64().unwrap()).unwrap(),
            "one agent span per eligible agent: {cycle:?}"
        );
        assert_eq!(children(cycle, "merge").len(), 1, "one merge per cycle");
        for agent in &agents {
            assert_eq!(agent.trace_id, trace);
            assert_eq!(agent.attr("converge.cycle"), cycle.attr("converge.cycle"));
            assert!(agent.attr("converge.agent").as_str().is_some_and(|a| !a.is_empty()), "{agent:?}");
            assert!(agent.attr("converge.fuel").as_i64().unwrap() > 0, "a sandboxed call burns fuel: {agent:?}");
            assert_eq!(agent.attr("converge.outcome"), "ok", "{agent:?}");
            for tool in children(agent, "tool") {
                assert_eq!(tool.attr("converge.outcome"), "ok", "{tool:?}");
                tools.insert(tool.attr("converge.tool").as_str().unwrap().to_owned());
                assert_eq!(tool.attr("converge.agent"), agent.attr("converge.agent"));
                assert!(tool.attr("converge.fuel").as_i64().unwrap() > 0);
            }
        }
    }
    assert!(tools.contains("score"), "the evaluator's score calls are traced: {tools:?}");
}

#[test]
fn a_traced_job_continues_the_callers_trace_in_every_run_even_after_a_restart() {
    let collector = Collector::start();
    let dir = common::test_dir("traces", "follows");
    let env = exporting(&collector, &[]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    // The job runs until it asks its question; the process stops (the last batch is sent at shutdown).
    let server = Server::start_with(&dir, &[], &env);
    let id = submit(&server, &example("review.json"), Some(&traceparent));
    let waiting = server.get(&format!("/v1/jobs/{id}")).json();
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    stop(server);
    let first = collector.wait_for(&id, "job", 1);

    // Another process answers and runs it to the end: its run is in the caller's trace too.
    let server = Server::start_with(&dir, &[], &env);
    let answer = json!({"question": REVIEW_QUESTION, "answer": REVIEW_ANSWER}).to_string();
    let r = server.post(&format!("/v1/jobs/{id}/answers"), &answer);
    assert_eq!(r.status, 202, "{}", r.text());
    let done = server.settle(std::slice::from_ref(&id));
    assert_eq!(done[&id]["status"], "converged", "{}", done[&id]);
    // A job without a traceparent starts a trace of its own.
    let untraced = submit(&server, &example("market-entry.json"), None);
    let result = server.get(&format!("/v1/jobs/{id}")).text();
    stop(server);

    // The trace is nowhere in what the job is: its result and hash are those of an untraced run.
    assert!(!result.contains(TRACE_ID) && !result.contains(PARENT_ID), "{result}");
    assert_eq!(serde_json::from_str::<Value>(&result).unwrap()["context_hash"], REVIEW_HASH);

    let spans = collector.wait_for(&id, "job", 2);
    assert!(first.iter().all(|s| spans.iter().any(|t| t.id == s.id)));
    let jobs: Vec<&Span> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(jobs.len(), 2, "one job span per run: {jobs:#?}");
    for job in &jobs {
        assert_eq!((job.trace_id.as_str(), job.parent.as_str()), (TRACE_ID, PARENT_ID), "{job:?}");
        assert_eq!(job.service, "converge-under-test");
        check_run(&spans, job, TRACE_ID);
    }
    let outcomes: Vec<&Value> = jobs.iter().map(|j| j.attr("converge.outcome")).collect();
    assert!(outcomes.contains(&&json!("waiting")) && outcomes.contains(&&json!("converged")), "{outcomes:?}");
    assert!(spans.iter().all(|s| s.trace_id == TRACE_ID && s.status != 2), "one trace, no error");

    let other = collector.wait_for(&untraced, "job", 1);
    let root = other.iter().find(|s| s.name == "job").unwrap();
    assert!(root.parent.is_empty() && root.trace_id != TRACE_ID, "{root:?}");
    check_run(&other, root, &root.trace_id);
    let requests = collector.requests.lock().unwrap().clone();
    assert!(requests.iter().all(|r| r == "POST /v1/traces HTTP/1.1 application/x-protobuf"), "{requests:?}");
}

#[test]
fn nothing_is_exported_when_the_sdk_is_disabled_or_the_exporter_is_none() {
    for (name, off) in [("disabled", ("OTEL_SDK_DISABLED", "true")), ("none", ("OTEL_TRACES_EXPORTER", "none"))] {
        let collector = Collector::start();
        let dir = common::test_dir("traces", name);
        let server = Server::start_with(&dir, &[], &exporting(&collector, &[off]));
        let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        let id = submit(&server, &example("market-entry.json"), Some(&traceparent));
        assert_eq!(server.get(&format!("/v1/jobs/{id}")).json()["status"], "converged");
        stop(server);
        // The exporter, were it on, would have sent at shutdown at the latest.
        std::thread::sleep(Duration::from_millis(300));
        assert!(collector.requests.lock().unwrap().is_empty(), "{name}: {:?}", collector.requests);
    }
}

#[test]
fn an_exporter_this_build_does_not_have_is_refused_at_start() {
    let dir = common::test_dir("traces", "refused");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .arg("serve")
        .args(["--data", dir.join("data").to_str().unwrap()])
        .args(["--agents", dir.join("agents").to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"), "{stderr}");
}
