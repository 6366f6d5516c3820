//! `/openapi.json` as the running server answers (SPEC §8): the document `utoipa` derives from the handlers,
//! then made exact where a derive cannot see the rule — authentication only where and when it is required,
//! the bounds and patterns the handlers and `JobSpec::validate` check, the agents and invariants loaded now,
//! the event stream's records, binary bodies. A schema-driven fuzzer (schemathesis, run by CI in both modes)
//! holds the server to it.
//!
//! Two rules cannot be written in JSON Schema and are stated in the descriptions instead: limits counted in
//! bytes are declared as the same number of characters (exact for ASCII), and a fact's content is bounded by
//! the same spec's `budget.max_fact_bytes`, its count by `budget.max_facts`.

use serde_json::{Map, Value, json};

/// What the document depends on besides the routes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// Bearer tokens are required on `/v1/`.
    pub(crate) auth: bool,
    /// Names of the agents loaded now.
    pub(crate) agents: Vec<String>,
    /// Names of the invariants loaded now.
    pub(crate) invariants: Vec<String>,
}

/// Rust's `char::is_whitespace` (Unicode `White_Space`), which `str::trim` removes, as a regex class.
const WHITE_SPACE: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A string with at least one character `str::trim` keeps, of at most `max` characters.
fn not_blank(max: u64, description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": max,
        "pattern": format!("[^{WHITE_SPACE}]"), "description": description,
    })
}

/// The finished document, as JSON.
pub(crate) fn document(api: &utoipa::openapi::OpenApi, facts: &Facts) -> String {
    let mut doc = serde_json::to_value(api).unwrap_or(Value::Null);
    finish(&mut doc, facts);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn finish(doc: &mut Value, facts: &Facts) {
    let Some(root) = doc.as_object_mut() else { return };
    root.remove("security");
    if facts.auth {
        let components = root.entry("components").or_insert_with(|| json!({}));
        components["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    } else if let Some(c) = root.get_mut("components").and_then(Value::as_object_mut) {
        c.remove("securitySchemes");
    }
    if let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, op) in item.iter_mut() {
                operation(path, method, op, facts.auth);
            }
        }
    }
    if let Some(schemas) = root.get_mut("components").and_then(|c| c.get_mut("schemas")).and_then(Value::as_object_mut)
    {
        schemas_exact(schemas, facts);
    }
}

/// Authentication, parameters and bodies of one operation.
fn operation(path: &str, method: &str, op: &mut Value, auth: bool) {
    let guarded = auth && path.starts_with("/v1/");
    if let Some(o) = op.as_object_mut() {
        if guarded {
            o.insert("security".into(), json!([{"bearer": []}]));
        } else {
            o.remove("security");
        }
    }
    if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
        if guarded {
            responses.entry("401").or_insert_with(|| error_response("No token, or not a valid one"));
        } else {
            responses.remove("401");
        }
        if op_takes_json(path, method) {
            responses.entry("400").or_insert_with(|| error_response("The body is not JSON"));
            responses.entry("413").or_insert_with(|| error_response("The body is too large"));
            responses.entry("415").or_insert_with(|| error_response("The body is not application/json"));
        }
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            parameter(p);
        }
    }
    match (path, method) {
        ("/v1/jobs/{id}/events", "get") => events(op),
        ("/v1/tools/validate", "post") => validate_body(op),
        _ => {}
    }
}

