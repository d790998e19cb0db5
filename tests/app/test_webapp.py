"""The web page without a browser (separation/webapp.py, app.py): the service behind the Separate button, the page
served in this process and called with gradio_client, and app.py's command line.

- the stems equal the command line's (separate.py) to 1e-4 of the peak, by the service and through /separate;
- bad requests give one readable message (no server path, no traceback) and the page serves the next request;
- uploads: the size limit, files outside Gradio's upload folder refused, Gradio's allowed paths not widened;
- two clients at once get their own, correct stems; the progress moves per chunk; closing deletes every file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.app.conftest import EXAMPLE, ROOT, assert_same_audio, free_port, read

pytest.importorskip("gradio", reason="the web page needs gradio (pip install -r requirements.txt)")
client_lib = pytest.importorskip("gradio_client", reason="scripted use needs gradio_client (installed with gradio)")

from separation.options import TASK_PRESETS, SeparationError  # noqa: E402
from separation.webapp import MAX_STEMS, Models, SeparationService, start  # noqa: E402

#: Gradio's own use of pandas (its queue's statistics)
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

CASS = " ".join(TASK_PRESETS["cass"])
SE = " ".join(TASK_PRESETS["se"])


@pytest.fixture(scope="module")
def models() -> Models:
    """The bundled models, loaded once for the module (as app.py does)."""
    return Models(["tuss.demo", "conventional.demo"], device="cpu")


@pytest.fixture
def service(models, tmp_path) -> SeparationService:
    """A service whose upload folder is ``tmp_path/uploads``."""
    svc = SeparationService(models, tmp_path / "uploads", max_upload_bytes=2**20)  # 1 MB
    yield svc
    svc.close()


def upload(service: SeparationService, source: Path | None = None, name: str = "demo_cass.wav",
           data: bytes | None = None) -> Path:
    """A file in the service's upload folder, as Gradio stores an upload (a folder of its own per file)."""
    folder = service.upload_root / f"upload-{len(list(service.upload_root.glob('upload-*')))}"
    folder.mkdir(parents=True)
    dest = folder / name
    if data is not None:
        dest.write_bytes(data)
    else:
        shutil.copy(source or EXAMPLE, dest)
    return dest


def wav_bytes(tmp_path: Path, wave: np.ndarray, rate: int = 48000) -> bytes:
    path = tmp_path / "made.wav"
    sf.write(path, wave, rate, subtype="PCM_16")
    return path.read_bytes()


# ------------------------------------------------------------------------------------------------------ the service

def test_the_stems_equal_the_command_lines(service, cli_stems):
    result = service.run(upload(service), CASS, "tuss.demo")
    cli = cli_stems["cass"]
    assert [name for name, _, _ in result.stems] == ["speech0", "sfxbg1", "musicbg2"] == list(cli)
    for name, wav, png in result.stems:
        assert_same_audio(wav, cli[name], name)
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.mixture_png.is_file() and result.residual is None
    with zipfile.ZipFile(result.archive) as zf:  # the output set separate.py writes, as it writes it
        assert sorted(zf.namelist()) == sorted(
            [f"wav/{n}.wav" for n in ("mix", *cli)] + [f"spectrogram/{n}.png" for n in ("mix", *cli)])
        with zf.open("wav/sfxbg1.wav") as f:
            assert np.array_equal(sf.read(f, dtype="float32", always_2d=True)[0], read(result.stems[1][1]))
    assert not (result.folder / "wav" / "mix.wav").exists()  # zipped, then removed: the page shows the upload
    assert result.folder.is_relative_to(service.work_root)
    assert "**3 stems** of `demo_cass.wav` by **tuss.demo**" in result.status and "in one pass; mono" in result.status


