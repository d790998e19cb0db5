#!/usr/bin/env bash
# DEMAND 48 kHz noise (CC BY-SA 3.0) -> datasets/json_files/demand_48k.json (sfxbg pool of 8 s windows).
# Downloads 18 zips (about 7 GB); writes the windows into $DEMAND_DIR/demand_48k_segment (needs write access).
# The corpus, its layout on disk and the manifest: docs/corpora.md §2.
# Usage, from the repository root: bash dataprep/prepare_demand_noise.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMAND_DIR="${DEMAND_DIR:-$DATA_ROOT/demand}"
TYPES="DKITCHEN DLIVING DWASHING NFIELD NPARK NRIVER OHALLWAY OMEETING OOFFICE PCAFETER PRESTO PSTATION SCAFE
SPSQUARE STRAFFIC TBUS TCAR TMETRO"

for type in $TYPES; do
    fetch_extract zip "https://zenodo.org/records/1227121/files/${type}_48k.zip?download=1" \
        "$DEMAND_DIR/zip_files/${type}_48k.zip" "$DEMAND_DIR" "$type/ch01.wav"
done

if manifests_missing demand_48k.json; then
    step "build demand_48k.json (cut 8 s windows)"
    run_python dataprep.build_demand --corpus_dir "$DEMAND_DIR" --output "$JSON_DIR/demand_48k.json" --jobs "$JOBS"
fi
log "done"
