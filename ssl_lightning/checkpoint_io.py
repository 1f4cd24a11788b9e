"""Checkpoints written atomically: a killed job leaves the previous file, never half a new one.

Lightning writes the checkpoint file in place; a SIGKILL (or a node failure) during that write
would corrupt `last.ckpt`, the very file a requeued job resumes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ssl_lightning.atomic_files import replaced_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file beside the target, then rename it over the target."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        with replaced_atomically(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
