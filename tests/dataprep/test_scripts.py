"""The shell scripts: syntax, shellcheck, skipping finished steps (offline, with a fake wget on PATH), clear stops for
what must be obtained by hand, corpus selection in dataprep.sh, and the create_symlinks.sh template."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "dataprep").glob("*.sh")) + [ROOT / "create_symlinks.sh"]
CORPORA = ["vctk_speech", "demand_noise", "vctk_demand", "wsj0_speech", "wham_noise", "whamr", "librivox_urgent2024",
           "fsd50k_noise", "fma_noise", "dnr", "fuss", "musdb", "moisesdb"]
FAKE_WGET = """#!/usr/bin/env bash
# Offline stand-in for wget: copies $FAKE_WGET_SRC/<URL file name> to the -O target and logs the URL.
out="" url=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -O) out="$2"; shift 2 ;;
        -*) shift ;;
        *) url="$1"; shift ;;
    esac
done
echo "$url" >>"$FAKE_WGET_LOG"
name="${url%%\\?*}"
name="${name##*/}"
[[ -f "$FAKE_WGET_SRC/$name" ]] || { echo "fake wget: 404 $url" >&2; exit 8; }
cp "$FAKE_WGET_SRC/$name" "$out"
"""


def test_every_prepare_script_exists():
    # the 13 corpora of the release, plus the offline demo corpora (not part of dataprep.sh)
    assert sorted(p.name for p in (ROOT / "dataprep").glob("prepare_*.sh")) == sorted(
        f"prepare_{name}.sh" for name in [*CORPORA, "demo", "demo_piano"])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install -y shellcheck)")
def test_shellcheck():
    result = subprocess.run(["shellcheck", "-x", *[str(p.relative_to(ROOT)) for p in SCRIPTS]], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def offline(tmp_path):
    """Environment for running the scripts offline: a fake wget first on PATH, data and manifests in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wget").write_text(FAKE_WGET)
    (bin_dir / "wget").chmod(0o755)
    (tmp_path / "src").mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8",
           "DATA_ROOT": str(tmp_path / "data"), "JSON_DIR": str(tmp_path / "json"),
           "DATAFILES_DIR": str(tmp_path / "datafiles"), "PYTHON": sys.executable, "JOBS": "1",
           "FAKE_WGET_SRC": str(tmp_path / "src"), "FAKE_WGET_LOG": str(tmp_path / "wget.log")}
    return tmp_path, env


