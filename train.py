"""Train a separation model: ``python train.py --config configs/unified/tuss.medium.2-4src.yaml``.

Checkpoints and TensorBoard logs go to ``exp/oss/<config stem>/`` (``--exp_dir`` to change); an existing
``checkpoints/last.ckpt`` there is resumed. Any config key can be overridden: ``--trainer_conf.max_epochs 2``.
See training/run.py for the details, ``python train.py --help`` for the command line.
"""

import sys

from training.arguments import parse_args
from utils.cli import run_main


def check_command_line() -> None:
    """Answer ``--help`` (exit 0) and refuse a malformed command line (exit 2) before torch and Lightning are
    imported, which takes seconds (training/arguments.py imports neither)."""
    parse_args(sys.argv[1:])


if __name__ == "__main__":
    code = run_main(check_command_line)
    if code:
        sys.exit(code)
    from training.run import main
    from utils.runtime import configure_cpu_allocator

    configure_cpu_allocator()
    sys.exit(main())
