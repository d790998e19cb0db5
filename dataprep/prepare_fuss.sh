#!/usr/bin/env bash
# FUSS (CC BY 4.0) -> datasets/json_files/fuss_16k.json and fuss_{1,2,3,4}src_16k.json (sfx mixtures, 16 kHz).
# The corpus, its layout on disk and the manifest: docs/corpora.md §11.
# Usage, from the repository root: bash dataprep/prepare_fuss.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FUSS_DIR="${FUSS_DIR:-$DATA_ROOT/fuss}"

fetch_extract tar "https://zenodo.org/records/3743844/files/FUSS_ssdata.tar.gz?download=1" \
    "$FUSS_DIR/FUSS_ssdata.tar.gz" "$FUSS_DIR" ssdata

# All five files decide, not only fuss_16k.json as in the release.
if manifests_missing fuss_16k.json fuss_1src_16k.json fuss_2src_16k.json fuss_3src_16k.json fuss_4src_16k.json; then
    step "build fuss_16k.json and fuss_{1,2,3,4}src_16k.json"
    run_python dataprep.build_fuss --corpus_dir "$FUSS_DIR/ssdata" --output_dir "$JSON_DIR" --jobs "$JOBS"
fi
log "done"
