#!/usr/bin/env bash
# The core's test suite with signpeer-core alone installed: no token plugin, no plugin at all.
#
# Makes a fresh virtualenv outside the checkout, installs only `pip install -e ".[test]"`, checks
# that no `signpeer` entry point is installed, and runs `pytest tests/`. The tests get their
# crypto token from the test kit (signpeer_core.testing, registered through SIGNPEER_EXTRA_PLUGINS).
# Extra arguments go to pytest. Usage: scripts/test-core-alone.sh [-x] [-k expr]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/signpeer-core-alone.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip "setuptools>=77" wheel
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -e "$repo[test]"

"$work/venv/bin/python" - <<'PY'
from importlib import metadata

plugins = sorted(f"{ep.name} ({ep.value})" for ep in metadata.entry_points(group="signpeer"))
if plugins:
    raise SystemExit(f"expected no signpeer plugin in this virtualenv, found: {', '.join(plugins)}")
print("signpeer plugins installed: none")
PY

cd "$repo"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/ "$@"
