# shellcheck shell=bash
# Helpers shared by dataprep/prepare_*.sh (sourced by them, never run on its own).
#
# Every step either runs or prints "skip: ..." when its output is already there, so a script can be re-run after an
# interruption or after linking existing copies with create_symlinks.sh. Downloads resume (wget -c into FILE.part,
# renamed when complete); archives are extracted into DEST/.extract_tmp and then moved into place, so a half
# extraction is never mistaken for a finished one.
#
# Environment (defaults in brackets):
#   DATA_ROOT [.]                        where the corpus folders are created (vctk, demand, ...)
#   JSON_DIR [./datasets/json_files]     where the manifests are written
#   DATAFILES_DIR [./dataprep/datafiles] helper downloads (wsj0-2mix lists, AudioSet ontology, LibriVox lists)
#   PYTHON [python]  WGET [wget]  UNZIP [unzip]  ZIP [zip]  SEVENZ [7z]  TAR [tar]  GIT [git]  SHA1SUM [sha1sum]
#   JOBS [4]                             worker processes of the builders that decode much audio

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_ROOT="${DATA_ROOT:-.}"
JSON_DIR="${JSON_DIR:-./datasets/json_files}"
DATAFILES_DIR="${DATAFILES_DIR:-./dataprep/datafiles}"
PYTHON="${PYTHON:-python}"
WGET="${WGET:-wget}"
UNZIP="${UNZIP:-unzip}"
ZIP="${ZIP:-zip}"
SEVENZ="${SEVENZ:-7z}"
TAR="${TAR:-tar}"
GIT="${GIT:-git}"
SHA1SUM="${SHA1SUM:-sha1sum}"
JOBS="${JOBS:-4}"
SCRIPT_NAME="$(basename "$0" .sh)"
STEP="start-up"

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() {
    printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}
skip() { log "skip: $*"; }
step() {
    STEP="$*"
    log "step: $*"
}
on_error() { printf '[%s] ERROR: step "%s" failed (exit status %s)\n' "$SCRIPT_NAME" "$STEP" "$1" >&2; }
trap 'on_error $?' ERR

# need_tool CMD PURPOSE VAR: stop unless CMD can be run.
need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is needed to $2 but was not found: install it or set $3"
}

# run_python MODULE ARGS...: a builder module, run from the repository checkout this script belongs to.
run_python() {
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m "$@"
}

# fetch URL DEST: resumable download; skipped when DEST exists and is not empty.
fetch() {
    local url="$1" dest="$2"
    if [[ -s "$dest" ]]; then
        skip "download $(basename "$dest") ($dest exists)"
        return 0
    fi
    need_tool "$WGET" "download $url" WGET
    step "download $(basename "$dest")"
    mkdir -p "$(dirname "$dest")"
    "$WGET" -c -O "$dest.part" "$url"
    mv "$dest.part" "$dest"
}

# have DIR ENTRY...: true when every DIR/ENTRY exists.
have() {
    local dir="$1"
    shift
    local entry
    for entry in "$@"; do
        [[ -e "$dir/$entry" ]] || return 1
    done
}

# extract KIND ARCHIVE DEST ENTRY...: unpack ARCHIVE (zip, tar or 7z) into DEST; skipped when every DEST/ENTRY
# exists. Entries are moved into place only once the whole archive is unpacked.
extract() {
    local kind="$1" archive="$2" dest="$3"
    shift 3
    if have "$dest" "$@"; then
        skip "extract $(basename "$archive") ($dest/$1 exists)"
        return 0
    fi
    step "extract $(basename "$archive") into $dest"
    [[ -f "$archive" ]] || die "$archive not found (needed to create $dest/$1)"
    local tmp="$dest/.extract_tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    case "$kind" in
        zip)
            need_tool "$UNZIP" "extract $archive" UNZIP
            UNZIP_DISABLE_ZIPBOMB_DETECTION=1 "$UNZIP" -q -o "$archive" -d "$tmp"
            ;;
        tar)
            need_tool "$TAR" "extract $archive" TAR
            "$TAR" -xf "$archive" -C "$tmp"
            ;;
        7z)
            need_tool "$SEVENZ" "extract $archive (apt-get install 7zip, or p7zip-full)" SEVENZ
            "$SEVENZ" x -y -o"$tmp" "$archive" >/dev/null
            ;;
        *) die "unknown archive kind $kind" ;;
    esac
    local entry name
    for entry in "$tmp"/* "$tmp"/.[!.]*; do
        [[ -e "$entry" ]] || continue
        name="$(basename "$entry")"
        if [[ -e "$dest/$name" ]]; then
            log "keeping existing $dest/$name"
        else
            mv "$entry" "$dest/$name"
        fi
    done
    rm -rf "$tmp"
    have "$dest" "$@" || die "$archive did not contain the expected $* (is it the right file?)"
}

# fetch_extract KIND URL ARCHIVE DEST ENTRY...: fetch then extract, both skipped when the entries exist.
fetch_extract() {
    local kind="$1" url="$2" archive="$3" dest="$4"
    shift 4
    if have "$dest" "$@"; then
        skip "download and extract $(basename "$archive") ($dest/$1 exists)"
        return 0
    fi
    fetch "$url" "$archive"
    extract "$kind" "$archive" "$dest" "$@"
}

# manifests_missing NAME...: true (0) when one of JSON_DIR/NAME is missing; prints a skip message otherwise.
manifests_missing() {
    local name
    for name in "$@"; do
        [[ -f "$JSON_DIR/$name" ]] || return 0
    done
    skip "build $* (exists; delete it to regenerate)"
    return 1
}

mkdir -p "$JSON_DIR"