def test_the_page_chunks_long_files_by_default_as_separate_py_shifts(service, models):
    sep = models.get("tuss.demo")
    opts = service.request_options(sep, CASS, 6.0, None, False, "all", 0, False)  # the page's defaults
    assert opts.css == (6 * 48000, 3 * 48000) and opts.ref_channel is None and opts.prompts == tuple(CASS.split())
    assert opts.num_passes(10 * 60 * 48000, 48000, 2) == 2 * 199  # a 10-minute stereo file: 199 chunks a channel
    assert opts.num_passes(6 * 48000, 48000, 1) == 1  # the bundled example: one pass, as separate.py's default
    one = service.request_options(sep, "sfx, sfx sfx", 0, None, True, "one", 1, True)
    assert one.css is None and one.ref_channel == 1 and one.residual and one.prompts == ("sfx",) * 3
    assert service.request_options(sep, CASS, 8, 2, True, "all", 0, False).css == (8 * 48000, 2 * 48000)


def test_a_model_without_prompts_ignores_the_prompt_box_and_options_add_the_residual(service, models):
    result = service.run(upload(service), "whatever is here", "conventional.demo", residual=True)
    assert [name for name, _, _ in result.stems] == ["output0", "output1", "output2", "output3"]
    wav, png = result.residual
    mix = read(EXAMPLE)
    total = sum(read(w) for _, w, _ in result.stems)
    assert np.abs(read(wav) - (mix - total)).max() <= 5 / 32768  # 5 files of 16-bit PCM: 1 LSB each at most
    assert png.is_file() and "takes no prompts" in result.status