fn op_takes_json(path: &str, method: &str) -> bool {
    method == "post" && matches!(path, "/v1/jobs" | "/v1/jobs/{id}/answers" | "/v1/tools/{id}/review")
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// The bounds the handlers check on each parameter.
fn parameter(p: &mut Value) {
    let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let schema = match name.as_str() {
        // Visible ASCII and inner spaces (HTTP strips a header's outer spaces).
        "Idempotency-Key" => {
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"})
        }
        "status" => json!({"$ref": "#/components/schemas/Status"}),
        "label" => json!({"type": "string", "pattern": "=", "description": "`key=value`"}),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
        "cursor" => json!({"type": "string", "pattern": "^[1-9][0-9]{0,17}$"}),
        "wait" => {
            json!({"type": "number", "minimum": 0, "description": "Seconds; at most the server's --max-wait is waited"})
        }
        _ => return,
    };
    p["schema"] = schema;
}

/// The event stream: `text/event-stream`, whose schema is that of one event (as schemathesis and OpenAPI
/// 3.2's `itemSchema` read it).
fn events(op: &mut Value) {
    if let Some(ok) = op.get_mut("responses").and_then(|r| r.get_mut("200")) {
        ok["content"] = json!({"text/event-stream": {"schema": {"$ref": "#/components/schemas/SseEvent"}}});
        ok["description"] = json!("Server-sent events, live until the job ends; resume with `Last-Event-ID`");
    }
    let params = op.get_mut("parameters").and_then(Value::as_array_mut);
    if let Some(params) = params {
        params.push(json!({
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "The `id` of the last event received: the stream starts after it",
            "schema": {"type": "string"},
        }));
    }
}

/// `POST /v1/tools/validate`: the component as `application/wasm`, its manifest (JSON) in the
/// `Converge-Manifest` header. The handler also takes `multipart/form-data` with the parts `manifest` and
/// `component` and then no header; the document describes the first form only, because OpenAPI cannot say
/// that a header is required with one media type and not with another (and a fuzzer would rightly hold
/// either half-truth against the server).
fn validate_body(op: &mut Value) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut().filter(|p| p["name"] == "Converge-Manifest") {
            if let Some(p) = p.as_object_mut() {
                p.remove("schema");
            }
            p["required"] = json!(true);
            p["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Manifest"}}});
            p["description"] = json!("The manifest, as JSON");
        }
    }
    op["requestBody"] = json!({
        "required": true,
        "description": "The component. (`multipart/form-data` with the parts `manifest` and `component`, and no \
                        header, is accepted too.)",
        "content": {
            "application/wasm": {"schema": {"type": "string", "format": "binary", "contentMediaType": "application/wasm"}},
        },
    });
}

fn set(schemas: &mut Map<String, Value>, schema: &str, property: &str, value: Value) {
    if let Some(props) = schemas.get_mut(schema).and_then(|s| s.get_mut("properties")).and_then(Value::as_object_mut) {
        props.insert(property.to_owned(), value);
    }
}

/// Enumerations of what is loaded, or an array that must be empty when nothing is.
fn names_of(loaded: &[String], description: &str) -> Value {
    let item = if loaded.is_empty() { json!({"not": {}}) } else { json!({"type": "string", "enum": loaded}) };
    json!({"type": "array", "items": item, "uniqueItems": true, "description": description})
}

