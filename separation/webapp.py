"""The web page for separation (``python app.py``; docs/app.md): upload or record audio, pick a model and its
prompts, and listen to, look at and download the stems.

The page runs the command line's inference path: each request is one
:meth:`separation.separator.Separator.separate_file` call with :class:`separation.options.SeparationOptions` built by
:meth:`~separation.separator.Separator.options`, into a folder of its own, so its ``wav/`` and ``spectrogram/`` are
the files ``separate.py`` writes for the same model, prompts and file. Each model is loaded once, when the page
starts (:class:`Models`), and kept.

The work behind the Separate button is :class:`SeparationService` (no Gradio needed: the tests call it directly);
:func:`build_app` puts it behind a Gradio page, :func:`start` serves that page in the background and :func:`serve`
until SIGINT or SIGTERM. Gradio is imported by those only, so the rest of the project (and this module's import)
does not need it. The page's progress bar follows the ``Separator``'s progress over the chunks (its tqdm bar, which
``gr.Progress(track_tqdm=True)`` tracks).

Uploads are untrusted. Gradio stores each upload in its cache folder; the service opens only files inside that
folder (never a path a client names elsewhere), decodes them with soundfile (:mod:`utils.audio`, through the
``Separator``), refuses files over the upload limit, and writes each request's outputs into a new folder under the
same cache folder. Gradio serves them from there and deletes them with the rest of its cache (``delete_cache``:
files older than an hour, and every file at shutdown); the emptied request folders and the page's own folder are
removed by the service.

Example (no Gradio involved)::

    >>> parse_prompts(" speech, sfx  sfx ")
    ['speech', 'sfx', 'sfx']
    >>> preset_of(["speech", "sfxbg", "musicbg"]), preset_of(["sfx"])
    ('cass', 'custom')
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from separation.options import DEFAULT_CSS_SEGMENT, TASK_PRESETS, SeparationError
from utils.audio import audio_info
from utils.cli import first_line

if TYPE_CHECKING:
    import gradio as gr

    from separation.separator import Separator

__all__ = ["MAX_STEMS", "DEFAULT_MAX_UPLOAD_MB", "CACHE_CLEANUP", "CUSTOM", "parse_prompts", "preset_of", "Models",
           "Result", "SeparationService", "Page", "build_app", "start", "serve"]

log = logging.getLogger(__name__)

#: the most outputs one request may have on the page (one player and one spectrogram each)
MAX_STEMS = 8
#: ``--max_upload_mb``'s default
DEFAULT_MAX_UPLOAD_MB = 200
#: a megabyte as Gradio's upload limit counts it (``max_file_size="200mb"``: 200 x 2**20 bytes)
MB = 2**20
#: Gradio's cache cleanup (``delete_cache``): every 10 minutes, the files older than an hour
CACHE_CLEANUP = (600, 3600)
#: the task-preset choice of a prompt list that is none of the presets
CUSTOM = "custom"
#: the page's names of the options its messages name by the command line's flags
PAGE_FIELDS = {"--css_segment_size": "the chunk length", "--css_shift_size": "the chunk shift",
               "--ref_channel": "the channel"}
#: the channel choices: every channel, each separated on its own, or one (``ref_channel``)
CHANNELS = ("all", "one")


def parse_prompts(text: str | None) -> list[str]:
    """The prompt names of the page's prompt box: words separated by spaces or commas (repeats kept)."""
    return [p for p in re.split(r"[\s,]+", text or "") if p]


def preset_of(prompts: Sequence[str]) -> str:
    """The task preset (:data:`separation.options.TASK_PRESETS`) whose prompts are ``prompts``, else :data:`CUSTOM`."""
    return next((name for name, p in TASK_PRESETS.items() if list(p) == list(prompts)), CUSTOM)


