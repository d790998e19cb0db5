"""train.py's command line: ``[--config] CONFIG [--exp_dir DIR] [--dotted.key VALUE ...]`` and its ``--help``.

Imports neither torch nor Lightning (nor anything that does): ``python train.py --help`` and a malformed command line
are answered before they are loaded. The keys and defaults that ``--help`` lists are the rows of
:data:`training.settings.SETTINGS` that have a help line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.settings import SETTINGS
from utils.config import ConfigError

__all__ = ["usage_text", "parse_args"]


def usage_text() -> str:
    """``train.py --help``: the command, how overrides work, and the commonly changed keys with their defaults."""
    keys = [(s.key, s.shown_default, s.help) for s in SETTINGS if s.help]
    width = max(len(k) for k, _, _ in keys) + 2
    rows = "\n".join(f"  --{k:<{width}}{v:<10}{what}" for k, v, what in keys)
    return f"""usage: python train.py [--config] CONFIG [--exp_dir DIR] [--dotted.key VALUE ...]

Train a TUSS or conventional separation model on the data and settings of CONFIG (configs/<...>.yaml).
Checkpoints and logs go to exp/oss/<config stem>/ (or --exp_dir); an existing checkpoints/last.ckpt there is
resumed (also from the middle of an epoch). SIGTERM/SIGUSR1 save last.ckpt at the current step and exit 0.

Overrides: any config key can be set by its dotted name, --a.b.c VALUE or --a.b.c=VALUE; values are parsed as
YAML (2, 0.5, 5e-4, true, null, [a, b], {{2: 0.5, 3: 0.5}}). The whole config is checked before anything is
written: an unknown key (with the nearest valid name), a wrong type or range, a missing manifest is refused with
one line and exit status 2.

Commonly changed keys (the value used when a config leaves the key out; the release configs set most of them):
{rows}

Examples (the data first: a config's manifests must exist):
  python -m datasets.synthetic datasets/json_files/synthetic   # the tiny corpus of tones and noise (seconds)
  python train.py configs/tests/tiny.tuss.yaml --exp_dir exp/tiny --trainer_conf.max_epochs 2   # a CPU smoke run

  bash dataprep/dataprep.sh   # the release's corpora and manifests (one: bash dataprep/prepare_<corpus>.sh)
  python train.py --config configs/unified/tuss.medium.2-4src.yaml
  python train.py configs/musdb/musdb.task-specialist.tuss.medium.yaml --trainer_conf.devices 4
  python train.py configs/unified/tuss.large.2-4src.promptdropout.yaml --pretrained_model_path exp/oss/tuss.large.2-4src

Exit status: 0 done (or stopped by a signal after saving), 2 refused (config, input, experiment in use),
1 failed while training (disk full, repeated non-finite steps). See docs/training.md."""


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    """``[--config] CONFIG``, ``--exp_dir DIR`` and ``--dotted.key value`` (or ``--dotted.key=value``) overrides;
    ``-h``/``--help`` prints :func:`usage_text` and exits 0.

    Parsed by hand rather than with argparse: override values may look like anything (``[a, b]``, ``-1``).

    Raises:
        ConfigError: no config, a stray argument, or an override without a value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage_text())
        raise SystemExit(0)
    config = exp_dir = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            if config is not None:
                raise ConfigError(f"unexpected argument {token!r}: overrides are --dotted.key value")
            config, i = token, i + 1
            continue
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            key, value = token[2:], argv[i + 1]
            i += 2
        else:
            raise ConfigError(f"argument {token} has no value")
        if key == "config":
            config = value
        elif key == "exp_dir":
            exp_dir = value
        elif key:
            overrides[key] = value
        else:
            raise ConfigError("empty option '--'")
    if not config:
        raise ConfigError("no config given: python train.py --config configs/<...>.yaml")
    return argparse.Namespace(config=config, exp_dir=exp_dir), overrides
