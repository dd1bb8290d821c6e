#!/usr/bin/env bash
# Static checks: formatting, clippy, the Dockerfile, the Kubernetes manifests, the ECS task.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
.venv/bin/hadolint --failure-threshold warning Dockerfile
.venv/bin/kubernetes-validate --strict \
  deploy/kubernetes/namespace.yaml deploy/kubernetes/serviceaccount.yaml \
  deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml
.venv/bin/python scripts/check_ecs_task.py deploy/ecs/task-definition.json