class Models:
    """The models a page offers, each loaded once and kept: label -> :class:`separation.separator.Separator`.

    Args:
        ckpt_paths: what ``separate.py --ckpt_path`` takes (a bundled model's name, a checkpoint file or folder);
            the label of each is its name as given (``tuss.demo``), the first one the page's default.
        device: the device of every model (``None``: a GPU when present).
        loader: builds one model (default :class:`separation.separator.Separator`; tests pass a stand-in).

    Raises:
        SeparationError: no model, or the same label twice; the loader's errors (a missing or unusable checkpoint:
            ``ValueError`` s naming it).
    """

    def __init__(self, ckpt_paths: Sequence[str | os.PathLike], device: str | None = None,
                 loader: Callable[..., Separator] | None = None) -> None:
        if not ckpt_paths:
            raise SeparationError("no model to offer: give --ckpt_path")
        if loader is None:
            from separation.separator import Separator as loader
        self.separators: dict[str, Separator] = {}
        for path in ckpt_paths:
            label = os.fspath(path)
            if label in self.separators:
                raise SeparationError(f"--ckpt_path {label} is given twice")
            self.separators[label] = loader(path, device=device)

    @property
    def labels(self) -> list[str]:
        """The models' labels, the default first."""
        return list(self.separators)

    def get(self, label: str | None) -> Separator:
        """The model called ``label``.

        Raises:
            SeparationError: a label the page does not offer (the message lists the ones it does).
        """
        if label not in self.separators:
            raise SeparationError(f"unknown model {label!r}; this page offers: {', '.join(self.separators)}")
        return self.separators[label]

    def describe(self, label: str) -> str:
        """What the page says of a model's prompts (Markdown)."""
        sep = self.get(label)
        if sep.prompt_names is None:
            return (f"**{label}** takes no prompts: it always gives {sep.num_outputs(None)} outputs "
                    "(`output0`, `output1`, …); the prompt box is ignored.")
        names = " ".join(f"`{p}`" for p in sep.prompt_names)
        return (f"**{label}** knows the prompts {names}. List the sources to extract, separated by spaces; a prompt "
                f"may repeat (`sfx sfx sfx`: three different effects). At most {MAX_STEMS}.")


@dataclass(frozen=True)
class Result:
    """One separation's outputs on the page.

    Attributes:
        stems: ``(name, wav, spectrogram png or None)`` per output, in prompt order (``speech0``, ``sfxbg1``, …).
        mixture_png: the mixture's spectrogram; residual: ``(wav, png)`` when asked for, else ``None``.
        archive: a zip of the whole output set (``wav/`` and ``spectrogram/``, as ``separate.py`` writes them).
        status: a one-paragraph summary (Markdown); seconds: the separation's wall time; folder: the request's.
    """

    stems: list[tuple[str, Path, Path | None]]
    mixture_png: Path | None
    residual: tuple[Path, Path | None] | None
    archive: Path
    status: str
    seconds: float
    folder: Path


