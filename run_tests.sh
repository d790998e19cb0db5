#!/usr/bin/env bash
# Run the test suite on a fresh Debian/Ubuntu machine: installs the few system tools some tests use (apt) and the
# Python packages (pip; by default the exact versions of requirements.lock, REQUIREMENTS=requirements.txt for the
# latest that requirements.txt allows), then runs pytest. Extra arguments go to pytest, e.g.
# `bash run_tests.sh -k nets`.
set -euo pipefail
cd "$(dirname "$0")"

# System tools used by tests: shellcheck and unzip (data-preparation scripts); espeak-ng, fluidsynth, a small GM
# soundfont and a sound theme (the `--small` demo corpus that the end-to-end tests build); chromium and its
# chromedriver and a font (the web page's browser tests, tests/app/test_browser.py).
APT_PACKAGES=(shellcheck unzip espeak-ng fluidsynth timgm6mb-soundfont sound-theme-freedesktop chromium chromium-driver
              fonts-dejavu-core)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "run_tests.sh: installing ${missing[*]} with apt-get"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "run_tests.sh: apt-get not found; tests needing ${missing[*]} will be skipped" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q -r "${REQUIREMENTS:-requirements.lock}"
# one pytest-xdist worker per core, each test file on one worker (its module fixtures built once): about half the
# wall time on 2 cores; pass -n 0 to run in one process
exec "$PYTHON" -m pytest -q -n auto --dist loadfile "$@"
