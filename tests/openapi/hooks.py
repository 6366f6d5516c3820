"""Schemathesis hooks for scripts/check-openapi.

- How to put an `application/wasm` body on the wire: as the bytes it is, like `application/octet-stream`.
- The rules of a request that JSON Schema cannot state, and that the document states in words (see
  host/http/src/openapi.rs): in a job spec, at most `budget.max_facts` seed facts, each content at most
  `budget.max_fact_bytes` bytes, one content per (key, id); in a tool manifest, unique test names. A case
  generated as valid (positive) is made to keep them, so "schema-valid" means what the server accepts. Cases
  generated to be invalid are left as they are, and no check is relaxed.
"""

import json
from collections.abc import MutableMapping

import schemathesis
from schemathesis import GenerationMode

schemathesis.serializer.alias("application/wasm", "application/octet-stream")


def _job_spec(spec):
    budget = spec.get("budget") if isinstance(spec.get("budget"), dict) else {}
    facts = spec.get("facts")
    if not isinstance(facts, list):
        return
    max_bytes = budget.get("max_fact_bytes", 65536)
    max_facts = budget.get("max_facts", 10000)
    seen = {}
    kept = []
    for fact in facts:
        if not isinstance(fact, dict):
            kept.append(fact)
            continue
        content = fact.get("content")
        if isinstance(content, str) and isinstance(max_bytes, (int, float)):
            raw = content.encode("utf-8", "surrogatepass")
            if len(raw) > max_bytes:
                fact["content"] = raw[: int(max_bytes)].decode("utf-8", "ignore")
        key = (fact.get("key"), fact.get("id"))
        if key in seen:
            fact["content"] = seen[key]
        else:
            seen[key] = fact.get("content")
        kept.append(fact)
    if isinstance(max_facts, (int, float)):
        kept = kept[: int(max_facts)]
    spec["facts"] = kept


def _manifest(manifest):
    tests = manifest.get("tests") if isinstance(manifest, dict) else None
    if not isinstance(tests, list):
        return
    names = set()
    for i, test in enumerate(tests):
        if isinstance(test, dict) and isinstance(test.get("name"), str):
            name = test["name"]
            while name in names:
                name = f"{i}-{name}"[:128]
            test["name"] = name
            names.add(name)


@schemathesis.hook
def before_call(context, case, kwargs):
    # Every phase calls this just before sending (the coverage phase does not run `map_case`).
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    path, method = case.operation.path, case.operation.method.lower()
    if (path, method) == ("/v1/jobs", "post") and isinstance(case.body, MutableMapping):
        _job_spec(case.body)
    if (path, method) == ("/v1/tools/validate", "post"):
        for headers in (case.headers,):
            manifest = headers.get("Converge-Manifest") if isinstance(headers, MutableMapping) else None
            try:
                parsed = json.loads(manifest) if isinstance(manifest, str) else None
            except ValueError:
                continue
            if isinstance(parsed, dict):
                _manifest(parsed)
                headers["Converge-Manifest"] = json.dumps(parsed)
