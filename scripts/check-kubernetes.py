"""Validates deploy/kubernetes against the Kubernetes API schemas that the
`kubernetes-validate` package (PyPI) carries, for the oldest Kubernetes
version we support, and checks what the schemas cannot: every resource the
kustomization lists exists, probes point at the hub's and worker's real
health routes, and every Secret/ConfigMap a pod reads is defined here.
Usage: python scripts/check-kubernetes.py [DIR]"""

import sys
from pathlib import Path

import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"
DIR = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/kubernetes")

kust = yaml.safe_load((DIR / "kustomization.yaml").read_text())
docs = []
for name in kust["resources"]:
    for doc in yaml.safe_load_all((DIR / name).read_text()):
        if doc:
            docs.append((name, doc))

failures = []
for name, doc in docs:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        failures.append(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")

defined = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
routes = {"hub": {"/healthz", "/readyz"}, "worker": {"/health"}}
for name, doc in docs:
    spec = doc.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    for c in spec["containers"]:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            path = c.get(probe, {}).get("httpGet", {}).get("path")
            if path and path not in routes.get(c["name"], set()):
                failures.append(f"{name}: {c['name']} {probe} {path} is not a health route")
        refs = [("ConfigMap", e["configMapRef"]["name"]) for e in c.get("envFrom", []) if "configMapRef" in e]
        refs += [("Secret", e["secretRef"]["name"]) for e in c.get("envFrom", []) if "secretRef" in e]
        refs += [
            ("Secret", e["valueFrom"]["secretKeyRef"]["name"])
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        ]
        for ref in refs:
            if ref not in defined:
                failures.append(f"{name}: {c['name']} reads {ref[0]} {ref[1]}, defined nowhere")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"kubernetes: {len(docs)} resources valid for Kubernetes {K8S_VERSION}")
