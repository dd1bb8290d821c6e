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
.venv/bin/kubernetes-validate --strict \
  deploy/kubernetes/namespace.yaml deploy/kubernetes/serviceaccount.yaml \
  deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml
.venv/bin/python scripts/check_kubernetes.py deploy/kubernetes/*.yaml deploy/kubernetes/components/monitoring/*.yaml \
  deploy/kubernetes-monitoring/kustomization.yaml deploy/monitoring/kustomization.yaml deploy/monitoring/prometheusrule.yaml
.venv/bin/python scripts/check_ecs_task.py deploy/ecs/task-definition.json
# The example config, and the config the Kubernetes ConfigMap carries, against the schema.
configmap_config=$(mktemp --suffix=.yaml)
trap 'rm -f "$configmap_config"' EXIT
.venv/bin/python -c 'import sys; from ruamel.yaml import YAML; print(YAML(typ="safe").load(open(sys.argv[1]))["data"]["config.yaml"])' \
  deploy/kubernetes/configmap.yaml >"$configmap_config"
.venv/bin/check-jsonschema --schemafile config/schema.json config/example.yaml "$configmap_config"
