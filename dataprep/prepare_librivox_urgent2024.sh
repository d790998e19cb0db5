#!/usr/bin/env bash
# LibriVox read speech of DNS Challenge 5 (URGENT 2024 recipe) -> datasets/json_files/librivox_urgent2024.json.
# Download about 131 GB, plus about 187 GB of resampled copies. Steps (see dataprep/build_librivox.py):
#   download + extract -> bandwidth estimates -> resample -> VAD filter (pip install webrtcvad==2.0.10)
#   -> DNSMOS filter (needs DNSMOS scores you computed; LIBRIVOX_NO_DNSMOS=1 skips the filter) -> manifest.
# Keep DNS5_DIR at ./dns5_fullband if you use the release's bandwidth file: its paths start with dns5_fullband/.
# The corpus, its layout on disk and the manifest: docs/corpora.md §7.
# Usage, from the repository root: bash dataprep/prepare_librivox_urgent2024.sh   (settings: see dataprep/lib.sh)
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DNS5_DIR="${DNS5_DIR:-$DATA_ROOT/dns5_fullband}"
HEADSET_DIR="$DNS5_DIR/Track1_Headset"
BASE_URL="https://dnschallengepublic.blob.core.windows.net/dns5archive/V5_training_dataset/Track1_Headset"
BANDWIDTH="$DATAFILES_DIR/dns5_clean_read_speech.json.gz"
RESAMPLED_SCP="$DATAFILES_DIR/dns5_clean_read_speech_resampled.scp"
VAD_SCP="$DATAFILES_DIR/dns5_clean_read_speech_resampled_filtered_vad.scp"
DNSMOS_JSON="$DATAFILES_DIR/dns5_clean_read_speech_resampled_dnsmos.json"
DNSMOS_SCP="$DATAFILES_DIR/dns5_clean_read_speech_resampled_filtered_dnsmos.scp"

# The release skips the download whenever Track1_Headset exists, even after an interrupted run; here a marker
# written after a complete extraction decides (touch it if you linked a complete copy made otherwise).
if [[ -f "$HEADSET_DIR/download.done" ]]; then
    skip "download and extract DNS5 read speech ($HEADSET_DIR/download.done exists)"
else
    parts=()
    for suffix in aa ab ac ad ae af ag ah ai aj ak al am an ao ap aq ar as at au; do
        fetch "$BASE_URL/read_speech.tgz.part$suffix" "$HEADSET_DIR/read_speech.tgz.part$suffix"
        parts+=("$HEADSET_DIR/read_speech.tgz.part$suffix")
    done
    step "extract read_speech.tgz.part* into $HEADSET_DIR (at most 5000 files per folder)"
    cat "${parts[@]}" | run_python dataprep.build_librivox extract --dest "$HEADSET_DIR"
    touch "$HEADSET_DIR/download.done"
    log "you may now delete $HEADSET_DIR/read_speech.tgz.part*"
fi

if [[ -f "$BANDWIDTH" ]]; then
    skip "bandwidth estimation ($BANDWIDTH exists)"
else
    step "estimate bandwidths (the release's dns5_clean_read_speech.json.gz was not found at $BANDWIDTH)"
    run_python dataprep.build_librivox bandwidth --audio_dir "$HEADSET_DIR" --output "$BANDWIDTH" --jobs "$JOBS"
fi

if [[ -f "$RESAMPLED_SCP" ]]; then
    skip "resampling ($RESAMPLED_SCP exists)"
else
    step "resample to the estimated bandwidth"
    run_python dataprep.build_librivox resample --bandwidth "$BANDWIDTH" --dns5_dir "$DNS5_DIR" \
        --out_dir "$HEADSET_DIR/resampled/clean/read_speech" --output "$RESAMPLED_SCP" --jobs "$JOBS"
fi

if [[ -f "$VAD_SCP" ]]; then
    skip "VAD filter ($VAD_SCP exists)"
else
    step "VAD filter (webrtcvad)"
    run_python dataprep.build_librivox vad --input "$RESAMPLED_SCP" --output "$VAD_SCP" --jobs "$JOBS"
fi

final_scp="$DNSMOS_SCP"
if [[ -f "$DNSMOS_SCP" ]]; then
    skip "DNSMOS filter ($DNSMOS_SCP exists)"
elif [[ "${LIBRIVOX_NO_DNSMOS:-0}" == 1 ]]; then
    log "WARNING: LIBRIVOX_NO_DNSMOS=1: no BAK >= 3.0 filter; the pool is larger and noisier than the published one"
    final_scp="$VAD_SCP"
else
    if [[ ! -f "$DNSMOS_JSON" && -f "$DNSMOS_JSON.gz" ]]; then
        step "gunzip DNSMOS scores"
        gunzip -k "$DNSMOS_JSON.gz"
    fi
    step "DNSMOS filter (BAK >= 3.0)"
    run_python dataprep.build_librivox dnsmos --input "$VAD_SCP" --scores "$DNSMOS_JSON" --output "$DNSMOS_SCP"
fi

if manifests_missing librivox_urgent2024.json; then
    step "build librivox_urgent2024.json"
    run_python dataprep.build_librivox manifest --input "$final_scp" --output "$JSON_DIR/librivox_urgent2024.json"
fi
log "done"
