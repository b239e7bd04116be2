#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: PostgreSQL server binaries, and the real
# protocol peers of the intake channels' tests: curl (FTP uploads), swaks (mail), OpenSSH's sshd (SFTP pulls);
# Chromium for the pages' browser tests (Playwright drives /usr/bin/chromium: it cannot download a browser here).
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PAYOUTDESK_TEST_POSTGRES_URL:-}" ]; then
  missing+=(postgresql)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]} (Debian packages) for the test suite..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
