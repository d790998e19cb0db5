#!/usr/bin/env bash
# WHAM! 48 kHz noise (CC BY-NC 4.0) -> datasets/json_files/wham_noise_48k.json (sfxbg pool of 8 s windows).
# Download about 76 GB; writes the windows into $WHAM_NOISE_DIR/high_res_wham/high_res_wham_segment (needs write
# access).
# The corpus, its layout on disk and the manifest: docs/corpora.md §5.
# Usage, from the repository root: bash dataprep/prepare_wham_noise.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WHAM_NOISE_DIR="${WHAM_NOISE_DIR:-$DATA_ROOT/wham_noise_48k}"
URL="https://my-bucket-a8b4b49c25c811ee9a7e8bba05fa24c7.s3.amazonaws.com/high_res_wham.zip"

fetch_extract zip "$URL" "$WHAM_NOISE_DIR/high_res_wham.zip" "$WHAM_NOISE_DIR" high_res_wham

if manifests_missing wham_noise_48k.json; then
    step "build wham_noise_48k.json (cut 8 s windows)"
    run_python dataprep.build_wham_noise --corpus_dir "$WHAM_NOISE_DIR/high_res_wham" \
        --output "$JSON_DIR/wham_noise_48k.json" --jobs "$JOBS"
fi
log "done"
