#!/usr/bin/env bash
# Refresh requirements.lock: install the latest versions that requirements.txt allows into a fresh virtual
# environment, run the whole test suite there, and only when it passes write that environment's exact versions to
# requirements.lock (atomically: a failed run leaves the old lock as it was).
#
#   bash tools/update_lock.sh            # then commit requirements.lock
#
# Takes as long as a fresh install plus the suite (about 4 + 7 minutes on a 2-core machine). Extra arguments go to
# pytest, e.g. `bash tools/update_lock.sh -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(mktemp -d "${TMPDIR:-/tmp}/tuss-lock.XXXXXX")
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
REQUIREMENTS=requirements.txt PYTHON="$venv/bin/python" bash run_tests.sh "$@"

tmp=$(mktemp requirements.lock.XXXXXX)
{
    echo "# Exact versions the test suite last passed with (made by tools/update_lock.sh from requirements.txt;"
    echo "# $("$venv/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())'))."
    echo "# Install: pip install -r requirements.lock (reproducible) or pip install -r requirements.txt (the latest allowed)."
    "$venv/bin/python" -m pip freeze --exclude-editable
} > "$tmp"
mv "$tmp" requirements.lock
echo "tools/update_lock.sh: requirements.lock updated ($(grep -vc '^#' requirements.lock) packages)"
