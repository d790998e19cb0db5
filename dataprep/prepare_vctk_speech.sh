#!/usr/bin/env bash
# VCTK 0.92 (CC BY 4.0) -> datasets/json_files/vctk_48k.json (speech pool, 48 kHz). Download about 11 GB.
# The corpus, its layout on disk and the manifest: docs/corpora.md §1.
# Usage, from the repository root: bash dataprep/prepare_vctk_speech.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VCTK_DIR="${VCTK_DIR:-$DATA_ROOT/vctk}"
URL="https://datashare.ed.ac.uk/download/DS_10283_3443.zip"

if have "$VCTK_DIR/VCTK-Corpus" wav48_silence_trimmed; then
    skip "download and extract VCTK ($VCTK_DIR/VCTK-Corpus/wav48_silence_trimmed exists)"
else
    fetch_extract zip "$URL" "$VCTK_DIR/DS_10283_3443.zip" "$VCTK_DIR" VCTK-Corpus-0.92.zip
    extract zip "$VCTK_DIR/VCTK-Corpus-0.92.zip" "$VCTK_DIR/VCTK-Corpus" wav48_silence_trimmed
fi

if manifests_missing vctk_48k.json; then
    step "build vctk_48k.json"
    run_python dataprep.build_vctk --corpus_dir "$VCTK_DIR/VCTK-Corpus" --output "$JSON_DIR/vctk_48k.json"
fi
log "done"
