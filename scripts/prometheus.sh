# Sourced by the other scripts: makes sure `prometheus` and `promtool` are on PATH, from
# Debian's `prometheus` package, for the monitoring tests (tests/e2e/monitoring.rs) and the
# alert rules' unit tests (deploy/monitoring/). Installs with apt-get only when they are
# missing and this runs as root (CI, a container); anywhere else it says how to install
# them. Under CI=true a missing binary is an error, so those tests never skip in CI.
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's prometheus package (prometheus and promtool, for the monitoring tests)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package's service is not needed: the tests start their own server.
    return 0
  fi
  if [ "${CI:-}" = true ]; then
    echo "prometheus and promtool are missing and cannot be installed here (not root, or no apt-get)" >&2
    return 1
  fi
  echo "prometheus and promtool are not installed: the monitoring tests and the alert rules' tests will be skipped." >&2
  echo "Install them with: sudo apt-get install --no-install-recommends prometheus" >&2
}
