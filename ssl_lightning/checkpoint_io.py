"""Checkpoints written atomically: a killed job leaves the previous file, never half a new one.

Lightning writes the checkpoint file in place; a SIGKILL (or a node failure) during that write
would corrupt `last.ckpt`, the very file a requeued job resumes from. A full disk ends the run
with one line, keeping the previous checkpoint and leaving no temp file.
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
        # through a Python file, so that a write error arrives as an OSError with its errno (torch
        # writing to a path reports a full disk as a RuntimeError of its zip writer)
        with replaced_atomically(Path(path)) as tmp, tmp.open("wb") as handle:
            torch.save(checkpoint, handle)
