"""Music for the demo corpus: procedurally composed songs written as Standard MIDI Files and rendered one stem at a
time with FluidSynth and a General MIDI soundfont.

A song has four stems, each a list of :class:`Part` (one instrument on one MIDI channel):

- ``drums``: a GM kit on channel 10 (index 9), one of a few grooves with crashes and fills;
- ``bass``: a bass program playing the chord roots (and fifths, octaves) in one of a few rhythms;
- ``vocals``: a sung/lead line (choir aahs, voice oohs, synth voice, voice lead) made of a repeated, varied motif
  that lands on chord tones on strong beats;
- ``other``: the chords, voice-led, as sustained pads/strings/organ, rhythmic piano/guitar comping or arpeggios,
  sometimes with a second layer.

Tempo, key, mode, chord progression, grooves and programs are drawn from the song's random generator. The MIDI
writer is a small hand-written SMF type-1 encoder (no dependency).
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["STEMS", "PIANO_STEMS", "PIANO_PROGRAMS", "PPQ", "Note", "Part", "Song", "compose_song",
           "compose_piano_song", "midi_bytes", "render_midi"]

STEMS: tuple[str, ...] = ("drums", "bass", "vocals", "other")
#: the stems of :func:`compose_piano_song` (the piano fine-tuning corpus, docs/finetuning.md)
PIANO_STEMS: tuple[str, ...] = (*STEMS, "piano")
#: GM pianos: acoustic grand, bright acoustic, electric grand, honky-tonk (the e-pianos 4/5 stay in "other" songs)
PIANO_PROGRAMS: tuple[int, ...] = (0, 1, 2, 3)
PPQ = 480  # ticks per quarter note
_BAR = 4 * PPQ  # 4/4 throughout
_STEP = PPQ // 4  # sixteenth note

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_PROGRESSIONS = {  # scale degrees (0 = tonic), one chord per bar
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (0, 5, 3, 4), (1, 4, 0, 5), (0, 3, 0, 4), (0, 2, 3, 4), (5, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (5, 6, 0, 0)),
}
_PROGRAMS = {
    "bass": (32, 33, 34, 35, 38, 39),  # acoustic, finger, pick, fretless, synth bass 1 and 2
    "vocals": (52, 53, 54, 85),  # choir aahs, voice oohs, synth voice, lead 6 (voice)
    "sustained": (48, 49, 50, 88, 89, 16, 19),  # strings, slow strings, synth strings, pads, organs
    "comping": (0, 2, 4, 5, 27, 29, 30),  # pianos, e-pianos, clean/overdriven/distortion guitars
    "arpeggio": (24, 25, 46, 11, 0, 4, 8),  # nylon/steel guitar, harp, vibraphone, piano, e-piano, celesta
}
_PLUCKED = (24, 25, 46)  # nylon/steel guitar, harp: the non-piano arpeggios of a piano song's "other"
# GM percussion keys
_KICK, _SNARE, _CLAP, _HAT, _OPEN_HAT, _RIDE, _CRASH = 36, 38, 39, 42, 46, 51, 49
_TOMS = (50, 48, 45, 43)
_GROOVES = {  # instrument -> sixteenth steps of one bar
    "rock": {_KICK: (0, 8, 10), _SNARE: (4, 12), _HAT: tuple(range(0, 16, 2))},
    "four": {_KICK: (0, 4, 8, 12), _CLAP: (4, 12), _OPEN_HAT: (2, 6, 10, 14), _HAT: (0, 4, 8, 12)},
    "halftime": {_KICK: (0, 3, 10), _SNARE: (8,), _RIDE: tuple(range(0, 16, 2))},
    "breakbeat": {_KICK: (0, 6, 10), _SNARE: (4, 12, 15), _HAT: tuple(range(16))},
    "shuffle": {_KICK: (0, 7, 8), _SNARE: (4, 12), _HAT: (0, 3, 4, 7, 8, 11, 12, 15)},
}


@dataclass(frozen=True)
class Note:
    """A note in ticks (``PPQ`` per quarter note)."""

    start: int
    length: int
    pitch: int
    velocity: int


@dataclass
class Part:
    """One instrument of a stem: GM ``program`` on MIDI ``channel`` (9 = drums, program ignored)."""

    stem: str
    program: int
    channel: int
    notes: list[Note] = field(default_factory=list)


@dataclass
class Song:
    """A composed song: ``parts`` of the four stems, ``bars`` bars of 4/4 at ``tempo`` BPM."""

    tempo: float
    bars: int
    key: int
    mode: str
    progression: tuple[int, ...]
    parts: list[Part]

    @property
    def seconds(self) -> float:
        """Duration of the written bars (the rendered audio adds a release tail)."""
        return self.bars * 4 * 60.0 / self.tempo

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems of the parts, in order (:data:`STEMS`, or :data:`PIANO_STEMS` for a piano song)."""
        return tuple(dict.fromkeys(p.stem for p in self.parts))

    def stem_parts(self, stem: str) -> list[Part]:
        return [p for p in self.parts if p.stem == stem]

    def describe(self) -> dict:
        """JSON-friendly summary (tempo, key, programs) kept next to the audio."""
        names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        return {"tempo": self.tempo, "bars": self.bars, "key": f"{names[self.key]} {self.mode}",
                "progression": list(self.progression),
                "programs": {s: [p.program for p in self.stem_parts(s)] for s in self.stems}}


