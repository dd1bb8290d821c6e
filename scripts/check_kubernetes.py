#!/usr/bin/env python3
"""Checks of the Kubernetes manifests that schema validation cannot make.

- No service account token is mounted: the operator never calls the Kubernetes API, and
  IRSA and EKS Pod Identity mount tokens of their own (projected volumes with the
  sts.amazonaws.com / pods.eks.amazonaws.com audiences), whatever this setting says (EKS
  User Guide, "IAM roles for service accounts" and "EKS Pod Identity"; EKS Best Practices
  Guide, Security, "Disable auto-mounting of service account tokens"). Both the pod spec
  and the ServiceAccount say `automountServiceAccountToken: false`.
- The prometheus-operator's objects, which kubernetes-validate has no schema for (it only
  warns): a ServiceMonitor selects a Service of these manifests by its labels and scrapes a
  port that Service names, using only fields of the ServiceMonitor API; a PrometheusRule's
  `spec.groups` are deploy/monitoring/rules.yaml's `groups`, so the two cannot drift.
- Kustomizations: every resource they list exists, and a `Kustomization` lists no
  prometheus-operator object, so the base applies to a cluster without those CRDs (they
  belong in a `Component`).

- A kustomization's output (`--rendered FILE`, from `kubectl kustomize`): the Deployment
  runs an image of a registry, mounts a ConfigMap the output holds (with `config.yaml`),
  and the ServiceAccount carries an IRSA role ARN; each from the kustomization's fields.

Usage: check_kubernetes.py MANIFEST... [--rendered FILE]...; exit 1 naming each problem.
"""

import os
import sys

from ruamel.yaml import YAML

RULES = os.path.join(os.path.dirname(__file__), "..", "deploy", "monitoring", "rules.yaml")
MONITORING_API = "monitoring.coreos.com/v1"
# The fields of the ServiceMonitor API (prometheus-operator API reference,
# ServiceMonitorSpec and Endpoint) these manifests may use; a misspelt one is refused.
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                   "metricRelabelings", "params", "tlsConfig", "enableHttp2", "followRedirects"}


def load(path):
    return [d for d in YAML(typ="safe").load_all(open(path)) if isinstance(d, dict)]


def services(paths):
    return [d for p in paths for d in load(p) if d.get("kind") == "Service"]


def service_monitor_problems(path, doc, name, all_services):
    where = f"{path}: ServiceMonitor {name}"
    if doc.get("apiVersion") != MONITORING_API:
        yield f"{where}: apiVersion must be {MONITORING_API}"
    spec = doc.get("spec", {})
    for field in sorted(set(spec) - SERVICE_MONITOR_SPEC):
        yield f"{where}: spec.{field} is not a ServiceMonitor field"
    wanted = spec.get("selector", {}).get("matchLabels", {})
    namespaces = spec.get("namespaceSelector", {}).get("matchNames")
    matching = [
        s for s in all_services
        if wanted and wanted.items() <= s.get("metadata", {}).get("labels", {}).items()
        and (namespaces is None or s.get("metadata", {}).get("namespace") in namespaces)
    ]
    if not matching:
        yield f"{where}: selects no Service of these manifests ({wanted}, namespaces {namespaces})"
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        yield f"{where}: no endpoints"
    for i, e in enumerate(endpoints):
        for field in sorted(set(e) - ENDPOINT_FIELDS):
            yield f"{where}: endpoints[{i}].{field} is not an Endpoint field"
        for s in matching:
            ports = {p.get("name") for p in s.get("spec", {}).get("ports", [])}
            if e.get("port") not in ports:
                yield f"{where}: endpoints[{i}].port {e.get('port')!r} is not a port of Service {s['metadata']['name']} ({sorted(ports)})"


def prometheus_rule_problems(path, doc, name):
    where = f"{path}: PrometheusRule {name}"
    if doc.get("apiVersion") != MONITORING_API:
        yield f"{where}: apiVersion must be {MONITORING_API}"
    rules = YAML(typ="safe").load(open(RULES))
    if doc.get("spec", {}).get("groups") != rules.get("groups"):
        yield f"{where}: spec.groups differ from deploy/monitoring/rules.yaml's groups; make them the same"


def kustomization_problems(path, doc):
    base = os.path.dirname(path)
    for generator in doc.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            if not os.path.isfile(os.path.join(base, source)):
                yield f"{path}: configMapGenerator {generator.get('name')}: {source} does not exist"
    for resource in doc.get("resources", []) + doc.get("components", []):
        target = os.path.join(base, resource)
        if not os.path.exists(target):
            yield f"{path}: {resource} does not exist"
            continue
        if doc.get("kind") == "Kustomization" and os.path.isfile(target) and resource in doc.get("resources", []):
            for d in load(target):
                if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                    yield f"{path}: {resource} holds a {d.get('kind')}, which needs the prometheus-operator's CRDs: put it in a Component"


def problems(path, all_services):
    for doc in load(path):
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "ServiceMonitor":
            yield from service_monitor_problems(path, doc, name, all_services)
        if kind == "PrometheusRule":
            yield from prometheus_rule_problems(path, doc, name)
        if kind in ("Kustomization", "Component"):
            yield from kustomization_problems(path, doc)
        if kind == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
            yield f"{path}: ServiceAccount {name}: automountServiceAccountToken must be false"
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            if spec.get("automountServiceAccountToken") is not False:
                yield f"{path}: {kind} {name}: the pod's automountServiceAccountToken must be false"


def rendered_problems(path):
    """A kustomization's output (`kubectl kustomize`): the Deployment runs the image the
    kustomization names, mounts a ConfigMap the output holds, with a config.yaml, and the
    ServiceAccount carries the IRSA role the kustomization sets."""
    docs = load(path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    for deployment in by_kind.get("Deployment", []):
        pod = deployment["spec"]["template"]["spec"]
        for c in pod.get("containers", []):
            if "/" not in c.get("image", ""):
                yield f"{path}: container {c.get('name')} runs {c.get('image')!r}, not an image of a registry: set `images` in the kustomization"
        for v in pod.get("volumes", []):
            name = (v.get("configMap") or {}).get("name")
            if name is None:
                continue
            if name not in config_maps:
                yield f"{path}: the Deployment mounts ConfigMap {name}, which the output does not hold"
            elif "config.yaml" not in config_maps[name].get("data", {}):
                yield f"{path}: ConfigMap {name} has no config.yaml"
    for sa in by_kind.get("ServiceAccount", []):
        role = (sa["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn", "")
        if not role.startswith("arn:") or ":role/" not in role:
            yield f"{path}: ServiceAccount {sa['metadata']['name']} has no IRSA role ARN: set it in the kustomization's `patches`"


def main(args):
    rendered = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--rendered"]
    paths = [a for i, a in enumerate(args) if a != "--rendered" and (i == 0 or args[i - 1] != "--rendered")]
    paths += rendered
    all_services = services(paths)
    found = [p for path in paths for p in problems(path, all_services)]
    found += [p for path in rendered for p in rendered_problems(path)]
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
