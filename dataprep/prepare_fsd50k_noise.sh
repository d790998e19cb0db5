#!/usr/bin/env bash
# FSD50K (CC licences per clip) -> datasets/json_files/fsd50k_44.1k.json (sfx and sfxbg pools from the dev set).
# Downloads about 24 GB (dev audio and metadata) and clones the AudioSet ontology. The eval audio is never used by
# the manifest: set FSD50K_WITH_EVAL=1 to download and extract it too.
# The corpus, its layout on disk and the manifest: docs/corpora.md §8.
# Usage, from the repository root: bash dataprep/prepare_fsd50k_noise.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FSD50K_DIR="${FSD50K_DIR:-$DATA_ROOT/fsd50k}"
BASE_URL="https://zenodo.org/records/4060432/files"
ONTOLOGY_DIR="$DATAFILES_DIR/ontology"

for name in FSD50K.ground_truth FSD50K.metadata FSD50K.doc; do
    fetch_extract zip "$BASE_URL/$name.zip?download=1" "$FSD50K_DIR/$name.zip" "$FSD50K_DIR" "$name"
done

# merged_audio NAME LAST_PART: download NAME.zip and its parts .z01 ... LAST_PART, merge and extract them.
merged_audio() {
    local name="$1" last="$2" part
    if have "$FSD50K_DIR" "$name"; then
        skip "download and extract $name ($FSD50K_DIR/$name exists)"
        return 0
    fi
    fetch "$BASE_URL/$name.zip?download=1" "$FSD50K_DIR/$name.zip"
    for part in $(seq -f 'z%02g' 1 "$last"); do
        fetch "$BASE_URL/$name.$part?download=1" "$FSD50K_DIR/$name.$part"
    done
    if [[ -s "$FSD50K_DIR/unsplit_$name.zip" ]]; then
        skip "merge $name parts ($FSD50K_DIR/unsplit_$name.zip exists)"
    else
        step "merge the parts of $name.zip"
        need_tool "$ZIP" "merge split zip archives" ZIP
        rm -f "$FSD50K_DIR/unsplit_$name.part.zip"
        "$ZIP" -q -s 0 "$FSD50K_DIR/$name.zip" --out "$FSD50K_DIR/unsplit_$name.part.zip"
        mv "$FSD50K_DIR/unsplit_$name.part.zip" "$FSD50K_DIR/unsplit_$name.zip"
    fi
    extract zip "$FSD50K_DIR/unsplit_$name.zip" "$FSD50K_DIR" "$name"
}
merged_audio FSD50K.dev_audio 5
if [[ "${FSD50K_WITH_EVAL:-0}" == 1 ]]; then
    # The release merges the eval parts but then unzips the head of the split archive; the merged file is used here.
    merged_audio FSD50K.eval_audio 1
fi

if [[ -f "$ONTOLOGY_DIR/ontology.json" ]]; then
    skip "clone the AudioSet ontology ($ONTOLOGY_DIR/ontology.json exists)"
else
    step "clone the AudioSet ontology"
    need_tool "$GIT" "clone the AudioSet ontology" GIT
    rm -rf "$ONTOLOGY_DIR.part"
    "$GIT" clone --depth 1 https://github.com/audioset/ontology.git "$ONTOLOGY_DIR.part"
    rm -rf "$ONTOLOGY_DIR"
    mv "$ONTOLOGY_DIR.part" "$ONTOLOGY_DIR"
fi

if manifests_missing fsd50k_44.1k.json; then
    step "build fsd50k_44.1k.json"
    run_python dataprep.build_fsd50k --corpus_dir "$FSD50K_DIR" --ontology "$ONTOLOGY_DIR/ontology.json" \
        --output "$JSON_DIR/fsd50k_44.1k.json"
fi
log "done"
