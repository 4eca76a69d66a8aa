#!/usr/bin/env bash
# Install Sluice into .venv (first time only) and start the dashboard on http://127.0.0.1:5000
# with the embedded defaults: SQLite in instance/, runs executed by a thread of this process.
# On a new database it first prints the one-time link that creates the first administrator.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/flask ] || [ pyproject.toml -nt .venv/.installed ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[postgres]'
  touch .venv/.installed
fi
# The link in the server's log and in instance/setup-link.txt starts where this server listens.
export SLUICE_BASE_URL=${SLUICE_BASE_URL:-http://${HOST:-127.0.0.1}:${PORT:-5000}}
# A database with no user yet: say how to create the first administrator (the server's own start
# then logs the same link; any problem with the database is reported by the server, not here).
if link=$(.venv/bin/flask --app app users setup-link --base-url "$SLUICE_BASE_URL" 2>/dev/null) && [ -n "$link" ]; then
  printf '\nSluice has no users yet. Open this link to create the first administrator:\n  %s\n\n' "$link"
fi
exec .venv/bin/flask --app app run --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" "$@"
