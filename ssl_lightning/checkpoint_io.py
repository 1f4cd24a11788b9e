"""Checkpoints written atomically: a killed job leaves the previous file, never half a new one.

Lightning writes the checkpoint file in place; a SIGKILL (or a node failure) during that write
would corrupt `last.ckpt`, the very file a requeued job resumes from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file beside the target, then rename it over the target."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, target)