# ----------------------------------------------------------------------------------------------------------------
# composition


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _chord(key: int, mode: str, degree: int, size: int = 3) -> list[int]:
    """Pitch classes (as offsets from C, possibly > 11) of the diatonic chord on ``degree``."""
    scale = _SCALES[mode]
    return [key + scale[(degree + 2 * i) % 7] + 12 * ((degree + 2 * i) // 7) for i in range(size)]


def _voicing(chord: list[int], previous: list[int] | None, low: int = 52, high: int = 76) -> list[int]:
    """Stack the chord's pitch classes (any inversion) between ``low`` and ``high``, closest to the previous voicing
    (voice leading)."""
    pcs = [c % 12 for c in chord]
    candidates = []
    for inversion in range(len(pcs)):
        order = pcs[inversion:] + pcs[:inversion]
        for bottom in range(low, low + 12):
            if bottom % 12 != order[0]:
                continue
            notes = [bottom]
            for pc in order[1:]:
                notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
            if notes[-1] <= high:
                candidates.append(notes)
    ref = previous or [(low + high) // 2] * len(pcs)
    return min(candidates, key=lambda v: sum(abs(a - b) for a, b in zip(v, ref, strict=True)))


def _drums(rng: np.random.Generator, bars: int) -> Part:
    groove = _GROOVES[_pick(rng, tuple(_GROOVES))]
    part = Part("drums", 0, 9)
    for bar in range(bars):
        fill = bar % 4 == 3 and rng.random() < 0.6
        for inst, steps in groove.items():
            for step in steps:
                if fill and step >= 12:
                    continue
                accent = 1.0 if step % 4 == 0 else 0.8
                vel = int(np.clip(rng.normal(100 * accent, 8), 40, 127))
                part.notes.append(Note(bar * _BAR + step * _STEP, _STEP, inst, vel))
        if fill:
            for step in range(12, 16):
                part.notes.append(Note(bar * _BAR + step * _STEP, _STEP, _TOMS[step - 12], int(rng.integers(90, 120))))
        if bar % 4 == 0:
            part.notes.append(Note(bar * _BAR, _BAR // 2, _CRASH, int(rng.integers(90, 115))))
    return part


def _bass(rng: np.random.Generator, chords: list[list[int]]) -> Part:
    part = Part("bass", int(_pick(rng, _PROGRAMS["bass"])), 0)
    style = int(rng.integers(4))
    for bar, chord in enumerate(chords):
        root = 36 + chord[0] % 12
        fifth = root + 7 if root + 7 <= 52 else root - 5
        if style == 0:  # quarter roots
            cells = [(s, 4, root) for s in (0, 4, 8, 12)]
        elif style == 1:  # driving eighths
            cells = [(s, 2, root) for s in range(0, 16, 2)]
        elif style == 2:  # root and fifth
            cells = [(0, 6, root), (6, 2, root), (8, 6, fifth), (14, 2, root + 12)]
        else:  # syncopated with octave
            cells = [(0, 3, root), (3, 3, root + 12), (6, 4, root), (10, 2, fifth), (12, 4, root)]
        for step, steps, pitch in cells:
            vel = int(np.clip(rng.normal(95, 8), 50, 127))
            part.notes.append(Note(bar * _BAR + step * _STEP, steps * _STEP - 10, pitch, vel))
    return part


_RHYTHMS = ((4, 4, 4, 4), (2, 2, 4, 4, 4), (6, 2, 4, 4), (4, 2, 2, 8), (8, 8), (2, 2, 2, 2, 4, 4), (4, 4, 8),
            (6, 2, 6, 2), (4, 2, 2, 2, 2, 4))


def _melody_bar(rng: np.random.Generator, scale_notes: np.ndarray, chord: list[int], start: int) -> list[int]:
    """(pitch or -1 for a rest, length in steps) pairs of one bar, as a flat list [p0, l0, p1, l1, …]."""
    out = []
    index = int(np.argmin(np.abs(scale_notes - start)))
    step = 0
    for length in _pick(rng, _RHYTHMS):
        index = int(np.clip(index + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(scale_notes) - 1))
        pitch = int(scale_notes[index])
        if step % 8 == 0:  # strong beats land on a chord tone
            tones = [p for p in scale_notes if p % 12 in {c % 12 for c in chord}]
            pitch = int(min(tones, key=lambda p: abs(p - pitch)))
            index = int(np.argmin(np.abs(scale_notes - pitch)))
        rest = step > 0 and rng.random() < 0.08
        out += [-1 if rest else pitch, length]
        step += length
    return out


def _vocals(rng: np.random.Generator, chords: list[list[int]], key: int, mode: str) -> Part:
    part = Part("vocals", int(_pick(rng, _PROGRAMS["vocals"])), 1)
    scale_notes = np.array([n for n in range(57, 82) if (n - key) % 12 in _SCALES[mode]])
    motif: list[list[int]] = []
    pitch = int(rng.integers(62, 74))
    for bar, chord in enumerate(chords):
        if bar % 4 < 2 or bar < 4 or rng.random() < 0.3:  # new material, else repeat the motif 2 bars back
            cells = _melody_bar(rng, scale_notes, chord, pitch)
        else:
            cells = motif[bar - 2]
            tones = {c % 12 for c in chord}
            if cells[0] >= 0 and cells[0] % 12 not in tones:  # keep the downbeat on a chord tone
                cells = [int(min((p for p in scale_notes if p % 12 in tones), key=lambda p: abs(p - cells[0])))]\
                    + cells[1:]
        motif.append(cells)
        step = 0
        for p, length in zip(cells[::2], cells[1::2], strict=True):
            if p >= 0:
                vel = int(np.clip(rng.normal(92, 6), 60, 120))
                part.notes.append(Note(bar * _BAR + step * _STEP, length * _STEP - 20, p, vel))
                pitch = p
            step += length
    return part


def _voicings(chords: list[list[int]]) -> list[list[int]]:
    voicings: list[list[int]] = []
    for chord in chords:
        voicings.append(_voicing(chord, voicings[-1] if voicings else None))
    return voicings


def _layer(rng: np.random.Generator, part: Part, voicings: list[list[int]], style: str, octave: int = 0) -> Part:
    """Fill ``part`` with the voiced chords played in ``style`` (sustained, comping or arpeggio; an arpeggio
    ``octave`` octaves lower)."""
    for bar, notes in enumerate(voicings):
        t0 = bar * _BAR
        if style == "sustained":
            for p in notes:
                part.notes.append(Note(t0, _BAR - 30, p, int(rng.integers(70, 90))))
        elif style == "comping":
            hits = _pick(rng, ((0, 6, 8, 14), (0, 4, 8, 12), (2, 6, 10, 14), (0, 3, 6, 10, 12)))
            for step in hits:
                vel = int(np.clip(rng.normal(85, 8), 50, 120))
                for p in notes:
                    part.notes.append(Note(t0 + step * _STEP, 2 * _STEP, p, vel))
        else:
            seq = notes + [notes[0] + 12] + notes[1:][::-1]
            for i, step in enumerate(range(0, 16, 2)):
                vel = int(np.clip(rng.normal(85, 8), 50, 120))
                part.notes.append(Note(t0 + step * _STEP, 3 * _STEP, seq[i % len(seq)] - 12 * octave, vel))
    return part


def _other(rng: np.random.Generator, chords: list[list[int]]) -> list[Part]:
    voicings = _voicings(chords)
    styles = ["sustained", "comping", "arpeggio"]
    first = styles[int(rng.integers(3))]
    chosen = [first] + ([styles[(styles.index(first) + int(rng.integers(1, 3))) % 3]] if rng.random() < 0.5 else [])
    return [_layer(rng, Part("other", int(_pick(rng, _PROGRAMS[style])), 2 + layer), voicings, style, layer)
            for layer, style in enumerate(chosen)]


def compose_song(rng: np.random.Generator, bars: int = 8) -> Song:
    """A random song of ``bars`` bars with the four stems (every stem plays in every bar)."""
    tempo = float(rng.integers(84, 141))
    key = int(rng.integers(12))
    mode = "major" if rng.random() < 0.6 else "minor"
    progression = tuple(_pick(rng, _PROGRESSIONS[mode]))
    chords = [_chord(key, mode, progression[b % len(progression)], 3) for b in range(bars)]
    parts = [_drums(rng, bars), _bass(rng, chords), _vocals(rng, chords, key, mode), *_other(rng, chords)]
    return Song(tempo, bars, key, mode, progression, parts)


def compose_piano_song(rng: np.random.Generator, bars: int = 8) -> Song:
    """A random song of ``bars`` bars with five stems, :data:`PIANO_STEMS`: ``piano`` (an acoustic, bright,
    electric grand or honky-tonk piano comping or arpeggiating the chords) and the four others, ``other`` without
    any piano (a sustained string/pad/organ layer or a guitar/harp arpeggio). The song material (tempo, key,
    progression, drums, bass, vocals) is drawn as :func:`compose_song` draws it."""
    tempo = float(rng.integers(84, 141))
    key = int(rng.integers(12))
    mode = "major" if rng.random() < 0.6 else "minor"
    progression = tuple(_pick(rng, _PROGRESSIONS[mode]))
    chords = [_chord(key, mode, progression[b % len(progression)], 3) for b in range(bars)]
    voicings = _voicings(chords)
    other_style = str(_pick(rng, ("sustained", "arpeggio")))
    other_program = int(_pick(rng, _PROGRAMS["sustained"] if other_style == "sustained" else _PLUCKED))
    piano_style = str(_pick(rng, ("comping", "arpeggio")))
    parts = [_drums(rng, bars), _bass(rng, chords), _vocals(rng, chords, key, mode),
             _layer(rng, Part("other", other_program, 2), voicings, other_style),
             _layer(rng, Part("piano", int(_pick(rng, PIANO_PROGRAMS)), 3), voicings, piano_style,
                    octave=int(other_style == piano_style == "arpeggio"))]
    return Song(tempo, bars, key, mode, progression, parts)


# ----------------------------------------------------------------------------------------------------------------
# MIDI file


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]]) -> bytes:
    """An ``MTrk`` chunk from ``(tick, order, message)`` events (sorted; note-offs sort before note-ons)."""
    data = bytearray()
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        data += _vlq(tick - now) + message
        now = tick
    data += b"\x00\xff\x2f\x00"  # end of track
    return b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


def midi_bytes(parts: list[Part], tempo: float, end_tick: int) -> bytes:
    """A Standard MIDI File (type 1): a tempo track, then one track per part (program change, notes).

    Args:
        end_tick: tick of the last event of the tempo track (the song's end), so every render has the same length.
    """
    usec = round(60_000_000 / tempo)
    meta = [(0, 0, b"\xff\x51\x03" + usec.to_bytes(3, "big")), (0, 0, b"\xff\x58\x04\x04\x02\x18\x08"),
            (end_tick, 0, b"\xff\x01\x03end")]
    chunks = [_track(meta)]
    for part in parts:
        ch = part.channel
        events: list[tuple[int, int, bytes]] = [(0, 0, bytes((0xC0 | ch, part.program & 0x7F)))]
        for n in part.notes:
            events.append((n.start, 2, bytes((0x90 | ch, n.pitch, n.velocity))))
            events.append((n.start + max(1, n.length), 1, bytes((0x80 | ch, n.pitch, 0))))
        chunks.append(_track(events))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), PPQ)
    return header + b"".join(chunks)


def render_midi(midi_path: Path, wav_path: Path, soundfont: Path, sample_rate: int = 48000) -> Path:
    """Render a MIDI file with FluidSynth (fast render, chorus off, default reverb) to a float WAV (stereo).

    Raises:
        RuntimeError: fluidsynth failed or wrote nothing (with its error output).
    """
    cmd = ["fluidsynth", "-ni", "-q", "-C", "0", "-R", "1", "-g", "0.5", "-r", str(sample_rate), "-O", "float",
           "-T", "wav", "-o", "synth.cpu-cores=1", "-F", str(wav_path), str(soundfont), str(midi_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wav_path.is_file() or wav_path.stat().st_size <= 44:
        raise RuntimeError(f"fluidsynth failed rendering {midi_path}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return wav_path
