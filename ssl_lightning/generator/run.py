"""`generate_jets`: chunks from the worker pool, shuffled into blocks, streamed into the file."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ssl_lightning.errors import UserError
from ssl_lightning.generator.config import JetGenConfig
from ssl_lightning.generator.parallel import ordered_chunks, shuffled_blocks
from ssl_lightning.generator.storage import (
    JetFileWriter,
    atomic_output,
    use_sparse,
    write_attributes,
)


class _RateColumn(ProgressColumn):
    """Average jets per second so far (rich's own speed columns are for bytes)."""

    def render(self, task: Task) -> Text:
        rate = f"{task.completed / task.elapsed:.1f}" if task.completed and task.elapsed else "-"
        return Text(f"{rate} jets/s", style="progress.data.speed")


def generate_jets(
    config: JetGenConfig,
    out: str | os.PathLike[str],
    workers: int = 1,
    progress: bool = True,
    sparse: str = "auto",
    command: str | None = None,
) -> Path:
    """Generate `config.num_jets` jet images into the HDF5 file `out`, atomically; returns `out`.

    `sparse`: "auto" (sparse above 64x64 pixels), "yes" or "no". `command` is recorded in the
    file attributes (default: this process's command line). `workers` > 1 spawns processes,
    so a calling script needs the usual `if __name__ == "__main__":` guard.
    """
    out = Path(out)
    if not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers={workers!r} must be an integer >= 1: use e.g. 2")
    sparse_storage = use_sparse(sparse, config.image_size)
    columns = (
        TextColumn("jets"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with atomic_output(out) as tmp:
        chunks = ordered_chunks(config, workers)
        try:
            with (
                h5py.File(tmp, "w") as f,
                Progress(*columns, console=Console(stderr=True), disable=not progress) as bar,
            ):
                task = bar.add_task("jets", total=config.num_jets)
                writer = JetFileWriter(f, config, sparse_storage)
                events = 0
                for block in shuffled_blocks(config, chunks):
                    writer.write(block)
                    events += block.events
                    bar.update(task, completed=writer.done)
                write_attributes(f, config, sparse_storage, events, command)
        finally:
            chunks.close()  # stops the worker processes now, also after an error
    return out
