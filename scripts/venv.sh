# Sourced by the other scripts: makes sure .venv holds scripts/requirements.txt.
# Reinstalls only when that file changed since the last install.
VENV_DIR="${VENV_DIR:-.venv}"
ensure_venv() {
  local stamp="$VENV_DIR/.requirements.sha256"
  local want
  want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
  if [ -x "$VENV_DIR/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "setting up $VENV_DIR from scripts/requirements.txt (moto's AWS emulator and the pinned tools; about a minute the first time)" >&2
  python3 -m venv "$VENV_DIR"
  "$VENV_DIR/bin/pip" install --disable-pip-version-check -r scripts/requirements.txt >&2
  echo "$want" > "$stamp"
}
