#!/usr/bin/env bash
# Voicebank-DEMAND 48 kHz (CC BY 4.0) -> datasets/json_files/vctk_demand_48k.json (valid: p226, p287; test).
# Downloads 4 zips (about 2.5 GB); writes noise = noisy - clean into $VCTK_DEMAND_DIR (needs write access).
# The corpus, its layout on disk and the manifest: docs/corpora.md §3.
# Usage, from the repository root: bash dataprep/prepare_vctk_demand.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VCTK_DEMAND_DIR="${VCTK_DEMAND_DIR:-$DATA_ROOT/vctk_demand}"
BASE_URL="https://datashare.ed.ac.uk/bitstream/handle/10283/2791"

for subset_sequence in clean_trainset_28spk_wav:2 noisy_trainset_28spk_wav:6 clean_testset_wav:1 noisy_testset_wav:5; do
    subset="${subset_sequence%%:*}"
    sequence="${subset_sequence##*:}"
    fetch_extract zip "$BASE_URL/$subset.zip?sequence=$sequence&isAllowed=y" "$VCTK_DEMAND_DIR/$subset.zip" \
        "$VCTK_DEMAND_DIR" "$subset"
done

if manifests_missing vctk_demand_48k.json; then
    step "build vctk_demand_48k.json (write noise = noisy - clean)"
    run_python dataprep.build_vctk_demand --corpus_dir "$VCTK_DEMAND_DIR" --output "$JSON_DIR/vctk_demand_48k.json" \
        --jobs "$JOBS"
fi
log "done"
