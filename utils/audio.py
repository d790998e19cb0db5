"""Audio I/O with soundfile (wav, flac, ogg, mp3 through libsndfile), atomic writes, and resampling.

Arrays are ``(channels, samples)`` float32 throughout the project; soundfile's ``(samples, channels)`` layout stays
inside this module.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from utils.atomic import WriteError, atomic_path

__all__ = ["AudioError", "AudioInfo", "audio_info", "read_audio", "write_audio", "resample", "fix_length",
           "Truncation", "declared_frames", "find_truncation", "read_audio_checked"]


class AudioError(ValueError):
    """An audio file that cannot be used (missing, unreadable, empty); the message names the file."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_samples: int
    channels: int


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, length in samples and channel count from the file header (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def read_audio(
    path: str | os.PathLike, start: int = 0, num_samples: int | None = None, channel: int | None = None
) -> tuple[np.ndarray, int]:
    """Read (part of) an audio file.

    Args:
        path: audio file.
        start: first sample to read (a partial read: only that region is decoded where the format allows).
        num_samples: samples to read from ``start`` (``None``: to the end).
        channel: keep only this channel (``None``: all channels).

    Returns:
        ``(audio, sample_rate)`` with ``audio`` float32 of shape ``(channels, samples)`` (``(1, samples)`` when
        ``channel`` is given).

    Raises:
        AudioError: missing or unreadable file, or ``channel`` out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            if start:
                f.seek(int(start))
            data, _ = _read_frames(f, None if num_samples is None else int(num_samples))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None
    data = data.T
    if channel is not None:
        if not -data.shape[0] <= channel < data.shape[0]:
            raise AudioError(f"{path} has {data.shape[0]} channel(s); channel {channel} does not exist")
        data = data[channel : channel + 1] if channel >= 0 else data[[channel]]
    return np.ascontiguousarray(data), int(sr)


#: frames decoded at a time: the frame count of a header is never trusted for an allocation (a FLAC header can claim
#: 2^35 frames of a file of kilobytes)
READ_BLOCK = 1 << 20


def _read_frames(f: sf.SoundFile, frames: int | None, tolerate_errors: bool = False) -> tuple[np.ndarray, bool]:
    """Up to ``frames`` frames (``None``: to the end) from the position of ``f``, decoded :data:`READ_BLOCK` frames
    at a time, as float32 ``(frames, channels)``; memory grows with what decodes, not with what the header declares.

    Returns ``(audio, failed)``: with ``tolerate_errors``, a decoder error ends the read with the frames decoded
    before it and ``failed`` true; otherwise the error propagates.
    """
    parts: list[np.ndarray] = []
    got, failed = 0, False
    # the header's remaining frames only bound a block (one read for a whole file that tells the truth); a header
    # that says too few is read past, block by block, until a short read
    remaining = max(int(f.frames) - int(f.tell()), 0) if f.seekable() else READ_BLOCK
    while frames is None or got < frames:
        n = READ_BLOCK if frames is None else min(READ_BLOCK, frames - got)
        n = min(n, remaining - got) if remaining > got else min(n, 1 << 16)  # past the header: small blocks
        buf = np.empty((n, f.channels), dtype=np.float32)
        before = f.tell() if tolerate_errors else 0
        try:
            k = len(f.read(out=buf))
        except (sf.LibsndfileError, RuntimeError):
            if not tolerate_errors:
                raise
            try:
                k = min(max(int(f.tell()) - before, 0), n)
            except (sf.LibsndfileError, RuntimeError):
                k = 0
            failed = True
        parts.append(buf[:k])
        got += k
        if failed or k < n:
            break
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros((0, f.channels), np.float32)
    return data, failed


@dataclass(frozen=True)
class Truncation:
    """A file that holds fewer frames than its header declares (a download or copy cut short)."""

    path: Path
    declared: int  #: frames the header declares
    readable: int  #: frames that can actually be read

    def __str__(self) -> str:
        return (f"{self.path} is truncated: its header declares {self.declared} frames but only {self.readable} can "
                "be read")


#: WAVE format tags whose data chunk is ``frames x block_align`` bytes: PCM, IEEE float, A-law, mu-law
_WAV_LINEAR_TAGS = {1, 3, 6, 7}


def _wav_declared(fh, endian: str) -> int | None:
    """Frames the ``data`` chunk of a RIFF/RIFX WAVE file declares (``None``: unknown, compressed or streamed)."""
    tag = block_align = None
    while True:
        head = fh.read(8)
        if len(head) < 8:
            return None
        cid, size = head[:4], struct.unpack(endian + "I", head[4:])[0]
        if cid == b"fmt ":
            body = fh.read(min(size, 40))
            if len(body) < 16:
                return None
            tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", body[:14])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack(endian + "H", body[24:26])[0]
            fh.seek(size - len(body) + (size & 1), os.SEEK_CUR)
        elif cid == b"data":
            if tag not in _WAV_LINEAR_TAGS or not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        else:
            fh.seek(size + (size & 1), os.SEEK_CUR)


def _aiff_declared(fh) -> int | None:
    """``numSampleFrames`` of the ``COMM`` chunk of an AIFF/AIFF-C file."""
    while True:
        head = fh.read(8)
        if len(head) < 8:
            return None
        cid, size = head[:4], struct.unpack(">I", head[4:])[0]
        if cid == b"COMM":
            body = fh.read(6)
            return struct.unpack(">I", body[2:6])[0] if len(body) == 6 else None
        fh.seek(size + (size & 1), os.SEEK_CUR)


def declared_frames(path: str | os.PathLike) -> int:
    """Frames the file's header declares.

    libsndfile silently shortens the length of a WAV or AIFF file whose data chunk runs past the end of the file
    (:func:`audio_info` then reports what is there), so for these the header is parsed here: the ``data`` chunk
    size over the block size (uncompressed WAV) or the ``COMM`` frame count (AIFF). Other formats (and WAV files
    whose header gives no usable count, e.g. streamed ones) report libsndfile's count, which for FLAC is the
    header's (``STREAMINFO``), for mp3 the Xing header's or an estimate, for ogg what is there.

    Raises:
        AudioError: missing or unreadable file.
    """
    info = audio_info(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) == 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
                count = _wav_declared(fh, "<" if head[:4] == b"RIFF" else ">")
            elif len(head) == 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                count = _aiff_declared(fh)
            else:
                count = None
    except (OSError, struct.error):
        count = None
    return info.num_samples if count is None else max(count, info.num_samples)


def _readable_frames(path: Path) -> int:
    """Frames that decode, counted by reading the whole file in blocks (a decoder error ends the count)."""
    try:
        with sf.SoundFile(str(path)) as f:
            buf = np.empty((65536, f.channels), dtype=np.float32)
            count = 0
            while True:
                try:
                    got = len(f.read(out=buf))
                except (sf.LibsndfileError, RuntimeError):
                    try:
                        return max(count, int(f.tell()))
                    except (sf.LibsndfileError, RuntimeError):
                        return count
                count += got
                if got < len(buf):
                    return count
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None


def find_truncation(path: str | os.PathLike, decode: bool = False) -> Truncation | None:
    """The :class:`Truncation` of a file whose header declares more frames than it holds, else ``None``.

    WAV and AIFF are checked from the header alone (cheap). Other formats are only checked with ``decode=True``:
    the whole file is then decoded (not kept) and the frames that decode are counted.

    Raises:
        AudioError: missing or unreadable file.
    """
    path = Path(path)
    info = audio_info(path)
    declared = declared_frames(path)
    readable = _readable_frames(path) if decode and declared == info.num_samples else info.num_samples
    return Truncation(path, declared, readable) if readable < declared else None


def read_audio_checked(
    path: str | os.PathLike, start: int = 0, num_samples: int | None = None, channel: int | None = None
) -> tuple[np.ndarray, int, Truncation | None]:
    """:func:`read_audio` that also reports a truncated file instead of hiding it.

    Returns ``(audio, sample_rate, truncation)``: ``audio`` is what could be read of the request (shorter than
    ``num_samples`` when the file ends early), ``truncation`` a :class:`Truncation` when the file holds fewer frames
    than its header declares (always detected for WAV and AIFF, see :func:`declared_frames`; for other formats when
    the request runs into the missing part: a short read, or a decoder error after some frames), else ``None``.
    :func:`read_audio` itself is unchanged: it reads what is there, and a decoder error is an :class:`AudioError`.

    Raises:
        AudioError: missing or unreadable file, nothing readable at ``start``, or ``channel`` out of range.
    """
    path = Path(path)
    declared = declared_frames(path)  # also: missing or unreadable file
    try:
        with sf.SoundFile(str(path)) as f:
            sr, total = int(f.samplerate), int(f.frames)
            want = max(total - int(start), 0) if num_samples is None else int(num_samples)
            try:
                if start:
                    f.seek(int(start))
                out, _ = _read_frames(f, want, tolerate_errors=True)
            except (sf.LibsndfileError, RuntimeError):  # the seek
                out = np.zeros((0, f.channels), dtype=np.float32)
            got = len(out)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None
    if got >= want:
        readable = total
    elif got == 0 and start:  # nothing decoded at ``start``: where the readable part ends is unknown, count it
        readable = min(_readable_frames(path), int(start))
    else:
        readable = int(start) + got
    truncation = Truncation(path, declared, readable) if readable < declared else None
    data = out[:got].T
    if channel is not None:
        if not -data.shape[0] <= channel < data.shape[0]:
            raise AudioError(f"{path} has {data.shape[0]} channel(s); channel {channel} does not exist")
        data = data[channel : channel + 1] if channel >= 0 else data[[channel]]
    return np.ascontiguousarray(data), sr, truncation


def write_audio(
    path: str | os.PathLike, audio: np.ndarray | torch.Tensor, sample_rate: int, subtype: str | None = None,
) -> Path:
    """Write ``(channels, samples)`` or ``(samples,)`` audio atomically; the format follows the file suffix.

    Args:
        subtype: soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``…); ``None`` is soundfile's default.

    Raises:
        utils.atomic.WriteError: the write failed (full disk, file size limit, I/O error); the message names
            ``path`` and the operating system's reason (``cannot write out/mix.wav: No space left on device``),
            which soundfile's own error (``System error.``) does not.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise ValueError(f"audio for {path} must be (channels, samples) or (samples,), got shape {audio.shape}")
    final = Path(path)
    fmt = final.suffix.lstrip(".").upper()
    with atomic_path(final, suffix=final.suffix) as tmp:
        _write_reporting(tmp, final, audio, int(sample_rate), subtype, fmt)
    return final


