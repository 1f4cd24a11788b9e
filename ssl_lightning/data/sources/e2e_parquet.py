"""E2E quark/gluon Parquet files, converted once to one sparse HDF5 cache.

The public Parquet set comes as several files (run0/1/2, 139,306 jets) of one row per jet:
`X_jets` as nested lists (3 x 125 x 125 doubles, channels first) and scalar columns (y, pt,
m0). Reading it row by row is slow and loading it whole takes ~52 GB, so the first use streams
the files, in sorted path order and BATCH_ROWS rows at a time, into the sparse HDF5 layout
every other source reads: the memory it takes does not grow with the number of jets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.data.sources.base import file_identity, resolve_files, stable_hash
from ssl_lightning.data.sources.prepared import PreparedFileSource
from ssl_lightning.data.sparse_images import SPARSE_CHUNK_ENTRIES, SparseImageWriter
from ssl_lightning.errors import UserError

# jets decoded at a time (24 MB of 3 x 125 x 125 doubles): the converter peaks at 0.3 GB;
# 256 took the same time and 0.35 GB more
BATCH_ROWS = 64
# compressed bytes read at a time: Arrow's default (pre-buffering, no buffered stream) loads
# a row group's whole column chunk at once, GBs when a file is one row group as pandas and
# pyarrow write them (measured: 330 MB held for a 15,000-jet row group, 49 MB streaming)
READ_BUFFER_BYTES = 8 << 20
SUFFIXES = (".parquet",)  # the files a folder in dataset.source.path contributes
LIST_TYPES = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


class E2EParquetSource(PreparedFileSource):
    """Parquet files with columns X_jets (C x H x W nested lists), a label and scalar targets,
    read as one dataset; every numeric scalar column is kept in the cache, so a different label
    or target choice reads the same cache."""

    def __init__(
        self,
        path: str | Sequence[str],
        cache_dir: str,
        image_key: str,
        label_key: str | None,
        target_keys: list[str],
        in_memory: bool,
        channel_subset: Sequence[int] | None = None,
    ) -> None:
        self.parquets = resolve_files(path, SUFFIXES, "Parquet")
        self.image_key = image_key
        more = len(self.parquets) - 1
        name = self.parquets[0].stem + (f"_and_{more}_more" if more else "")
        cache = Path(cache_dir).expanduser() / f"{name}_{self.fingerprint()}.h5"
        super().__init__(cache, label_key, target_keys, in_memory, channel_subset)

    def fingerprint(self) -> str:
        return stable_hash(tuple(file_identity(path) for path in self.parquets), self.image_key)

    def prepare(self) -> None:
        """Check every file's columns first (their footers only): a bad file is named before a
        conversion of the others, and also when the cache was made for another label choice."""
        self._scalar_columns()
        super().prepare()

    def _scalar_columns(self) -> list[str]:
        """The numeric scalar columns all files have, after checking that each file has the
        image column and the configured label and targets."""
        wanted = [*([self.label_key] if self.label_key else []), *self.target_keys]
        common: list[str] | None = None
        for path in self.parquets:
            try:
                schema = pq.read_schema(path)
            except (pa.ArrowException, OSError) as err:
                raise UserError(
                    f"cannot read {path} as Parquet ({err}): set dataset.source.path to E2E "
                    "Parquet files"
                ) from err
            missing = [c for c in (self.image_key, *wanted) if c not in schema.names]
            if missing:
                raise UserError(
                    f"{path} has no column(s) {', '.join(missing)}; available: "
                    f"{', '.join(schema.names)} — set dataset.source.image_key/label_key/"
                    "target_keys, or leave the file out of dataset.source.path"
                )
            numeric = [field.name for field in schema if _is_number(field.type)]
            if not_numeric := [c for c in wanted if c not in numeric]:
                raise UserError(
                    f"column(s) {', '.join(not_numeric)} of {path} hold no numbers: set "
                    "dataset.source.label_key/target_keys to numeric columns"
                )
            common = numeric if common is None else [c for c in common if c in numeric]
        return common or []

    def write(self) -> None:
        columns = self._scalar_columns()
        rows = sum(pq.read_metadata(path).num_rows for path in self.parquets)
        with (
            replaced_atomically(self.path) as tmp,
            h5py.File(tmp, "w") as out,
            Progress() as progress,
        ):
            task = progress.add_task(
                f"Converting {len(self.parquets)} Parquet file(s) to {self.path}", total=rows
            )
            scalars = {c: out.create_dataset(c, (rows,), np.float64) for c in columns}
            writer: SparseImageWriter | None = None
            first: tuple[Path, tuple[int, ...]] | None = None  # the first file and its shape
            done = 0
            for path in self.parquets:
                reader = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
                with reader:
                    batches = reader.iter_batches(
                        BATCH_ROWS, columns=[self.image_key, *columns], use_threads=False
                    )
                    for batch in batches:
                        images = _dense_images(batch.column(self.image_key), self.image_key, path)
                        if first is None:
                            first = (path, images.shape[1:])
                            writer = SparseImageWriter(
                                out.create_group("X_jets"), rows, first[1], SPARSE_CHUNK_ENTRIES
                            )
                        elif images.shape[1:] != first[1]:
                            raise UserError(
                                f"{path} holds {self.image_key} images of shape "
                                f"{images.shape[1:]} but {first[0]} of {first[1]}: files read "
                                f"as one dataset must agree; leave {path.name} out of "
                                "dataset.source.path"
                            )
                        writer.append_dense(images)
                        for name, dataset in scalars.items():
                            values = batch.column(name).to_numpy(zero_copy_only=False)
                            dataset[done : done + len(images)] = values
                        done += len(images)
                        progress.advance(task, len(images))


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _dense_images(column: pa.Array, key: str, source: Path) -> np.ndarray:
    """Nested-list images (rows of C x H x W) as float32 [n, C, H, W]; ragged lists (which
    a reshape would silently misplace) are refused."""
    shape, level = [len(column)], column
    while any(is_list(level.type) for is_list in LIST_TYPES):
        lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
        if len(lengths) and not lengths.min() == lengths.max():  # NaN (a null list) fails too
            raise UserError(
                f"{source}: {key} rows are nested lists of unequal lengths (or nulls), not "
                "C x H x W images: fix the file or leave it out of dataset.source.path"
            )
        shape.append(int(lengths[0]) if len(lengths) else 0)
        level = level.flatten()
    if len(shape) != 4:  # rows -> channels -> image rows -> pixels
        raise UserError(f"{source}: {key} rows are not C x H x W nested lists")
    return np.asarray(level.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(shape)
