#!/usr/bin/env bash
# MoisesDB (licence terms: download it by hand) -> datasets/json_files/moisesdb_44.1k.json and
# moisesdb_44.1k_sad.json (the training songs cut into active 8 s segments, written to $MOISESDB_SAD_DIR).
# The corpus, its layout on disk and the manifest: docs/corpora.md §13, §14.
# Usage, from the repository root: bash dataprep/prepare_moisesdb.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MOISESDB_DIR="${MOISESDB_DIR:-$DATA_ROOT/moisesdb}"
MOISESDB_SAD_DIR="${MOISESDB_SAD_DIR:-$DATA_ROOT/moisesdb_sad/data}"
SPLITS_URL="https://raw.githubusercontent.com/kwatcharasupat/query-bandit/main/reproducibility/splits.csv"
SONGS_DIR="$MOISESDB_DIR/moisesdb/moisesdb_v0.1"

# The release prints a message here and carries on into a failing builder.
[[ -d "$SONGS_DIR" ]] || die "MoisesDB not found at $SONGS_DIR. Download it by hand from https://music.ai/research/ \
(licence terms), put the zip in $MOISESDB_DIR and unzip it there so that the songs are in $SONGS_DIR \
(or link an existing copy: see create_symlinks.sh). To prepare everything else: SKIP=moisesdb bash dataprep/dataprep.sh"

# fetch creates $MOISESDB_DIR first (the release saves the CSV into a folder it never creates).
fetch "$SPLITS_URL" "$MOISESDB_DIR/moisesdb_split.csv"

if manifests_missing moisesdb_44.1k.json; then
    step "build moisesdb_44.1k.json"
    run_python dataprep.build_moisesdb --corpus_dir "$SONGS_DIR" --split_csv "$MOISESDB_DIR/moisesdb_split.csv" \
        --output "$JSON_DIR/moisesdb_44.1k.json"
fi
if manifests_missing moisesdb_44.1k_sad.json; then
    step "build moisesdb_44.1k_sad.json (source activity detection)"
    run_python dataprep.sad --input "$JSON_DIR/moisesdb_44.1k.json" --output "$JSON_DIR/moisesdb_44.1k_sad.json" \
        --out_dir "$MOISESDB_SAD_DIR" --min_power 1e-7 --min_thres 1e-5 --jobs "$JOBS"
fi
log "done"
