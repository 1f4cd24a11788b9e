"""E2E quark/gluon Parquet files, converted once to a sparse HDF5 cache.

The Parquet form holds one row per jet with `X_jets` as nested lists (3 x 125 x 125,
channels first); reading it row by row is slow, so the first use flattens it batch by batch
into the sparse HDF5 layout every other source reads.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
from rich.progress import Progress

from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.data.sources.base import file_identity, stable_hash
from ssl_lightning.data.sources.prepared import PreparedFileSource
from ssl_lightning.data.sparse_images import SPARSE_CHUNK_ENTRIES, SparseImageWriter
from ssl_lightning.errors import UserError

BATCH_ROWS = 256


class E2EParquetSource(PreparedFileSource):
    """Parquet with columns X_jets (C x H x W nested lists), a label and scalar targets."""

    def __init__(
        self,
        path: str,
        cache_dir: str,
        image_key: str,
        label_key: str | None,
        target_keys: list[str],
        in_memory: bool,
    ) -> None:
        self.parquet = Path(path).expanduser()
        if not self.parquet.is_file():
            raise UserError(
                f"Parquet file not found: {self.parquet} — set dataset.source.path to an E2E "
                "Parquet file"
            )
        self.image_key = image_key
        cache = Path(cache_dir).expanduser() / f"{self.parquet.stem}_{self.fingerprint()}.h5"
        super().__init__(cache, label_key, target_keys, in_memory)

    def fingerprint(self) -> str:
        return stable_hash(file_identity(self.parquet), self.image_key)

    def _columns(self, schema_names: list[str]) -> list[str]:
        wanted = [self.image_key, *([self.label_key] if self.label_key else []), *self.target_keys]
        missing = [c for c in wanted if c not in schema_names]
        if missing:
            raise UserError(
                f"{self.parquet} has no column(s) {', '.join(missing)}; available: "
                f"{', '.join(schema_names)} — set dataset.source.image_key/label_key/target_keys"
            )
        return wanted

    def write(self) -> None:
        table = pq.ParquetFile(self.parquet)
        columns = self._columns(table.schema_arrow.names)
        rows = table.metadata.num_rows
        with (
            replaced_atomically(self.path) as tmp,
            h5py.File(tmp, "w") as out,
            Progress() as progress,
        ):
            task = progress.add_task(f"Converting {self.parquet.name} to HDF5", total=rows)
            writer, done = None, 0
            scalars = {c: out.create_dataset(c, (rows,), np.float32) for c in columns[1:]}
            for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                images = _dense_images(batch.column(self.image_key), self.parquet)
                if writer is None:
                    writer = SparseImageWriter(
                        out.create_group("X_jets"),
                        rows,
                        images.shape[1:],
                        SPARSE_CHUNK_ENTRIES,
                    )
                writer.append_dense(images)
                for name, dataset in scalars.items():
                    dataset[done : done + len(images)] = batch.column(name).to_numpy()
                done += len(images)
                progress.advance(task, len(images))


def _dense_images(column, source: Path) -> np.ndarray:  # noqa: ANN001 - a pyarrow array
    """Nested-list images (rows of C x H x W) as float32 [n, C, H, W]."""
    sizes, level = [], column
    while hasattr(level, "flatten") and hasattr(level.type, "value_type"):
        sizes.append(len(level))
        level = level.flatten()
    if len(sizes) != 3:  # rows -> channels -> image rows -> pixels
        raise UserError(f"{source}: X_jets rows are not C x H x W nested lists")
    values = np.asarray(level.to_numpy(zero_copy_only=False), dtype=np.float32)
    n, c, h = sizes[0], sizes[1] // sizes[0], sizes[2] // sizes[1]
    return values.reshape(n, c, h, -1)
