#!/usr/bin/env bash
# Offline demo corpus (no download but Debian packages): synthetic speech (flite, espeak-ng), sound effects of sound
# themes and game data, FluidSynth-rendered music stems of procedurally composed songs; source pools and fixed
# validation/test mixtures for CASS, MSS, SS, USS and SE -> datasets/json_files/demo_{pools,cass,mss,ss,uss,se}.json.
#
# Usage, from the repository root:
#   bash dataprep/prepare_demo.sh [--small] [--seed N] [--out DIR] [--jobs N] [--install]
#     --small    a few clips per class (CI; seconds, fewer apt packages)
#     --seed N   random seed (default 0): the same seed gives the same corpus, byte for byte
#     --out DIR  corpus folder (default: demo); manifests go to $JSON_DIR (default: datasets/json_files)
#     --jobs N   parallel synthesis/rendering (default: number of CPUs)
#     --install  apt-get install the missing Debian packages (also INSTALL_DEPS=1); otherwise they are listed
# Settings: JSON_DIR, PYTHON (see dataprep/lib.sh), SOUNDFONT (default /usr/share/sounds/sf2/TimGM6mb.sf2).
# Steps whose output exists (<out>/<step>/index.json) are skipped; the full build also writes examples/demo_cass.wav
# unless it exists.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then bash "${BASH_SOURCE[0]}" "$@"; return $?; fi  # sourced: run in a child
set -Eeuo pipefail
# shellcheck source=dataprep/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '6,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

SMALL=0
SEED=0
OUT=demo
DEMO_JOBS="$(nproc 2>/dev/null || echo 2)"
INSTALL_DEPS="${INSTALL_DEPS:-0}"
SOUNDFONT="${SOUNDFONT:-/usr/share/sounds/sf2/TimGM6mb.sf2}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --small) SMALL=1 ;;
        --seed)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { usage >&2; die "--seed needs a non-negative integer, got '${2:-}'"; }
            SEED="$2"
            shift
            ;;
        --out)
            [[ -n "${2:-}" ]] || { usage >&2; die "--out needs a folder"; }
            OUT="$2"
            shift
            ;;
        --jobs)
            [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { usage >&2; die "--jobs needs a positive integer, got '${2:-}'"; }
            DEMO_JOBS="$2"
            shift
            ;;
        --install) INSTALL_DEPS=1 ;;
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

# ---- Debian packages: PACKAGE KIND PATH (KIND: cmd = a command on PATH, path = a file or folder)
REQUIREMENTS=(
    "espeak-ng cmd espeak-ng"
    "fluidsynth cmd fluidsynth"
    "timgm6mb-soundfont path $SOUNDFONT"
    "sound-theme-freedesktop path /usr/share/sounds/freedesktop/stereo"
)
if [[ "$SMALL" == 0 ]]; then
    REQUIREMENTS+=(
        "flite cmd flite"
        "sound-icons path /usr/share/sounds/sound-icons"
        "lbreakout2-data path /usr/share/games/lbreakout2/sounds"
        "mirrormagic-data path /usr/share/games/mirrormagic/sounds"
    )
fi

missing_packages() {
    local req package kind target
    for req in "${REQUIREMENTS[@]}"; do
        read -r package kind target <<<"$req"
        if [[ "$kind" == cmd ]]; then
            command -v "$target" >/dev/null 2>&1 || echo "$package"
        else
            [[ -e "$target" ]] || echo "$package"
        fi
    done
}

step "check Debian packages"
mapfile -t MISSING < <(missing_packages)
if [[ ${#MISSING[@]} -gt 0 ]]; then
    if [[ "$INSTALL_DEPS" != 1 ]]; then
        die "missing Debian package(s): ${MISSING[*]}. Install them with: sudo apt-get install --no-install-recommends" \
            "${MISSING[*]}  (or run this script with --install, or INSTALL_DEPS=1)"
    fi
    need_tool apt-get "install ${MISSING[*]}" "INSTALL_DEPS=0 and install them yourself"
    SUDO=()
    [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
    step "apt-get install ${MISSING[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
    mapfile -t MISSING < <(missing_packages)
    [[ ${#MISSING[@]} -eq 0 ]] || die "still missing after apt-get install: ${MISSING[*]}"
fi

# ---- build: one Python run for every step not done yet (in a folder of the same seed and size)
SETTINGS="{\"format\": 1, \"seed\": $SEED, \"small\": $([[ "$SMALL" == 1 ]] && echo true || echo false)}"
if [[ -f "$OUT/settings.json" && "$(cat "$OUT/settings.json")" != "$SETTINGS" ]]; then
    die "$OUT holds a corpus built with other settings ($(cat "$OUT/settings.json"), not $SETTINGS): delete it or" \
        "choose another --out"
fi
ARGS=(--out "$OUT" --seed "$SEED" --jobs "$DEMO_JOBS" --json-dir "$JSON_DIR" --soundfont "$SOUNDFONT")
[[ "$SMALL" == 1 ]] && ARGS+=(--small)
TODO=()
for s in speech sfx music sfxbg mixtures; do
    if [[ -f "$OUT/$s/index.json" ]]; then
        skip "$s ($OUT/$s/index.json exists; delete $OUT/$s to rebuild it)"
    else
        TODO+=("$s")
    fi
done
MANIFESTS=(demo_pools.json demo_cass.json demo_mss.json demo_ss.json demo_uss.json demo_se.json)
fresh=1
for name in "${MANIFESTS[@]}"; do
    [[ -f "$JSON_DIR/$name" && "$JSON_DIR/$name" -nt "$OUT/mixtures/index.json" ]] || fresh=0
done
if [[ "$fresh" == 1 && ${#TODO[@]} -eq 0 ]]; then
    skip "manifests ($JSON_DIR/demo_*.json are newer than the corpus)"
else
    TODO+=(manifests)
fi
EXAMPLE="$REPO_ROOT/examples/demo_cass.wav"
if [[ "$SMALL" == 0 ]]; then
    if [[ -f "$EXAMPLE" ]]; then
        skip "example ($EXAMPLE exists)"
    else
        TODO+=(example)
        ARGS+=(--example "$EXAMPLE")
    fi
fi
if [[ ${#TODO[@]} -gt 0 ]]; then
    step "build ${TODO[*]} in $OUT (seed $SEED$([[ "$SMALL" == 1 ]] && echo ", small"))"
    run_python dataprep.build_demo "${ARGS[@]}" --step "${TODO[@]}"
fi
log "done: corpus in $OUT ($(du -sh "$OUT" | cut -f1)); check it with: python -m datasets.manifest check" \
    "$JSON_DIR/demo_*.json"
