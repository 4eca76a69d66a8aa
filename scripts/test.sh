#!/usr/bin/env bash
# Install Sluice with its test extras into .venv (first time only) and run the whole test suite, on every core.
# On SQLite by default; set TEST_DATABASE_URL=postgresql://... to run the same suite on PostgreSQL.
# Browser tests need Debian's chromium: installed here with apt-get when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/pytest ] || [ pyproject.toml -nt .venv/.installed-test ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
  touch .venv/.installed-test
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null
fi
# One pytest process per core: every test has its own database and instance folder (on PostgreSQL
# each process makes a database of its own), so they run side by side.
exec .venv/bin/python -m pytest -n auto "$@"