BAD_REQUESTS = {  # name: (what to upload, prompts, model, form options, what the message says)
    "unknown prompt": ("example", "speech piano", "tuss.demo", {}, "unknown prompt(s) piano; this model knows: "),
    "too short": ("short", CASS, "tuss.demo", {}, "demo_cass.wav is too short to separate: 100 samples"),
    "not audio": ("text", CASS, "tuss.demo", {}, "demo_cass.wav is not a readable audio file"),
    "silence": ("silence", CASS, "tuss.demo", {}, "demo_cass.wav is all zeros: nothing to separate"),
    "over the limit": ("big", CASS, "tuss.demo", {}, "demo_cass.wav is 1.1 MB; this page takes files up to 1 MB"),
    "no audio": (None, CASS, "tuss.demo", {}, "no audio: upload a file or record one first"),
    "a server file": ("server", CASS, "tuss.demo", {}, "demo_cass.wav is not an uploaded file"),
    "unknown model": ("example", CASS, "tuss.large", {}, "unknown model 'tuss.large'; this page offers: tuss.demo"),
    "too many prompts": ("example", "sfx " * 9, "tuss.demo", {}, f"9 prompts: this page shows at most {MAX_STEMS}"),
    "no prompts": ("example", " ", "tuss.demo", {}, "no prompts given; this model knows: speech, sfx"),
    "bad chunk": ("example", CASS, "tuss.demo", {"segment": -1},
                  "the chunk length (--css_segment_size) must be a finite number of seconds > 0, got -1"),
    "bad channel": ("example", CASS, "tuss.demo", {"channels": "one", "ref_channel": 2},
                    "the channel (--ref_channel) 2 is out of range: demo_cass.wav has 1 channel(s)"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_one_readable_message_and_leaves_nothing(service, tmp_path, case):
    what, prompts, model, form, message = BAD_REQUESTS[case]
    rng = np.random.default_rng(0)
    audio = {
        None: None, "example": lambda: upload(service), "server": lambda: EXAMPLE,
        "short": lambda: upload(service, data=wav_bytes(tmp_path, 0.1 * rng.standard_normal(100))),
        "text": lambda: upload(service, data=b"this is not audio\n" * 50),
        "silence": lambda: upload(service, data=wav_bytes(tmp_path, np.zeros(48000))),
        "big": lambda: upload(service, data=wav_bytes(tmp_path, 0.1 * rng.standard_normal(600_000))),
    }[what]
    with pytest.raises(SeparationError) as info:
        service.run(audio() if audio else None, prompts, model, **form)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text and str(tmp_path) not in text and "Traceback" not in text  # no server path
    assert not list(service.work_root.iterdir())  # no request folder left behind


def test_cleanup_removes_emptied_request_folders_and_the_work_folder(service):
    result = service.run(upload(service), SE, "tuss.demo")
    kept = service.upload_root / "kept.txt"  # not the service's: never touched
    kept.write_text("x")
    service.sweep()
    assert result.folder.is_dir()  # its files are still served
    for path in result.folder.rglob("*"):  # what Gradio's delete_cache does to the files it served
        if path.is_file():
            path.unlink()
    service.sweep()
    assert not result.folder.exists() and service.work_root.is_dir()
    service.close()
    assert not service.work_root.exists() and kept.read_text() == "x"


# --------------------------------------------------------------------------------------- the page, in this process

@pytest.fixture(scope="module")
def page(models, tmp_path_factory):
    """The page served in this process on a free port (upload limit 1 MB, two requests at once), its Gradio cache
    in a folder of its own."""
    cache = tmp_path_factory.mktemp("gradio_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(cache))
        served = start(models, port=free_port(), max_upload_mb=1, concurrency=2)
        served.cache = cache
        try:
            yield served
        finally:
            served.close()


def predict(page, audio: Path, prompts: str, model: str = "tuss.demo", *rest):
    """The README's gradio_client call."""
    client = client_lib.Client(page.url, verbose=False)
    return client.predict(client_lib.handle_file(str(audio)), prompts, model, *rest, api_name="/separate")


def test_gradio_client_gets_the_command_lines_stems(page, cli_stems):
    out = predict(page, EXAMPLE, CASS)
    status, archive, players = out[0], out[1], out[2:2 + MAX_STEMS]
    assert status.startswith("**3 stems** of `demo_cass.wav` by **tuss.demo**")
    assert players[3:] == (None,) * (MAX_STEMS - 3) and out[-2:] == (None, None)  # no residual asked for
    for path, (name, cli) in zip(players[:3], cli_stems["cass"].items(), strict=True):
        assert Path(path).name == f"{name}.wav"
        assert_same_audio(path, cli, name)
    assert Path(archive).name == "demo_cass_separated.zip"
    pictures = out[2 + MAX_STEMS:2 + MAX_STEMS + 4]  # the mixture's, then the stems'
    assert [Path(p).name for p in pictures] == ["mix.png", "speech0.png", "sfxbg1.png", "musicbg2.png"]


def test_two_clients_at_once_get_their_own_stems(page, cli_stems):
    results: dict[str, tuple] = {}

    def call(task: str) -> None:
        results[task] = predict(page, EXAMPLE, " ".join(TASK_PRESETS[task]))

    threads = [threading.Thread(target=call, args=(task,)) for task in ("cass", "se")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(results) == {"cass", "se"}
    for task, out in results.items():
        stems = [p for p in out[2:2 + MAX_STEMS] if p is not None]
        assert [Path(p).stem for p in stems] == list(cli_stems[task])
        for path, (name, cli) in zip(stems, cli_stems[task].items(), strict=True):
            assert_same_audio(path, cli, f"{task} {name}")


def test_an_error_is_a_message_and_the_page_serves_the_next_request(page, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n" * 50)
    with pytest.raises(client_lib.exceptions.AppError) as info:
        predict(page, bad, CASS)
    assert str(info.value).startswith("notes.wav is not a readable audio file")
    assert str(page.cache) not in str(info.value)
    with pytest.raises(client_lib.exceptions.AppError, match=r"^unknown prompt\(s\) piano"):
        predict(page, EXAMPLE, "speech piano")
    out = predict(page, EXAMPLE, SE)  # still serving
    assert [Path(p).stem for p in out[2:4]] == ["speech0", "sfxbg1"] and out[4] is None


def test_uploads_over_the_limit_are_refused(page, tmp_path):
    import httpx

    big = tmp_path / "big.wav"
    sf.write(big, 0.1 * np.random.default_rng(0).standard_normal(600_000), 48000, subtype="PCM_16")  # 1.1 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):  # by the client
        predict(page, big, CASS)
    with big.open("rb") as f:  # by the server, whatever the client
        reply = httpx.post(f"{page.url}gradio_api/upload", files={"files": ("big.wav", f, "audio/wav")}, timeout=30)
    assert (reply.status_code, reply.text) == (413, "File size exceeded maximum allowed size of 1048576 bytes.")


def test_the_page_opens_no_server_file_a_client_names(page):
    import httpx

    before = set(page.service.work_root.iterdir())
    base = f"{page.url}gradio_api/call/separate"
    # a FileData pointing at a file of the server, not uploaded: Gradio refuses it before the handler
    data = [{"path": str(EXAMPLE), "meta": {"_type": "gradio.FileData"}}, CASS, "tuss.demo", 6, None, False, "all",
            0, False]
    event = httpx.post(base, json={"data": data}, timeout=30).json()["event_id"]
    with httpx.stream("GET", f"{base}/{event}", timeout=60) as stream:
        events = stream.read().decode()
    assert "event: error" in events and "event: complete" not in events
    assert set(page.service.work_root.iterdir()) == before  # the handler never ran
    # the file route serves Gradio's cache only: the repository (the working folder) is not served
    for path in (ROOT / "README.md", EXAMPLE, ROOT / "pretrained_models" / "tuss.demo" / "hparams.yaml"):
        assert httpx.get(f"{page.url}gradio_api/file={path}", timeout=30).status_code == 403


def test_a_port_in_use_is_one_message(page, models):
    port = int(page.url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(OSError) as info:
        start(models, port=port)
    assert str(info.value) == (f"cannot listen on 127.0.0.1:{port}: the port is in use (or not allowed here); "
                               "choose another with --port")


def test_the_progress_moves_per_chunk(page):
    client = client_lib.Client(page.url, verbose=False)
    job = client.submit(client_lib.handle_file(str(EXAMPLE)), CASS, "tuss.demo", 1.0, 0.5,
                        api_name="/separate")  # 1-s chunks every 0.5 s: 11 chunks
    seen = set()
    while not job.done():
        for unit in job.status().progress_data or []:
            seen.add((unit.index, unit.length, unit.unit))
        time.sleep(0.01)
    assert "11 chunks of 1 s every 0.5 s" in job.result()[0]
    assert {(length, unit) for _, length, unit in seen} == {(11, "chunk")}
    assert len({index for index, _, _ in seen}) >= 2, f"the progress did not move: {sorted(seen)}"


def test_closing_the_page_deletes_its_files(page):
    predict(page, EXAMPLE, SE)
    assert any(p.is_file() for p in page.cache.rglob("*"))
    page.close()  # the module's last test: the fixture's close is then a no-op
    assert not [p for p in page.cache.rglob("*") if p.is_file()]
    assert not page.service.work_root.exists()


# ----------------------------------------------------------------------------------------- app.py's command line

def run_app(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_and_option_errors_answer_before_torch_and_gradio_are_imported():
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, 'torch' in sys.modules, 'gradio' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.stdout.splitlines()[-1] == "0 False False"
    for option in ("--ckpt_path", "--host", "--port", "--share", "--device", "--max_upload_mb", "--concurrency"):
        assert option in proc.stdout
    for args, message in ((["--port", "0"], "error: --port must be 1..65535, got 0\n"),
                          (["--concurrency", "0"], "error: --concurrency must be at least 1, got 0\n"),
                          (["--max_upload_mb", "-5"], "error: --max_upload_mb must be a number of megabytes > 0, "
                                                      "got -5\n"),
                          (["--ckpt_path", "tuss.large"], "error: --ckpt_path tuss.large: no such file, folder or "
                                                          "bundled model (bundled: tuss.demo, conventional.demo)\n")):
        proc = run_app(*args)
        assert (proc.returncode, proc.stderr) == (2, message)


def test_another_host_is_warned_about_and_a_bad_device_is_a_usage_error():
    proc = run_app("--host", "0.0.0.0", "--device", "gpu")
    assert proc.returncode == 2
    warning, error = proc.stderr.splitlines()
    assert warning == ("warning: --host 0.0.0.0: anyone who can reach this address can use the page (upload files "
                       "and run separations on this machine)")
    assert error.startswith("error: --device gpu: not a device name (") and error.endswith("cuda:N or mps")
