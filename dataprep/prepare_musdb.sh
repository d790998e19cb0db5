#!/usr/bin/env bash
# MUSDB18-HQ (academic use) -> datasets/json_files/musdb18hq_44.1k.json and musdb18hq_44.1k_sad.json (the
# training songs cut into active 8 s segments, written to $MUSDB_SAD_DIR).
# The corpus, its layout on disk and the manifest: docs/corpora.md §12, §14.
# Usage, from the repository root: bash dataprep/prepare_musdb.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MUSDB_DIR="${MUSDB_DIR:-$DATA_ROOT/musdb18}"
MUSDB_SAD_DIR="${MUSDB_SAD_DIR:-$DATA_ROOT/musdbhq_sad/data}"

fetch_extract zip "https://zenodo.org/records/3338373/files/musdb18hq.zip?download=1" \
    "$MUSDB_DIR/musdbhq/musdb18hq.zip" "$MUSDB_DIR/musdbhq" train test

if manifests_missing musdb18hq_44.1k.json; then
    step "build musdb18hq_44.1k.json"
    run_python dataprep.build_musdb --corpus_dir "$MUSDB_DIR/musdbhq" --output "$JSON_DIR/musdb18hq_44.1k.json"
fi
if manifests_missing musdb18hq_44.1k_sad.json; then
    step "build musdb18hq_44.1k_sad.json (source activity detection)"
    run_python dataprep.sad --input "$JSON_DIR/musdb18hq_44.1k.json" --output "$JSON_DIR/musdb18hq_44.1k_sad.json" \
        --out_dir "$MUSDB_SAD_DIR" --min_power 1e-5 --min_thres 1e-3 --jobs "$JOBS"
fi
log "done"
