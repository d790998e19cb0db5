#!/usr/bin/env bash
# WHAM! mixtures from a simulated WHAMR! tree -> datasets/json_files/wham_max_16k.json (16 kHz, max, noisy
# anechoic). Nothing is downloaded: simulate WHAMR! (needs WSJ0) by hand and link it as $WHAMR_DIR.
# The corpus, its layout on disk and the manifest: docs/corpora.md §6.
# Usage, from the repository root: bash dataprep/prepare_whamr.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WHAMR_DIR="${WHAMR_DIR:-$DATA_ROOT/whamr}"

# The release creates ./whamr before testing it, so its "please prepare WHAMR!" message can never print.
[[ -d "$WHAMR_DIR/wav16k/max" ]] || die "WHAMR! not found at $WHAMR_DIR/wav16k/max. Simulate WHAMR! as described at \
http://wham.whisper.ai/WHAMR_README.html (it needs WSJ0), then link the folder holding metadata, wav8k and wav16k: \
ln -s /path/to/whamr $WHAMR_DIR. Without WSJ0, skip it: SKIP=\"wsj0_speech whamr\" bash dataprep/dataprep.sh"

if manifests_missing wham_max_16k.json; then
    step "build wham_max_16k.json"
    run_python dataprep.build_whamr --corpus_dir "$WHAMR_DIR" --output "$JSON_DIR/wham_max_16k.json"
fi
log "done"
