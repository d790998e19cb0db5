#!/usr/bin/env bash
# WSJ0 (LDC93S6A, licensed: obtain it by hand) -> datasets/json_files/wsj0_speech_16k.json (speech pool, 16 kHz).
# Needs $WSJ_DIR/wsj0 holding the LDC disc folders (11-1.1, 11-2.1, ...); converts every .wv1 to WAV with sph2pipe
# (built from source with make and a C compiler when it is not on the PATH).
# The corpus, its layout on disk and the manifest: docs/corpora.md §4.
# Usage, from the repository root: bash dataprep/prepare_wsj0_speech.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WSJ_DIR="${WSJ_DIR:-$DATA_ROOT/wsj}"
SPH2PIPE="${SPH2PIPE:-sph2pipe}"
LISTS_URL="https://www.merl.com/research/highlights/deep-clustering/create-speaker-mixtures.zip"
SPH2PIPE_URL="https://github.com/burrmill/sph2pipe/archive/refs/tags/2.5.tar.gz"
LISTS_DIR="$DATAFILES_DIR/create-speaker-mixtures"

[[ -d "$WSJ_DIR/wsj0" ]] || die "WSJ0 not found at $WSJ_DIR/wsj0. WSJ0 needs an LDC licence \
(https://catalog.ldc.upenn.edu/LDC93s6a); link your copy, the folder holding 11-1.1, 11-2.1, ...: \
mkdir -p $WSJ_DIR && ln -s /path/to/wsj0 $WSJ_DIR/wsj0. Without WSJ0, skip this corpus and WHAMR!: \
SKIP=\"wsj0_speech whamr\" bash dataprep/dataprep.sh"

# The release tests the zip with '-3' instead of '-f', so it never downloads it; fetched here.
fetch_extract zip "$LISTS_URL" "$DATAFILES_DIR/create-speaker-mixtures.zip" "$LISTS_DIR" mix_2_spk_tr.txt

if [[ -f "$WSJ_DIR/wsj_sph2wav.done" ]]; then
    skip "SPH to WAV conversion ($WSJ_DIR/wsj_sph2wav.done exists)"
else
    if ! command -v "$SPH2PIPE" >/dev/null 2>&1; then
        SPH2PIPE="$DATAFILES_DIR/sph2pipe-2.5/sph2pipe"
        if [[ -x "$SPH2PIPE" ]]; then
            skip "build sph2pipe ($SPH2PIPE exists)"
        else
            fetch_extract tar "$SPH2PIPE_URL" "$DATAFILES_DIR/sph2pipe_v2.5.tar.gz" "$DATAFILES_DIR" sph2pipe-2.5
            step "build sph2pipe"
            need_tool make "build sph2pipe" PATH
            make -C "$DATAFILES_DIR/sph2pipe-2.5"
        fi
    fi
    # Unlike the release (which skips the whole conversion when wsj0_wav exists, so an interrupted conversion is
    # never completed), every file is converted unless its WAV exists; the marker is written after a full pass.
    step "convert WSJ0 .wv1 files to WAV in $WSJ_DIR/wsj0_wav"
    count=0
    while IFS= read -r -d '' sph; do
        rel="${sph#"$WSJ_DIR/wsj0/"}"
        wav="$WSJ_DIR/wsj0_wav/${rel%.*}.wav"
        if [[ ! -s "$wav" ]]; then
            mkdir -p "$(dirname "$wav")"
            "$SPH2PIPE" -f wav "$sph" "$wav.part"
            mv "$wav.part" "$wav"
        fi
        count=$((count + 1))
    done < <(find -L "$WSJ_DIR/wsj0" -type f -iname '*.wv1' -print0)
    [[ $count -gt 0 ]] || die "no .wv1 file found under $WSJ_DIR/wsj0 (is it the LDC WSJ0 tree?)"
    log "converted or found $count files"
    touch "$WSJ_DIR/wsj_sph2wav.done"
fi

if manifests_missing wsj0_speech_16k.json; then
    step "build wsj0_speech_16k.json"
    run_python dataprep.build_wsj0 --wav_dir "$WSJ_DIR/wsj0_wav" --list "$LISTS_DIR/mix_2_spk_tr.txt" \
        --output "$JSON_DIR/wsj0_speech_16k.json"
fi
log "done"
