#!/usr/bin/env bash
# Install Sluice into .venv (first time only) and start the dashboard on http://127.0.0.1:5000
# with the embedded defaults: SQLite in instance/, runs executed by a thread of this process.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/flask ] || [ pyproject.toml -nt .venv/.installed ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[postgres]'
  touch .venv/.installed
fi
exec .venv/bin/flask --app app run --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" "$@"