class SeparationService:
    """The work behind the Separate button: check a request, separate the uploaded file, collect the outputs.

    Args:
        models: the models offered.
        upload_root: the folder uploads are stored in (Gradio's cache folder); only files inside it are opened.
        max_upload_bytes: the largest file accepted.
        work_root: where each request's folder is made (default: a new folder ``tuss-app-*`` inside
            ``upload_root``, where Gradio serves and cleans files from). :meth:`close` removes it.
    """

    def __init__(self, models: Models, upload_root: str | os.PathLike, max_upload_bytes: int,
                 work_root: str | os.PathLike | None = None) -> None:
        self.models = models
        self.upload_root = Path(upload_root).resolve()
        self.max_upload_bytes = int(max_upload_bytes)
        if work_root is None:
            self.upload_root.mkdir(parents=True, exist_ok=True)
            work_root = tempfile.mkdtemp(prefix="tuss-app-", dir=self.upload_root)
        self.work_root = Path(work_root).resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: set[Path] = set()  # the folders of the requests running now (not swept)

    # ------------------------------------------------------------------------------------------------- the request

    def check_upload(self, audio: str | os.PathLike | None) -> Path:
        """The uploaded file ``audio``, checked: given, inside :attr:`upload_root`, a regular file, not over the
        upload limit (its content is the audio reader's business).

        Raises:
            SeparationError: the message says what is wrong, naming the file by its own name only.
        """
        if audio is None or not os.fspath(audio):
            raise SeparationError("no audio: upload a file or record one first")
        path = Path(audio)
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise SeparationError(f"the upload {path.name} is not available (upload it again)") from None
        if not resolved.is_relative_to(self.upload_root) or not resolved.is_file():
            raise SeparationError(f"{path.name} is not an uploaded file: only files uploaded to this page can be "
                                  "separated")
        size = resolved.stat().st_size
        if size > self.max_upload_bytes:
            raise SeparationError(f"{path.name} is {size / MB:.1f} MB; this page takes files up to "
                                  f"{self.max_upload_bytes / MB:g} MB")
        return resolved

    def request_options(self, separator: Separator, prompts_text: str | None, segment: float | None,
                        shift: float | None, align: bool, channels: str, ref_channel: float | None,
                        residual: bool):
        """The page's form as bound :class:`separation.options.SeparationOptions` for ``separator``.

        ``segment`` of ``None`` or 0 separates the file in one pass, ``shift`` of ``None`` or 0 is half the segment
        (``separate.py``'s default); ``channels`` is ``"all"`` (every channel, each on its own) or ``"one"``
        (``ref_channel`` only).

        Raises:
            SeparationError: a value that cannot work (the messages of :meth:`SeparationOptions.create` and
                :meth:`~separation.options.SeparationOptions.bind`); nets.PromptError: an unknown prompt.
        """
        prompts = parse_prompts(prompts_text) if separator.prompt_names is not None else None
        if prompts is not None and len(prompts) > MAX_STEMS:
            raise SeparationError(f"{len(prompts)} prompts: this page shows at most {MAX_STEMS} stems "
                                  "(separate.py takes more)")
        if channels not in CHANNELS:
            raise SeparationError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
        channel = None
        if channels == "one":
            if ref_channel is None or float(ref_channel) != int(ref_channel):
                raise SeparationError(f"the channel must be a whole number >= 0, got {ref_channel}")
            channel = int(ref_channel)
        return separator.options(prompts, css_segment_size=segment or None, css_shift_size=shift or None,
                                 css_solve_perm=bool(align), ref_channel=channel, residual=bool(residual))

    def run(self, audio: str | os.PathLike | None, prompts_text: str | None, model: str | None,
            segment: float | None = DEFAULT_CSS_SEGMENT, shift: float | None = None, align: bool = False,
            channels: str = "all", ref_channel: float | None = 0, residual: bool = False,
            progress: bool = False) -> Result:
        """Separate one uploaded file as the page's form says (see :meth:`request_options`) into a new folder.

        ``progress`` shows the chunks on a tqdm bar (:meth:`Separator.separate_file`), which the page's progress bar
        follows.

        Raises:
            ValueError (SeparationError, nets.PromptError, ...): the request or the file cannot be separated; the
                message names the file by its own name, never a server path.
            OSError: the outputs could not be written.
        """
        self.sweep()
        upload = self.check_upload(audio)
        try:
            separator = self.models.get(model)
            options = self.request_options(separator, prompts_text, segment, shift, align, channels, ref_channel,
                                           residual)
            with self._lock:
                folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.work_root))
                self._active.add(folder)
            start = time.perf_counter()
            try:
                written = separator.separate_file(upload, folder, options=options, progress=progress,
                                                  warn=lambda msg: log.warning("%s", self.public(msg, upload)))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            finally:
                with self._lock:
                    self._active.discard(folder)
            seconds = time.perf_counter() - start
        except ValueError as err:  # the input errors of the project (SeparationError, PromptError, AudioError)
            raise SeparationError(self.public(first_line(err), upload)) from None
        except OSError as err:  # utils.atomic.WriteError: the outputs could not be written
            raise OSError(self.public(first_line(err), upload)) from None
        return self.collect(folder, written, upload, model, options, seconds)

    def collect(self, folder: Path, written: Sequence[Path], upload: Path, model: str, options: Any,
                seconds: float) -> Result:
        """The :class:`Result` of the files one request wrote: the zip of them all; ``wav/mix.*`` itself (the
        upload, shown by the page already) is removed once zipped."""
        by_name: dict[str, dict[str, Path]] = {}
        for path in written:
            by_name.setdefault(path.stem, {})[path.parent.name] = path
        archive = folder / f"{upload.stem}_separated.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # PCM does not compress
            for path in written:
                zf.write(path, f"{path.parent.name}/{path.name}")
        mix = by_name.pop("mix", {})
        if "wav" in mix:
            mix["wav"].unlink()
        residual = by_name.pop("residual", None)
        stems = [(name, files["wav"], files.get("spectrogram")) for name, files in by_name.items()]
        separator = self.models.get(model)
        info = audio_info(upload)
        count = options.num_passes(info.num_samples, info.sample_rate, 1)
        passes = "in one pass" if count == 1 else (
            f"{count} chunks of {options.css[0] / options.model_rate:g} s every "
            f"{options.css[1] / options.model_rate:g} s" + (", aligned" if options.css_solve_perm else ""))
        channels = ("mono" if info.channels == 1 else f"each of its {info.channels} channels on its own"
                    if options.ref_channel is None else f"channel {options.ref_channel} of {info.channels}")
        status = (f"**{len(stems)} stems** of `{upload.name}` by **{model}** "
                  f"({', '.join(name for name, _, _ in stems)}; {passes}; {channels}) in {seconds:.1f} s.")
        if separator.prompt_names is None:
            status += " This model takes no prompts."
        return Result(stems=stems, mixture_png=mix.get("spectrogram"),
                      residual=None if residual is None else (residual["wav"], residual.get("spectrogram")),
                      archive=archive, status=status, seconds=seconds, folder=folder)

    def public(self, message: str, upload: Path | None = None) -> str:
        """``message`` for the page: without server paths (the upload named by its file name, the work folder as
        ``<output>``), the command line's option names with the page's."""
        for flag, field_name in PAGE_FIELDS.items():
            message = message.replace(flag, f"{field_name} ({flag})")
        if upload is not None:
            message = message.replace(str(upload), upload.name)
        message = message.replace(str(self.work_root), "<output>")
        return message.replace(str(self.upload_root), "<upload>")

    # ----------------------------------------------------------------------------------------------------- cleanup

    def sweep(self) -> None:
        """Remove the request folders whose files Gradio's cache cleanup has deleted (only folders are left)."""
        with self._lock:
            for folder in self.work_root.glob("request-*"):
                if folder not in self._active and not any(p.is_file() for p in folder.rglob("*")):
                    shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every request folder and the work folder itself."""
        shutil.rmtree(self.work_root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------- the page

def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _gradio():
    """Gradio, imported on first use, without its usage analytics (the page contacts no server)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio

    return gradio


