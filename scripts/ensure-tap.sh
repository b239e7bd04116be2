#!/usr/bin/env bash
# Installs impact.com's Singer tap (tap-impact, from PyPI) into its own virtual environment, .venv-tap/, for
# tests/test_tap_impact.py: its pins (requests, backoff, singer-python) differ from ours, so it never shares
# .venv. Created once; the stamp names the version, so a later run reuses it and a new version rebuilds it.
# TAP_VENV and PYTHON may point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.1.1
VENV=${TAP_VENV:-.venv-tap}
STAMP="$VENV/.installed-tap-impact-$VERSION"
[ -f "$STAMP" ] && exit 0
# one install at a time (make test and a test that calls this script may meet)
exec 9>"${VENV%/}.lock"
flock 9
[ -f "$STAMP" ] && exit 0
echo "Installing tap-impact==$VERSION into $VENV (its own virtual environment)..."
rm -rf "$VENV"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
if ! { "${PYTHON:-python3}" -m venv "$VENV" &&
       "$VENV/bin/python" -m pip install --no-input "tap-impact==$VERSION"; } >"$LOG" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40 >&2
  echo "ensure-tap.sh: installing tap-impact==$VERSION failed" >&2
  rm -rf "$VENV"
  exit 1
fi
"$VENV/bin/python" -c "import tap_impact, singer, requests" >/dev/null
touch "$STAMP"
