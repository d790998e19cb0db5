#!/usr/bin/env bash
# FMA medium (CC licences per track) -> datasets/json_files/fma_44.1k.json (musicbg pools).
# Downloads about 23 GB; extraction needs 7z (apt-get install 7zip, or p7zip-full). Every mp3 is decoded once.
# The corpus, its layout on disk and the manifest: docs/corpora.md §9.
# Usage, from the repository root: bash dataprep/prepare_fma_noise.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FMA_DIR="${FMA_DIR:-$DATA_ROOT/fma}"
BASE_URL="https://os.unil.cloud.switch.ch/fma"
MEDIUM_SHA1="c67b69ea232021025fca9231fc1c7c1a063ab50b"

fetch_extract 7z "$BASE_URL/fma_metadata.zip" "$FMA_DIR/fma_metadata.zip" "$FMA_DIR" fma_metadata/tracks.csv
if have "$FMA_DIR" fma_medium; then
    skip "download and extract fma_medium.zip ($FMA_DIR/fma_medium exists)"
else
    fetch "$BASE_URL/fma_medium.zip" "$FMA_DIR/fma_medium.zip"
    step "check the SHA-1 of fma_medium.zip"
    # The release prints a mismatch and carries on; a corrupt archive stops here instead.
    echo "$MEDIUM_SHA1  $FMA_DIR/fma_medium.zip" | "$SHA1SUM" -c - >/dev/null \
        || die "SHA-1 mismatch for $FMA_DIR/fma_medium.zip: delete it and run again to download it anew"
    extract 7z "$FMA_DIR/fma_medium.zip" "$FMA_DIR" fma_medium
fi

if manifests_missing fma_44.1k.json; then
    step "build fma_44.1k.json (decode every track)"
    run_python dataprep.build_fma --corpus_dir "$FMA_DIR" --output "$JSON_DIR/fma_44.1k.json" --jobs "$JOBS"
fi
log "done"