def build_app(models: Models, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, concurrency: int = 1,
              upload_root: str | os.PathLike | None = None) -> tuple[gr.Blocks, SeparationService]:
    """The Gradio page and the service behind it (``service.close()`` once the page is closed).

    The Separate button is the API endpoint ``/separate``: inputs ``audio, prompts, model, segment, shift, align,
    channels, ref_channel, residual`` (only the first three needed; see docs/app.md), outputs ``status, archive``,
    then :data:`MAX_STEMS` stem players, the mixture's spectrogram, :data:`MAX_STEMS` stem spectrograms, the residual
    and its spectrogram (``None`` where unused). Requests queue, ``concurrency`` at a time.
    """
    gr = _gradio()
    labels = models.labels
    first_prompts = models.get(labels[0]).prompt_names is not None
    blocks = gr.Blocks(title="TUSS: separate audio", analytics_enabled=False, delete_cache=CACHE_CLEANUP)
    service = SeparationService(models, upload_root or blocks.GRADIO_CACHE, int(max_upload_mb * MB))

    def model_changed(label: str) -> tuple[Any, Any]:
        sep = models.get(label)
        return models.describe(label), gr.Textbox(interactive=sep.prompt_names is not None)

    def separate(audio: str | None, prompts: str, model: str, segment: float | None = DEFAULT_CSS_SEGMENT,
                 shift: float | None = None, align: bool = False, channels: str = "all",
                 ref_channel: float | None = 0, residual: bool = False,
                 progress: gr.Progress = gr.Progress(track_tqdm=True)) -> list[Any]:  # noqa: B008 (Gradio's API)
        progress(0, desc="reading the audio")
        try:
            result = service.run(audio, prompts, model, segment, shift, align, channels, ref_channel, residual,
                                 progress=True)
        except (ValueError, OSError) as err:
            message = first_line(err)
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise gr.Error(message, duration=None, print_exception=False) from None
        except Exception as err:  # a bug: its traceback on the server's log, one line on the page
            log.exception("separation failed")
            raise gr.Error(f"internal error ({type(err).__name__}); the server's log has the details",
                           duration=None) from None
        return page_outputs(result)

    def page_outputs(result: Result) -> list[Any]:
        """Plain values (paths, ``None`` where unused), so that API clients get files, not component updates."""
        pad = [None] * (MAX_STEMS - len(result.stems))
        wavs = [str(wav) for _, wav, _ in result.stems] + pad
        pngs = [None if png is None else str(png) for _, _, png in result.stems] + pad
        res_wav, res_png = result.residual or (None, None)
        return [result.status, str(result.archive), *wavs, _str(result.mixture_png), *pngs, _str(res_wav),
                _str(res_png)]

    def reveal(*wavs: str | None) -> list[Any]:
        """Show the zip and the players and spectrograms of the outputs that came (a stem's named after it:
        ``speech0``), hide the others. Only the players come in: Gradio hands their files on as they are (it would
        copy an image, and leave an empty file behind for a gr.File)."""
        *stems, res_wav = wavs
        done = stems[0] is not None
        return [gr.File(visible=done),
                *(gr.Audio(visible=v is not None, label=Path(v).stem if v else None) for v in stems),
                gr.Image(visible=done),
                *(gr.Image(visible=v is not None, label=f"{Path(v).stem} spectrogram" if v else None) for v in stems),
                gr.Audio(visible=res_wav is not None), gr.Image(visible=res_wav is not None)]

    def clear() -> list[Any]:
        """Empty and hide the previous results while a request runs (an error then leaves none on the page)."""
        return ["", gr.File(value=None, visible=False),
                *(gr.Audio(value=None, visible=False) for _ in range(MAX_STEMS)), gr.Image(value=None, visible=False),
                *(gr.Image(value=None, visible=False) for _ in range(MAX_STEMS)),
                gr.Audio(value=None, visible=False), gr.Image(value=None, visible=False)]

    with blocks:
        gr.Markdown("# TUSS: separate audio\nUpload or record a mixture, choose the model and the sources to "
                    "extract (a task preset or your own list of prompts), and press **Separate**. Every stem gets a "
                    "player with its download and a spectrogram; the zip holds them all.")
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Mixture",
                                 buttons=["download"], elem_id="audio-input")
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                default = TASK_PRESETS["cass"]
                preset = gr.Dropdown([*TASK_PRESETS, CUSTOM], value="cass", label="Task preset",
                                     info=" · ".join(f"{k}: {' '.join(v)}" for k, v in TASK_PRESETS.items()),
                                     elem_id="preset")
                prompts = gr.Textbox(" ".join(default), label="Prompts (space-separated, repeats allowed)",
                                     interactive=first_prompts, elem_id="prompts")
                known = gr.Markdown(models.describe(labels[0]), elem_id="known-prompts")
                with gr.Accordion("Long files and channels", open=False):
                    segment = gr.Number(DEFAULT_CSS_SEGMENT, label="Chunk length (s)", minimum=0,
                                        info="long files are separated chunk by chunk; 0: the whole file at once",
                                        elem_id="segment")
                    shift = gr.Number(None, label="Chunk shift (s)", minimum=0,
                                      info="empty or 0: half the chunk length", elem_id="shift")
                    align = gr.Checkbox(False, label="Align the outputs across chunks (css_solve_perm)",
                                        info="keeps repeated prompts (speech speech) in order from chunk to chunk",
                                        elem_id="align")
                    channels = gr.Radio([("all channels, each on its own", "all"), ("one channel", "one")],
                                        value="all", label="Channels", elem_id="channels")
                    ref_channel = gr.Number(0, label="The channel (for one channel; 0 is the first)", minimum=0,
                                            precision=0, elem_id="ref-channel")
                    residual = gr.Checkbox(False, label="Also the residual (mixture minus the stems)",
                                           elem_id="residual-option")
                button = gr.Button("Separate", variant="primary", elem_id="separate")
            with gr.Column(scale=2):
                status = gr.Markdown("", label="status", elem_id="status")
                archive = gr.File(label="All outputs (zip)", interactive=False, visible=False, elem_id="archive")
                mix_png = gr.Image(type="filepath", label="Mixture spectrogram", interactive=False, visible=False,
                                   format="png", buttons=["download", "fullscreen"], elem_id="mix-spectrogram")
                players, pictures = [], []
                for i in range(MAX_STEMS):
                    with gr.Row():
                        players.append(gr.Audio(type="filepath", label=f"stem {i}", interactive=False,
                                                visible=False, buttons=["download"], elem_id=f"stem-{i}"))
                        pictures.append(gr.Image(type="filepath", label=f"stem {i} spectrogram", interactive=False,
                                                 visible=False, format="png", buttons=["download", "fullscreen"],
                                                 elem_id=f"stem-spectrogram-{i}"))
                with gr.Row():
                    res_audio = gr.Audio(type="filepath", label="residual", interactive=False, visible=False,
                                         buttons=["download"], elem_id="residual")
                    res_png = gr.Image(type="filepath", label="residual spectrogram", interactive=False,
                                       visible=False, format="png", buttons=["download", "fullscreen"],
                                       elem_id="residual-spectrogram")

        preset.input(lambda p: gr.Textbox() if p == CUSTOM else " ".join(TASK_PRESETS[p]), preset, prompts,
                     api_visibility="private", queue=False)
        prompts.input(lambda text: preset_of(parse_prompts(text)), prompts, preset, api_visibility="private",
                      queue=False)
        model.change(model_changed, model, [known, prompts], api_visibility="private", queue=False)
        results = [status, archive, *players, mix_png, *pictures, res_audio, res_png]
        shown = [archive, *players, mix_png, *pictures, res_audio, res_png]
        button.click(clear, None, results, api_visibility="private", queue=False).then(
            separate, [audio, prompts, model, segment, shift, align, channels, ref_channel, residual], results,
            api_name="separate", concurrency_limit=concurrency, show_progress_on=[status, archive]).success(
            reveal, [*players, res_audio], shown, api_visibility="private", queue=False)
    blocks.queue(default_concurrency_limit=concurrency)
    return blocks, service


