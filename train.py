"""Train a separation model: ``python train.py --config configs/unified/tuss.medium.2-4src.yaml``.

Checkpoints and TensorBoard logs go to ``exp/oss/<config stem>/`` (``--exp_dir`` to change); an existing
``checkpoints/last.ckpt`` there is resumed. Any config key can be overridden: ``--trainer_conf.max_epochs 2``.
See training/run.py for the details.
"""

import sys

from training.run import main
from utils.runtime import configure_cpu_allocator

if __name__ == "__main__":
    configure_cpu_allocator()
    sys.exit(main())
