"""Render and check deploy/kubernetes: see scripts/check-kubernetes."""

import json
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"  # the oldest Kubernetes the manifests must apply to
KEDA = json.loads((DEPLOY / "schemas" / "keda.json").read_text())


def render(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{path.relative_to(ROOT)}: kubectl kustomize failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(doc):
    """Errors of one resource against its schema: Kubernetes' own, or KEDA's."""
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        kind = doc.get("kind")
        if kind not in KEDA["$defs"]:
            return [f"no schema for KEDA's {kind}"]
        v = jsonschema.Draft202012Validator({**KEDA, "$ref": f"#/$defs/{kind}"})
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)][:5]
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema: {e}"]
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.path))}: {e.message}"]
    return []


def rules(docs):
    """What the manifests must keep, beyond their schemas."""
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "converge"]
    if len(deployments) != 1:
        return ["exactly one Deployment `converge`"]
    dep = deployments[0]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "converge"]
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"].startswith("converge"):
            config.update(cm.get("data", {}))
    if spec.get("replicas", 1) < 2:
        errors.append("the Deployment runs at least 2 replicas")
    drain = int(config.get("CONVERGE_DRAIN_MS", "20000"))
    grace = pod.get("terminationGracePeriodSeconds", 30) * 1000
    if grace < drain + 10_000:
        errors.append(f"terminationGracePeriodSeconds ({grace} ms) exceeds the drain ({drain} ms) by 10 s at least")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
        errors.append("the readiness probe is /ready")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
        errors.append("the liveness probe is /health (it never touches the store)")
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
        errors.append("the container runs with a read-only root file system and no privilege escalation")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        errors.append("the container drops every capability")
    if not (psc.get("runAsNonRoot") and psc.get("runAsUser", 0) != 0):
        errors.append("the pod runs as a non-root user")
    if not any(m["mountPath"] == "/data" for m in c.get("volumeMounts", [])):
        errors.append("/data is a writable volume")
    if "resources" not in c or "requests" not in c["resources"] or "memory" not in c["resources"].get("limits", {}):
        errors.append("the container requests resources and limits its memory")
    env = {e["name"]: e for e in c.get("env", [])}
    if "secretKeyRef" not in env.get("CONVERGE_STORE", {}).get("valueFrom", {}):
        errors.append("CONVERGE_STORE comes from a Secret")
    if not any(a.startswith("--token-file=") for a in c.get("args", [])):
        errors.append("the server reads its tokens from a file (a mounted Secret)")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        if not by_kind.get(kind):
            errors.append(f"a {kind}")
    for so in by_kind.get("ScaledObject", []):
        if so["spec"].get("minReplicaCount", 0) < 2:
            errors.append("KEDA never scales below 2 replicas")
        if so["spec"]["scaleTargetRef"]["name"] != "converge":
            errors.append("KEDA scales the converge Deployment")
    return errors


def main():
    targets = [DEPLOY / "base"] + sorted(p for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
    failed = False
    for target in targets:
        name = target.relative_to(ROOT)
        docs = render(target)
        problems = []
        for doc in docs:
            for e in validate(doc):
                problems.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {e}")
        problems += rules(docs)
        kinds = sorted({d["kind"] for d in docs})
        if problems:
            failed = True
            print(f"FAIL {name}", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
        else:
            print(f"ok   {name}: {len(docs)} resources ({', '.join(kinds)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
