#!/usr/bin/env bash
# Static checks: formatting, clippy, the source layout (scripts/check_layout.py), dependency
# features shared by the plain and the tests' builds, the Dockerfile, the Kubernetes
# manifests, the ECS task,
# and the sample configs against config/schema.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv

cargo fmt --check
# CI lints while it builds (.ci/run sets clippy-driver as the workspace's compiler
# wrapper, as `cargo clippy` does, with -D warnings), so the dependencies are compiled
# once for the tests instead of also being checked here.
if [ "${LINT_CLIPPY_IN_BUILD:-}" = 1 ]; then
  echo "lint: clippy runs in the build of every target (LINT_CLIPPY_IN_BUILD=1)"
else
  cargo clippy --locked --all-targets -- -D warnings
fi
# The layout: the AWS SDK only in src/shell/aws, no I/O in src/core, no import cycles.
.venv/bin/python scripts/check_layout.py
# The demo's build and the tests' build share the SDK's compiled crates.
.venv/bin/python scripts/check_shared_deps.py
.venv/bin/hadolint --failure-threshold warning Dockerfile
# The kustomizations rendered as `kubectl apply -k` would apply them, then validated: the
# base against the Kubernetes schemas, both by check_kubernetes.py.
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
if command -v kubectl >/dev/null; then
  kubectl kustomize deploy/kubernetes >"$rendered/kubernetes.yaml"
  kubectl kustomize deploy/kubernetes-monitoring >"$rendered/kubernetes-monitoring.yaml"
  kubectl kustomize deploy/kubernetes-overlay >"$rendered/kubernetes-overlay.yaml"
  # The overlay's three fields reach the output: its image, its role, its config.
  grep -q 'image: 999988887777.dkr.ecr.eu-west-1.amazonaws.com/asg-cmk-operator:0.1.0' "$rendered/kubernetes-overlay.yaml"
  grep -q 'role-arn: arn:aws:iam::999988887777:role/asg-cmk-operator' "$rendered/kubernetes-overlay.yaml"
  grep -q 'asg: eks-nodes-general' "$rendered/kubernetes-overlay.yaml"
elif [ -n "${CI:-}" ]; then
  echo "lint: kubectl (with its kustomize) is needed to render deploy/kubernetes" >&2
  exit 1
else
  echo "lint: no kubectl here: the kustomizations are not rendered (CI renders them)" >&2
fi
.venv/bin/kubernetes-validate --strict deploy/kubernetes/namespace.yaml deploy/kubernetes/serviceaccount.yaml \
  deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml
if [ -s "$rendered/kubernetes.yaml" ]; then
  .venv/bin/kubernetes-validate --strict "$rendered/kubernetes.yaml" "$rendered/kubernetes-overlay.yaml"
fi
rendered_args=()
for f in "$rendered"/*.yaml; do
  [ -e "$f" ] && rendered_args+=(--rendered "$f")
done
.venv/bin/python scripts/check_kubernetes.py deploy/kubernetes/*.yaml deploy/kubernetes/components/monitoring/*.yaml \
  deploy/kubernetes-monitoring/kustomization.yaml deploy/monitoring/kustomization.yaml deploy/monitoring/prometheusrule.yaml \
  "${rendered_args[@]}"
.venv/bin/python scripts/check_ecs_task.py deploy/ecs/task-definition.json
.venv/bin/cfn-lint deploy/events/events.yaml deploy/events/key-owner.yaml
# The example config, and the config the Kubernetes ConfigMap carries, against the schema.
.venv/bin/check-jsonschema --schemafile config/schema.json config/example.yaml deploy/kubernetes/config.yaml \
  deploy/kubernetes-overlay/config.yaml
