#!/usr/bin/env bash
# Divide and Remaster v2 (CC BY 4.0) -> datasets/json_files/dnr_44.1k.json (speech, musicbg, sfxbg mixtures).
# Downloads 11 parts, joins them into dnr_v2.tar.gz and extracts it (the parts and the archive can then be deleted).
# The corpus, its layout on disk and the manifest: docs/corpora.md §10.
# Usage, from the repository root: bash dataprep/prepare_dnr.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DNR_DIR="${DNR_DIR:-$DATA_ROOT/dnr}"

if have "$DNR_DIR" dnr_v2; then
    skip "download and extract DnR ($DNR_DIR/dnr_v2 exists)"
else
    if [[ -s "$DNR_DIR/dnr_v2.tar.gz" ]]; then
        skip "download and join the DnR parts ($DNR_DIR/dnr_v2.tar.gz exists)"
    else
        parts=()
        for index in 00 01 02 03 04 05 06 07 08 09 10; do
            fetch "https://zenodo.org/records/6949108/files/dnr_v2.tar.gz.$index?download=1" \
                "$DNR_DIR/dnr_v2.tar.gz.$index"
            parts+=("$DNR_DIR/dnr_v2.tar.gz.$index")
        done
        step "join the DnR parts"
        cat "${parts[@]}" >"$DNR_DIR/dnr_v2.tar.gz.part"
        mv "$DNR_DIR/dnr_v2.tar.gz.part" "$DNR_DIR/dnr_v2.tar.gz"
    fi
    extract tar "$DNR_DIR/dnr_v2.tar.gz" "$DNR_DIR" dnr_v2
fi

if manifests_missing dnr_44.1k.json; then
    step "build dnr_44.1k.json"
    run_python dataprep.build_dnr --corpus_dir "$DNR_DIR/dnr_v2" --output "$JSON_DIR/dnr_44.1k.json"
fi
log "done"
