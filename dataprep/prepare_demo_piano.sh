#!/usr/bin/env bash
# The piano fine-tuning corpus (docs/finetuning.md): songs with a piano stem rendered like the demo corpus's music,
# laid out as a folder corpus with links to the demo corpus's train speech, sfxbg and piano-free music stems, and its
# manifests -> datasets/json_files/demo_piano_pools.json and demo_piano.json.
#
# Usage, from the repository root (after bash dataprep/prepare_demo.sh):
#   bash dataprep/prepare_demo_piano.sh [--seed N] [--demo DIR] [--out DIR] [--jobs N]
#     --seed N   random seed (default 0): the same seed gives the same corpus
#     --demo DIR the demo corpus (default: demo)
#     --out DIR  corpus folder (default: demo_piano); manifests go to $JSON_DIR (default: datasets/json_files)
#     --jobs N   songs rendered in parallel (default: number of CPUs)
# Settings: JSON_DIR, PYTHON (see dataprep/lib.sh), SOUNDFONT (default /usr/share/sounds/sf2/TimGM6mb.sf2).
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '6,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

SEED=0
DEMO=demo
OUT=demo_piano
PIANO_JOBS="$(nproc 2>/dev/null || echo 2)"
SOUNDFONT="${SOUNDFONT:-/usr/share/sounds/sf2/TimGM6mb.sf2}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seed | --jobs)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { usage >&2; die "$1 needs a non-negative integer, got '${2:-}'"; }
            if [[ "$1" == --seed ]]; then SEED="$2"; else PIANO_JOBS="$2"; fi
            shift
            ;;
        --demo | --out)
            [[ -n "${2:-}" ]] || { usage >&2; die "$1 needs a folder"; }
            if [[ "$1" == --demo ]]; then DEMO="$2"; else OUT="$2"; fi
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument '$1'"
            ;;
    esac
    shift
done

step "check the demo corpus and FluidSynth"
[[ -f "$DEMO/music/index.json" ]] || die "no demo corpus in $DEMO: run bash dataprep/prepare_demo.sh first"
need_tool fluidsynth "render the songs" "PATH (apt-get install fluidsynth)"
[[ -f "$SOUNDFONT" ]] || die "soundfont $SOUNDFONT not found (apt-get install timgm6mb-soundfont, or set SOUNDFONT)"

if manifests_missing demo_piano_pools.json demo_piano.json; then
    step "build $OUT and its manifests"
    run_python dataprep.build_demo_piano --demo "$DEMO" --out "$OUT" --json-dir "$JSON_DIR" --seed "$SEED" \
        --jobs "$PIANO_JOBS" --soundfont "$SOUNDFONT"
fi
log "done: python -m datasets.manifest check --prompts piano $JSON_DIR/demo_piano_pools.json $JSON_DIR/demo_piano.json"