fn schemas_exact(schemas: &mut Map<String, Value>, facts: &Facts) {
    let name_key = json!({
        "type": "string", "pattern": "^[a-z0-9._/-]{1,128}$",
        "not": {"pattern": "^(diagnostics|answers)(/|$)"},
        "description": "1-128 characters of [a-z0-9._/-]; `diagnostics` and `answers` (and below) are reserved",
    });
    let fact_id = json!({
        "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        "description": "1-256 bytes without control characters",
    });
    set(schemas, "JobSpec", "goal", not_blank(65_536, "What the job is for: not blank, at most 65,536 bytes"));
    let agents = names_of(&facts.agents, "Agents to run, by name (loaded now); absent or null: every loaded agent");
    set(schemas, "JobSpec", "agents", json!({"oneOf": [agents, {"type": "null"}]}));
    set(schemas, "JobSpec", "invariants", names_of(&facts.invariants, "Invariants to check, by name (loaded now)"));
    set(
        schemas,
        "JobSpec",
        "labels",
        json!({
            "type": "object", "maxProperties": 64,
            "propertyNames": {"pattern": "^[a-z0-9._/-]{1,63}$"},
            "additionalProperties": {"type": "string", "maxLength": 256},
            "description": "Free-form labels for the client: up to 64, names of [a-z0-9._/-], values up to 256 bytes",
        }),
    );
    set(
        schemas,
        "JobSpec",
        "facts",
        json!({
            "type": "array", "items": {"$ref": "#/components/schemas/Fact"},
            "description": "Seed facts: at most budget.max_facts, each content at most budget.max_fact_bytes, \
                            one content per (key, id)",
        }),
    );
    if let Some(spec) = schemas.get_mut("JobSpec").and_then(Value::as_object_mut) {
        spec.insert("additionalProperties".into(), json!(false));
    }
    set(schemas, "Fact", "key", name_key);
    set(schemas, "Fact", "id", fact_id.clone());
    for (field, lo, hi) in [
        ("max_cycles", 1_u64, 100_000_u64),
        ("max_facts", 1, 10_000_000),
        ("max_fact_bytes", 1, 16 * 1024 * 1024),
        ("fuel_per_call", 1, 1_000_000_000_000),
        ("memory_mb", 1, 4096),
        ("call_timeout_ms", 1, 600_000),
        ("job_timeout_ms", 1, 86_400_000),
    ] {
        if let Some(p) = schemas.get_mut("Budget").and_then(|s| s.pointer_mut(&format!("/properties/{field}"))) {
            p["minimum"] = json!(lo);
            p["maximum"] = json!(hi);
        }
    }
    if let Some(budget) = schemas.get_mut("Budget").and_then(Value::as_object_mut) {
        budget.insert("additionalProperties".into(), json!(false));
        budget.remove("required");
    }
    set(schemas, "AnswerBody", "question", fact_id);
    manifest(schemas);
    set(schemas, "ReviewBody", "reviewer", not_blank(128, "Who decides: not blank, at most 128 bytes"));
    set(schemas, "ReviewBody", "comment", json!({"type": "string", "maxLength": 4096, "default": ""}));
    schemas.insert(
        "SseEvent".into(),
        json!({
            "type": "object", "required": ["event", "id", "data"],
            "description": "One record of `GET /v1/jobs/{id}/events`",
            "properties": {
                "event": {"type": "string", "description": "The event kind (`started`, `cycle`, `question`, `answer`, `end`, ...)"},
                "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's sequence number in the job"},
                "data": {"type": "string", "contentMediaType": "application/json", "description": "The event as JSON, as in the trace"},
            },
        }),
    );
}

/// The rules `Manifest::check` applies.
fn manifest(schemas: &mut Map<String, Value>) {
    let component_name = json!({
        "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$", "not": {"enum": ["seed", "human", "engine"]},
        "description": "1-64 characters of [a-z0-9_-] starting with a letter or digit; not seed, human or engine",
    });
    set(schemas, "Manifest", "name", component_name);
    set(schemas, "Manifest", "description", json!({"type": "string", "maxLength": 4096, "default": ""}));
    set(
        schemas,
        "Manifest",
        "tests",
        json!({"type": "array", "maxItems": 64, "items": {"$ref": "#/components/schemas/TestCase"},
               "description": "At most 64, their names unique"}),
    );
    set(
        schemas,
        "Manifest",
        "requested",
        json!({"type": "array", "maxItems": 32, "items": {"type": "string", "minLength": 1, "maxLength": 128}, "default": []}),
    );
    set(schemas, "TestCase", "name", json!({"type": "string", "minLength": 1, "maxLength": 128}));
    set(schemas, "TestCase", "input", json!({"type": "string", "maxLength": 1_048_576}));
    set(
        schemas,
        "TestCase",
        "expect",
        json!({"oneOf": [
            {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "string"}}, "additionalProperties": false},
            {"type": "object", "required": ["contains"], "properties": {"contains": {"type": "string"}}, "additionalProperties": false},
            {"type": "object", "required": ["error"], "properties": {"error": {"const": true}}, "additionalProperties": false},
        ]}),
    );
    for (field, most) in [("fuel", 1_000_000_000_000_u64), ("memory_mb", 1024), ("timeout_ms", 60_000)] {
        if let Some(p) = schemas.get_mut("ToolLimits").and_then(|s| s.pointer_mut(&format!("/properties/{field}"))) {
            p["minimum"] = json!(1);
            p["maximum"] = json!(most);
        }
    }
    for name in ["Manifest", "TestCase", "ToolLimits"] {
        if let Some(s) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            s.insert("additionalProperties".into(), json!(false));
        }
    }
}
