#!/usr/bin/env bash
# Reuse corpora already on disk: link each existing folder to the name a dataprep/prepare_*.sh script expects, so
# that nothing is downloaded again (the scripts skip every step whose output exists).
#
# EDIT ME: replace each <path to ...> with the folder on your system and comment out (#) the corpora you do not
# have; the script refuses to run while a placeholder is left. Run it from the repository root:
#   bash create_symlinks.sh
# Links are created in $DATA_ROOT (default: the repository root). Existing names are left alone.
#
# Write access is needed in demand, dns5_fullband, wham_noise_48k and vctk_demand: their builders write new audio
# (windows, resampled files, noise = noisy - clean) inside them.
set -euo pipefail
DATA_ROOT="${DATA_ROOT:-.}"

link() {  # link TARGET NAME
    local target="$1" name="$DATA_ROOT/$2"
    if [[ "$target" == "<"* ]]; then
        echo "create_symlinks.sh: edit me first: replace '$target' (for $2) or comment the line out" >&2
        exit 1
    fi
    [[ -d "$target" ]] || { echo "create_symlinks.sh: $target (for $2) is not a directory" >&2; exit 1; }
    if [[ -e "$name" || -L "$name" ]]; then
        echo "create_symlinks.sh: $name exists, left as it is"
        return 0
    fi
    mkdir -p "$(dirname "$name")"
    ln -s "$(cd "$target" && pwd)" "$name"
    echo "create_symlinks.sh: $name -> $target"
}

link "<path to the parent of VCTK-Corpus>" vctk                               # VCTK-Corpus/wav48_silence_trimmed
link "<path to the parent of DKITCHEN, DLIVING, ...>" demand                   # write access needed
link "<path to the parent of clean_testset_wav, noisy_testset_wav, ...>" vctk_demand  # write access needed
link "<path to the LDC WSJ0 folder holding 11-1.1, 11-2.1, ...>" wsj/wsj0      # wsj1 is not used
link "<path to the parent of high_res_wham>" wham_noise_48k                    # write access needed
link "<path to the WHAMR! folder holding metadata, wav8k, wav16k>" whamr
link "<path to the parent of Track1_Headset>" dns5_fullband                    # write access needed
link "<path to the parent of the FSD50K.* folders>" fsd50k
link "<path to the parent of fma_metadata and fma_medium>" fma                 # fma_medium, not fma_large
link "<path to the parent of dnr_v2>" dnr
link "<path to the parent of ssdata>" fuss                                     # FUSS_ssdata, not fsd_data
link "<path to the parent of musdbhq (which holds train and test)>" musdb18
link "<path to the parent of moisesdb_v0.1>" moisesdb/moisesdb