def run(args, env, **kwargs):
    return subprocess.run(["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def fake_vctk_demand_zips(src: Path) -> None:
    """The four Voicebank-DEMAND zips, each with its subset folder at the top, as on the download page."""
    rng = np.random.default_rng(0)
    layout = {"trainset_28spk_wav": ["p226_001", "p230_001", "p287_002"], "testset_wav": ["p232_001", "p257_001"]}
    for subset, names in layout.items():
        for kind in ("clean", "noisy"):
            with zipfile.ZipFile(src / f"{kind}_{subset}.zip", "w") as zf:
                for name in names:
                    wav = src / "tmp.wav"
                    sf.write(wav, 0.1 * rng.standard_normal(480), 48000)
                    zf.write(wav, f"{kind}_{subset}/{name}.wav")


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_second_run_skips_every_step(offline):
    tmp_path, env = offline
    fake_vctk_demand_zips(tmp_path / "src")
    first = run(["dataprep/prepare_vctk_demand.sh"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    urls = (tmp_path / "wget.log").read_text().splitlines()
    assert len(urls) == 4 and urls[0] == ("https://datashare.ed.ac.uk/bitstream/handle/10283/2791/"
                                          "clean_trainset_28spk_wav.zip?sequence=2&isAllowed=y")
    manifest = json.loads((tmp_path / "json/vctk_demand_48k.json").read_text())
    assert list(manifest["valid"]) == ["p226_001.wav", "p287_002.wav"]
    assert list(manifest["test"]) == ["p232_001.wav", "p257_001.wav"]
    assert manifest["test"]["p232_001.wav"]["mix"] == f"{tmp_path}/data/vctk_demand/noisy_testset_wav/p232_001.wav"
    assert (tmp_path / "data/vctk_demand/noise_testset_wav/p257_001.wav").is_file()
    assert not (tmp_path / "data/vctk_demand/.extract_tmp").exists()

    second = run(["dataprep/prepare_vctk_demand.sh"], env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "wget.log").read_text().splitlines() == urls  # nothing downloaded again
    skipped = [line for line in second.stdout.splitlines() if "skip:" in line]
    assert len(skipped) == 5, second.stdout  # four downloads + extractions, and the manifest
    assert "skip: build vctk_demand_48k.json (exists; delete it to regenerate)" in skipped[-1]
    assert "step:" not in second.stdout


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_partial_work_resumes(offline):
    """A finished download is not fetched again; a half extraction (left in .extract_tmp) is redone."""
    tmp_path, env = offline
    fake_vctk_demand_zips(tmp_path / "src")
    data = tmp_path / "data/vctk_demand"
    data.mkdir(parents=True)
    shutil.copy(tmp_path / "src/clean_testset_wav.zip", data / "clean_testset_wav.zip")
    (data / ".extract_tmp/clean_testset_wav").mkdir(parents=True)
    result = run(["dataprep/prepare_vctk_demand.sh"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len((tmp_path / "wget.log").read_text().splitlines()) == 3
    assert "skip: download clean_testset_wav.zip" in result.stdout
    assert sorted(p.name for p in (data / "clean_testset_wav").iterdir()) == ["p232_001.wav", "p257_001.wav"]


def test_failed_step_is_named(offline):
    tmp_path, env = offline  # no fake archive: the fake wget answers 404
    result = run(["dataprep/prepare_vctk_speech.sh"], env)
    assert result.returncode != 0
    assert 'ERROR: step "download DS_10283_3443.zip" failed' in result.stderr
    assert not (tmp_path / "data/vctk/DS_10283_3443.zip").exists()  # only the .part file is left


@pytest.mark.parametrize("script, message", [
    ("prepare_moisesdb.sh", "MoisesDB not found at"),
    ("prepare_wsj0_speech.sh", "WSJ0 not found at"),
    ("prepare_whamr.sh", "WHAMR! not found at"),
])
def test_manual_corpora_stop_with_instructions(offline, script, message):
    tmp_path, env = offline
    result = run([f"dataprep/{script}"], env)
    assert result.returncode == 1
    assert message in result.stderr and "SKIP=" in result.stderr
    assert not (tmp_path / "wget.log").exists()  # nothing was downloaded


def test_dataprep_skip_and_selection(offline):
    tmp_path, env = offline
    others = [c for c in CORPORA if c != "moisesdb"]
    result = run(["dataprep/dataprep.sh"], {**env, "SKIP": " ".join(others)})
    assert result.returncode == 1
    assert [ln for ln in result.stdout.splitlines() if ln.startswith("[dataprep]")] == [
        *(f"[dataprep] skipping {c} (in SKIP)" for c in others), "[dataprep] === moisesdb"]
    assert "MoisesDB not found" in result.stderr and "dataprep/prepare_moisesdb.sh failed" in result.stderr
    assert (tmp_path / "json").is_dir()

    result = run(["dataprep/dataprep.sh", "whamr", "musdb"], {**env, "SKIP": "musdb"})
    assert "[dataprep] === whamr" in result.stdout and "vctk_speech" not in result.stdout
    assert result.returncode == 1 and "WHAMR! not found" in result.stderr

    result = run(["dataprep/dataprep.sh"], {**env, "SKIP": "wsj_speech"})
    assert result.returncode == 2 and "unknown corpus 'wsj_speech'" in result.stderr


def test_sourcing_does_not_touch_the_calling_shell(offline):
    _, env = offline
    result = run(["-c", ". dataprep/dataprep.sh whamr; echo \"alive $? $-\""], env)
    assert "WHAMR! not found" in result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("alive 1 ") and "e" not in last.split()[-1]  # no `set -e` leaked into the caller


def test_create_symlinks_template(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATA_ROOT": str(tmp_path / "root")}
    result = subprocess.run(["bash", str(ROOT / "create_symlinks.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "edit me first" in result.stderr
    (tmp_path / "VCTK").mkdir()
    (tmp_path / "musdbhq_parent").mkdir()
    edited = []
    for line in (ROOT / "create_symlinks.sh").read_text().splitlines():
        if line.startswith('link "<path to the parent of VCTK-Corpus>"'):
            line = line.replace("<path to the parent of VCTK-Corpus>", str(tmp_path / "VCTK"))
        elif line.startswith('link "<path to the parent of musdbhq'):
            line = f'link "{tmp_path / "musdbhq_parent"}" musdb18'
        elif line.startswith("link "):
            line = "# " + line
        edited.append(line)
    script = tmp_path / "create_symlinks.sh"
    script.write_text("\n".join(edited) + "\n")
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.readlink(tmp_path / "root/vctk") == str(tmp_path / "VCTK")
    assert os.readlink(tmp_path / "root/musdb18") == str(tmp_path / "musdbhq_parent")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["musdb18", "vctk"]


def fake_musdb_zip(src: Path) -> None:
    """musdb18hq.zip with train/ and test/ at the top (9 s songs at 8 kHz: long enough for one SAD segment)."""
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(src / "musdb18hq.zip", "w") as zf:
        for folder, song in (("train", "Actions - One Minute Smile"), ("train", "A - B"), ("test", "C - D")):
            for stem in ("mixture", "drums", "bass", "vocals", "other"):
                wav = src / "tmp.wav"
                sf.write(wav, 0.1 * rng.standard_normal((9 * 8000, 2)), 8000)
                zf.write(wav, f"{folder}/{song}/{stem}.wav")


def fake_fuss_tar(src: Path) -> None:
    """FUSS_ssdata.tar.gz with ssdata/{train,validation,eval}: one example each, 2 sources."""
    import tarfile

    with tarfile.open(src / "FUSS_ssdata.tar.gz", "w:gz") as tar:
        for folder, ex in (("train", "example00000"), ("validation", "example0000"), ("eval", "example0000")):
            for name in (f"{ex}.wav", f"{ex}_sources/background0_sound.wav", f"{ex}_sources/foreground0_sound.wav"):
                wav = src / "tmp.wav"
                sf.write(wav, 0.1 * np.random.default_rng(2).standard_normal(1600), 16000)
                tar.add(wav, f"ssdata/{folder}/{name}")


@pytest.mark.skipif(shutil.which("unzip") is None or shutil.which("tar") is None, reason="unzip or tar missing")
@pytest.mark.parametrize("corpus, make, manifests", [
    ("musdb", fake_musdb_zip, ["musdb18hq_44.1k.json", "musdb18hq_44.1k_sad.json"]),
    ("fuss", fake_fuss_tar, ["fuss_16k.json", *(f"fuss_{n}src_16k.json" for n in (1, 2, 3, 4))]),
])
def test_multi_manifest_scripts(offline, corpus, make, manifests):
    tmp_path, env = offline
    make(tmp_path / "src")
    first = run([f"dataprep/prepare_{corpus}.sh"], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.name for p in (tmp_path / "json").iterdir()) == sorted(manifests)
    if corpus == "musdb":
        sad = json.loads((tmp_path / "json/musdb18hq_44.1k_sad.json").read_text())
        assert list(sad["train"]) == ["drums", "bass", "vocals", "other"]
        assert sad["train"]["vocals"][0]["path"] == f"{tmp_path}/data/musdbhq_sad/data/A - B/vocals_0.wav"
        assert list(sad["valid"]) == ["Actions - One Minute Smile"] and list(sad["test"]) == ["C - D"]
    else:
        assert list(json.loads((tmp_path / "json/fuss_2src_16k.json").read_text())["test"]) == ["example0000"]
    (tmp_path / "json" / manifests[-1]).unlink()  # one manifest missing: only its step runs again
    second = run([f"dataprep/prepare_{corpus}.sh"], env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len((tmp_path / "wget.log").read_text().splitlines()) == 1
    assert [ln.split("] ", 1)[1] for ln in second.stdout.splitlines() if "step:" in ln] == [
        "step: build musdb18hq_44.1k_sad.json (source activity detection)" if corpus == "musdb"
        else "step: build fuss_16k.json and fuss_{1,2,3,4}src_16k.json"]
