#!/usr/bin/env bash
# Prepare every corpus and write the 19 manifests to datasets/json_files/ (docs/data.md; the corpora
# and manifests: docs/corpora.md).
#
# Usage, from the repository root:
#   bash dataprep/dataprep.sh                          all 13 corpora, in the order below
#   SKIP="wsj0_speech whamr" bash dataprep/dataprep.sh  all but those (e.g. without the WSJ0 licence)
#   bash dataprep/dataprep.sh musdb fuss               only those
# Settings (download root, tools, ...): see dataprep/lib.sh. Stops at the first corpus that fails.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail

CORPORA=(vctk_speech demand_noise vctk_demand wsj0_speech wham_noise whamr librivox_urgent2024 fsd50k_noise
    fma_noise dnr fuss musdb moisesdb)
HERE="$(dirname "${BASH_SOURCE[0]}")"
SKIP="${SKIP:-}"

known() {
    local name
    for name in "${CORPORA[@]}"; do
        [[ "$name" == "$1" ]] && return 0
    done
    return 1
}

read -r -a skipped <<<"${SKIP//,/ }"
selected=("$@")
for name in "${skipped[@]}" "${selected[@]}"; do
    known "$name" || {
        echo "[dataprep] ERROR: unknown corpus '$name' (known: ${CORPORA[*]})" >&2
        exit 2
    }
done

mkdir -p "${JSON_DIR:-./datasets/json_files}"
for name in "${CORPORA[@]}"; do
    if [[ ${#selected[@]} -gt 0 && " ${selected[*]} " != *" $name "* ]]; then
        continue
    fi
    if [[ " ${skipped[*]} " == *" $name "* ]]; then
        echo "[dataprep] skipping $name (in SKIP)"
        continue
    fi
    echo "[dataprep] === $name"
    bash "$HERE/prepare_$name.sh" || {
        echo "[dataprep] ERROR: dataprep/prepare_$name.sh failed; fix the problem above and run again (finished" \
            "steps are skipped), or skip it with SKIP=\"$name ...\"" >&2
        exit 1
    }
done
echo "[dataprep] done; check the manifests with: python -m datasets.manifest check ${JSON_DIR:-./datasets/json_files}/*.json"