def _errno_of(reason: str) -> int | None:
    """The errno whose ``strerror`` is ``reason`` (``No space left on device`` -> ``ENOSPC``), if any."""
    for code in errno.errorcode:
        if os.strerror(code) == reason:
            return code
    return None


def _sf_reason(handle: sf.SoundFile | None, err: sf.LibsndfileError) -> str:
    """libsndfile's reason for a failure: the handle's message carries the system error (``System error : No space
    left on device.``), the exception only the generic text."""
    text = ""
    if handle is not None:
        try:
            text = sf._ffi.string(sf._snd.sf_strerror(handle._file)).decode("utf-8", "replace")
        except Exception:  # soundfile internals differ: fall back to the generic message
            text = ""
    if not text.lower().startswith("system error"):  # only the system error adds something
        text = err.error_string or str(err)
    if ":" in text and text.split(":", 1)[0].strip().lower() == "system error":
        text = text.split(":", 1)[1]
    return text.strip().rstrip(".") or "libsndfile error"


def _write_reporting(tmp: Path, final: Path, audio: np.ndarray, sample_rate: int, subtype: str | None,
                     fmt: str) -> None:
    """``sf.write`` through a :class:`soundfile.SoundFile`, turning a libsndfile failure into a WriteError."""
    def failed(handle: sf.SoundFile | None, err: sf.LibsndfileError) -> WriteError:
        reason = _sf_reason(handle, err)
        return WriteError(_errno_of(reason), f"cannot write {final}: {reason}")

    try:
        handle = sf.SoundFile(str(tmp), "w", sample_rate, audio.shape[0], subtype=subtype, format=fmt)
    except sf.LibsndfileError as err:
        raise failed(None, err) from None
    try:
        handle.write(audio.T)
    except sf.LibsndfileError as err:
        error = failed(handle, err)
        with contextlib.suppress(Exception):
            handle.close()
        raise error from None
    except BaseException:
        with contextlib.suppress(Exception):
            handle.close()
        raise
    try:
        handle.close()  # writes the header's final sizes
    except sf.LibsndfileError as err:
        raise failed(None, err) from None


def fix_length(x: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to ``n`` samples (resampling round trips can be off by a sample)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def resample(wave: torch.Tensor | np.ndarray, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last axis with torchaudio's windowed-sinc resampler (its defaults).

    The kernel of each (rate pair, dtype, device) is built once and cached (``torchaudio.functional.resample``
    rebuilds it on every call, which dominated the data loader's time). Returns a tensor; the input is returned
    unchanged (as a tensor) when the rates are equal.
    """
    if not isinstance(wave, torch.Tensor):
        wave = torch.from_numpy(np.asarray(wave))
    if int(orig_sr) == int(new_sr):
        return wave
    if not wave.is_floating_point():
        wave = wave.float()
    return _resampler(int(orig_sr), int(new_sr), wave.dtype, str(wave.device))(wave)


@functools.lru_cache(maxsize=32)
def _resampler(orig_sr: int, new_sr: int, dtype: torch.dtype, device: str) -> torch.nn.Module:
    import torchaudio.transforms as tat  # imported lazily: only resampling needs torchaudio

    with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable with and without autograd later
        return tat.Resample(orig_sr, new_sr, dtype=dtype).to(device)
