"""Speech for the demo corpus: procedurally generated sentences read by synthetic voices (flite, espeak-ng).

Speakers are fixed (engine, voice, pitch, rate) combinations, each assigned to one split, so train, valid and test
speakers are disjoint whatever the seed; the seed only chooses the sentences.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Speaker", "SPEAKERS", "speakers_for", "make_sentences", "synthesize"]


@dataclass(frozen=True)
class Speaker:
    """One synthetic voice: ``engine`` is ``"flite"`` or ``"espeak-ng"``; ``voice`` the engine's voice name (espeak-ng:
    ``language+variant``); ``pitch`` (espeak-ng 0–99, flite mean F0 in Hz, 0 = the voice's own) and ``rate`` (espeak-ng
    words per minute, flite duration stretch) shape it; ``small`` marks the few used by ``--small``."""

    name: str
    engine: str
    voice: str
    split: str
    pitch: float = 0.0
    rate: float = 0.0
    small: bool = False


def _es(name: str, voice: str, split: str, pitch: int, rate: int, small: bool = False) -> Speaker:
    return Speaker(name, "espeak-ng", voice, split, float(pitch), float(rate), small)


def _fl(name: str, voice: str, split: str, pitch: float = 0.0, stretch: float = 1.0) -> Speaker:
    return Speaker(name, "flite", voice, split, pitch, stretch)


#: every speaker of the full corpus; ``--small`` uses only the espeak-ng ones marked small (one apt package less).
SPEAKERS: tuple[Speaker, ...] = (
    # train
    _fl("flite-awb", "awb", "train"),
    _fl("flite-rms", "rms", "train", stretch=1.05),
    _es("espeak-usm1", "en-us+m1", "train", 45, 165, small=True),
    _es("espeak-gbf1", "en-gb+f1", "train", 55, 155, small=True),
    _es("espeak-scm2", "en-gb-scotland+m2", "train", 35, 150),
    _es("espeak-caf3", "en-029+f3", "train", 60, 170, small=True),
    _es("espeak-rpm4", "en-gb-x-rp+m4", "train", 40, 160),
    _es("espeak-usf4", "en-us+f4", "train", 65, 150),
    _es("espeak-lam5", "en-gb-x-gbclan+m5", "train", 30, 175),
    _es("espeak-wmf5", "en-gb-x-gbcwmd+f5", "train", 58, 160),
    _es("espeak-usm6", "en-us+m6", "train", 50, 145),
    _es("espeak-gbk2", "en-gb+klatt2", "train", 42, 165),
    _es("espeak-uspaul", "en-us+paul", "train", 38, 155),
    _es("espeak-gblinda", "en-gb+linda", "train", 62, 165),
    # valid
    _fl("flite-kal", "kal16", "valid", stretch=0.95),
    _es("espeak-rpf2", "en-gb-x-rp+f2", "valid", 57, 160, small=True),
    _es("espeak-usm7", "en-us+m7", "valid", 44, 170, small=True),
    # test
    _fl("flite-slt", "slt", "test"),
    _es("espeak-usf2", "en-us+f2", "test", 60, 160, small=True),
    _es("espeak-enm3", "en+m3", "test", 40, 155, small=True),
    _es("espeak-scf1", "en-gb-scotland+f1", "test", 55, 165),
    _es("espeak-usk3", "en-us+klatt3", "test", 46, 150),
)


def speakers_for(small: bool, engines: tuple[str, ...] = ("flite", "espeak-ng")) -> list[Speaker]:
    """The speakers of a build: the ones marked small for ``small``, else all of ``engines``."""
    return [s for s in SPEAKERS if (s.small if small else s.engine in engines)]


# ----------------------------------------------------------------------------------------------------------------
# sentences

_NAMES = ("Anna", "Brian", "Clara", "David", "Elena", "Frank", "Grace", "Henry", "Irene", "James", "Karen", "Louis",
          "Maria", "Nathan", "Olivia", "Peter", "Rachel", "Samuel", "Teresa", "Victor", "Wendy", "Oscar")
_ADJ = ("old", "small", "bright", "quiet", "heavy", "green", "broken", "famous", "strange", "warm", "empty", "yellow",
        "clever", "narrow", "wooden", "golden", "noisy", "gentle", "tiny", "ancient", "purple", "frozen", "busy",
        "silver")
_NOUN = ("dog", "teacher", "farmer", "bicycle", "window", "river", "garden", "captain", "painter", "kitchen", "train",
         "violin", "lantern", "basket", "doctor", "student", "mountain", "letter", "market", "engine", "parrot",
         "bridge", "camera", "sailor", "pianist", "castle", "rabbit", "bakery", "museum", "tractor")
_NOUN_PL = ("apples", "books", "candles", "chairs", "coins", "flowers", "horses", "keys", "maps", "oranges", "papers",
            "pencils", "shoes", "stones", "tickets", "tomatoes", "umbrellas", "boxes", "letters", "bottles")
_VERB_PAST = ("found", "painted", "carried", "opened", "visited", "watched", "repaired", "followed", "cleaned",
              "noticed", "borrowed", "described", "photographed", "forgot", "discovered", "sold", "moved", "heard")
_VERB_BASE = ("find", "paint", "carry", "open", "visit", "watch", "repair", "follow", "clean", "borrow", "describe",
              "sell", "move", "check", "count", "bring", "wrap", "collect")
_PLACE = ("near the station", "behind the old church", "in the kitchen", "under the bridge", "at the market",
          "beside the lake", "on the top floor", "in the garden", "across the street", "at the harbour",
          "inside the museum", "on the hill", "next to the bakery", "in the library", "by the river")
_TIME = ("this morning", "last night", "on Monday", "after lunch", "before dinner", "every Sunday", "yesterday",
         "in the spring", "at noon", "two weeks ago", "later today", "on Friday evening", "at sunrise", "in July")
_ADV = ("slowly", "carefully", "quickly", "quietly", "happily", "twice", "again", "patiently", "suddenly", "gladly")
_COUNT = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty", "a dozen")
_RELATIVE = ("sister", "uncle", "neighbour", "cousin", "grandmother", "friend", "brother", "aunt", "colleague")
_ADJ2 = ("wonderful", "too expensive", "very useful", "rather small", "still missing", "completely new",
         "surprisingly loud", "almost ready", "a little late", "hard to find")

_TEMPLATES = (
    "The {adj} {noun} {vpast} the {noun2} {place}.",
    "{name} {vpast} {count} {adj} {npl} {time}.",
    "Did the {noun} {vbase} the {adj} {noun2} {place}?",
    "Please {vbase} the {adj} {npl} before {time}.",
    "We should {vbase} {count} {npl} {place} {time}.",
    "My {relative} said the {noun} was {adj2} {time}.",
    "{name} and {name2} {vpast} the {noun} {adv} {place}.",
    "Why did {name} {vbase} the {noun} {time}?",
    "I think the {adj} {noun} {place} is {adj2}.",
    "Call {name} at {digits} and ask about the {noun}.",
    "{time_cap}, the {noun} {vpast} {count} {npl} {adv}.",
    "Room {number} has {count} {adj} {npl} and one {noun}.",
)
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _sentence(rng: np.random.Generator) -> str:
    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    name, name2 = (_NAMES[i] for i in rng.choice(len(_NAMES), 2, replace=False))
    noun, noun2 = (_NOUN[i] for i in rng.choice(len(_NOUN), 2, replace=False))
    time = pick(_TIME)
    fields = dict(
        adj=pick(_ADJ), noun=noun, noun2=noun2, vpast=pick(_VERB_PAST), vbase=pick(_VERB_BASE), place=pick(_PLACE),
        time=time, time_cap=time[0].upper() + time[1:], name=name, name2=name2, npl=pick(_NOUN_PL), adv=pick(_ADV),
        count=pick(_COUNT), relative=pick(_RELATIVE), adj2=pick(_ADJ2),
        digits=" ".join(pick(_DIGITS) for _ in range(4)), number=str(int(rng.integers(2, 500))),
    )
    return pick(_TEMPLATES).format(**fields)


def make_sentences(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct sentences drawn from the templates and word lists (the space holds millions)."""
    out: dict[str, None] = {}
    while len(out) < n:
        out.setdefault(_sentence(rng))
    return list(out)


# ----------------------------------------------------------------------------------------------------------------
# synthesis


def synthesize(speaker: Speaker, text: str, path: Path) -> Path:
    """Read ``text`` with ``speaker`` into the WAV file ``path`` (the engine's own rate: flite 16 kHz or 8 kHz,
    espeak-ng 22.05 kHz).

    Raises:
        RuntimeError: the engine failed or wrote nothing (the message gives its command and error output).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if speaker.engine == "flite":
        cmd = ["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={speaker.rate or 1.0}"]
        if speaker.pitch:
            cmd += ["--setf", f"int_f0_target_mean={speaker.pitch}"]
        cmd += ["-t", text, "-o", str(path)]
    elif speaker.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(int(speaker.pitch)), "-s", str(int(speaker.rate)),
               "-w", str(path), text]
    else:
        raise ValueError(f"speaker {speaker.name}: unknown engine {speaker.engine!r} (expected flite or espeak-ng)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.is_file() or path.stat().st_size <= 44:
        raise RuntimeError(f"{speaker.engine} failed for speaker {speaker.name} ({' '.join(cmd[:4])} …): "
                           f"{proc.stderr.strip() or 'no audio written'}")
    return path
