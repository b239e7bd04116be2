#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: PostgreSQL server binaries.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ -n "${PAYOUTDESK_TEST_POSTGRES_URL:-}" ]; then exit 0; fi
  echo "Installing PostgreSQL (Debian package postgresql) for the test suite..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
