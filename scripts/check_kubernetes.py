#!/usr/bin/env python3
"""Checks of the Kubernetes manifests that schema validation cannot make.

- No service account token is mounted: the operator never calls the Kubernetes API, and
  IRSA and EKS Pod Identity mount tokens of their own (projected volumes with the
  sts.amazonaws.com / pods.eks.amazonaws.com audiences), whatever this setting says (EKS
  User Guide, "IAM roles for service accounts" and "EKS Pod Identity"; EKS Best Practices
  Guide, Security, "Disable auto-mounting of service account tokens"). Both the pod spec
  and the ServiceAccount say `automountServiceAccountToken: false`.

Usage: check_kubernetes.py MANIFEST...; exit 1 naming each problem.
"""

import sys

from ruamel.yaml import YAML


def problems(path):
    for doc in YAML(typ="safe").load_all(open(path)):
        if not isinstance(doc, dict):
            continue
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
            yield f"{path}: ServiceAccount {name}: automountServiceAccountToken must be false"
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            if spec.get("automountServiceAccountToken") is not False:
                yield f"{path}: {kind} {name}: the pod's automountServiceAccountToken must be false"


def main(paths):
    found = [p for path in paths for p in problems(path)]
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