@dataclass
class Page:
    """A page being served (:func:`start`): its Gradio app, its service, its address."""

    blocks: Any
    service: SeparationService
    url: str
    share_url: str | None = None

    def close(self) -> None:
        """Stop serving; Gradio deletes the files of its cache it made, the service its own folder."""
        try:
            self.blocks.close()
        finally:
            self.service.close()


def start(models: Models, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, concurrency: int = 1) -> Page:
    """Serve the page (:func:`build_app`) on ``host:port`` in the background; :meth:`Page.close` stops it. Gradio's
    allowed paths are left as they are (its cache folder only), its upload limit is ``max_upload_mb``.

    Raises:
        OSError: the port cannot be listened on.
    """
    blocks, service = build_app(models, max_upload_mb=max_upload_mb, concurrency=concurrency)
    try:
        _, url, share_url = blocks.launch(server_name=host, server_port=port, share=share,
                                          max_file_size=f"{max_upload_mb:g}mb", prevent_thread_lock=True,
                                          quiet=True, ssr_mode=False, run_history=False)
    except BaseException as err:
        service.close()
        if isinstance(err, OSError) and "Cannot find empty port" in str(err):  # Gradio's words for a taken port
            raise OSError(f"cannot listen on {host}:{port}: the port is in use (or not allowed here); choose "
                          "another with --port") from None
        raise
    return Page(blocks, service, url, share_url)


def serve(models: Models, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, concurrency: int = 1,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the page (:func:`start`) until SIGINT or SIGTERM, then close it and delete its files.

    ``ready`` is called with the page's address (and the public link, with ``share``) once it serves.

    Raises:
        OSError: the port cannot be listened on.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        page = start(models, host, port, share, max_upload_mb, concurrency)
        try:
            if ready is not None:
                ready(page.url if not page.share_url else f"{page.url} (public link: {page.share_url})")
            while not stop.wait(0.5):
                pass
        finally:
            page.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
