"""The machine `make bench` runs on, as one JSON line: GPUs, torch, CUDA.

bench.py runs this in a process of its own, so that the orchestrating process neither imports
torch nor initialises CUDA: each measurement's process then has the GPUs to itself.
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from typing import Any

import torch


def describe() -> dict[str, Any]:
    """The GPUs CUDA shows this process (none on a CPU machine) and the versions that time them."""
    count = torch.cuda.device_count()
    return {
        "gpus": [torch.cuda.get_device_name(i) for i in range(count)],
        "gpu_count": count,
        "bf16_supported": count > 0 and torch.cuda.is_bf16_supported(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if count else None,
        "lightning": version("lightning"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(describe()))
