"""The sparse on-disk image format: one HDF5 group of CSR rows, how to write, check and densify it.

Jet images are mostly zeros, so large ones are stored as a group instead of a dense dataset:

- `indptr` int64 [N+1]: image i's entries are indptr[i]:indptr[i+1] (indptr[0] = 0),
- `index` int32 [nnz]: flat position in C*H*W, channels-first, increasing and unique per image,
- `value` float32 [nnz]: the pixel value at that position,
- group attribute `shape` = (C, H, W).

The generator, the Parquet converter and `HDF5Source` all use this module, so it depends on
h5py and numpy only: spawned generator workers must not pay for importing torch.
"""

from __future__ import annotations

import h5py
import numpy as np

from ssl_lightning.errors import UserError

SPARSE_PARTS = ("indptr", "index", "value")
SPARSE_CHUNK_ENTRIES = 65536  # uncompressed: a random row read touches one small chunk


class SparseImageWriter:
    """Streams images into `group` block by block, so a large file never needs all its dense
    images in memory."""

    def __init__(
        self, group: h5py.Group, num_images: int, shape: tuple[int, int, int], chunk_entries: int
    ) -> None:
        if int(np.prod(shape)) > np.iinfo(np.int32).max:
            raise ValueError(f"C*H*W={int(np.prod(shape))} does not fit the int32 index")
        group.attrs["shape"] = np.asarray(shape, dtype=np.int64)
        group.create_dataset("indptr", shape=(num_images + 1,), dtype=np.int64, fillvalue=0)
        for name, dtype in (("index", np.int32), ("value", np.float32)):
            group.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk_entries,)
            )
        self.group = group
        self.rows = 0
        self.nnz = 0

    def append_sparse(self, counts: np.ndarray, index: np.ndarray, value: np.ndarray) -> None:
        """Add rows given as per-row entry counts plus their concatenated (index, value)."""
        lo, hi = self.rows, self.rows + len(counts)
        self.group["indptr"][lo + 1 : hi + 1] = self.nnz + np.cumsum(counts)
        end = self.nnz + len(index)
        for name, data in (("index", index), ("value", value)):
            self.group[name].resize((end,))
            self.group[name][self.nnz : end] = data
        self.rows, self.nnz = hi, end

    def append_dense(self, images: np.ndarray) -> None:
        """Add float32 [n, C, H, W] images, keeping their non-zero pixels."""
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
        rows, cols = np.nonzero(flat)
        counts = np.bincount(rows, minlength=len(flat))
        self.append_sparse(counts, cols.astype(np.int32), flat[rows, cols])


def write_sparse_images(group: h5py.Group, images: np.ndarray) -> None:
    """Store float32 [N, C, H, W] images in `group` in the sparse format, in one go."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {images.shape}")
    writer = SparseImageWriter(group, len(images), images.shape[1:], SPARSE_CHUNK_ENTRIES)
    writer.append_dense(images)


def is_sparse(group: h5py.Group) -> bool:
    """Whether `group` has the parts of the format (not whether they are consistent)."""
    return all(part in group for part in SPARSE_PARTS) and "shape" in group.attrs


def check_sparse(group: h5py.Group, where: str) -> tuple[tuple[int, int, int], np.ndarray]:
    """(C, H, W) and the in-memory indptr of a group that `is_sparse`, after checking that they
    agree with the entries: a corrupt group would otherwise scatter pixels into wrong images."""
    shape = tuple(int(n) for n in np.asarray(group.attrs["shape"]).ravel())
    indptr = group["indptr"][()].astype(np.int64)
    nnz = len(group["index"])
    if (
        len(shape) != 3
        or indptr.ndim != 1
        or len(indptr) < 1
        or indptr[0] != 0
        or indptr[-1] != nnz
        or len(group["value"]) != nnz
        or np.any(np.diff(indptr) < 0)
    ):
        raise UserError(
            f"{where} is a corrupt sparse image group (shape attribute {shape}, {len(indptr)} "
            f"indptr, {nnz} index, {len(group['value'])} value entries): rewrite it with "
            "ssl_lightning.data.sparse_images.write_sparse_images"
        )
    return (shape[0], shape[1], shape[2]), indptr


def densify(
    index: np.ndarray,
    value: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    shape: tuple[int, int, int],
    channels: np.ndarray | None = None,
) -> np.ndarray:
    """float32 [n, C, H, W] images; image i holds the entries offsets[i]:offsets[i] + counts[i]
    of (index, value). One scatter for the whole batch, no loop over images.

    `channels` (stored channel numbers, or None for all) keeps those channels in that order:
    the other channels' entries are dropped before the scatter, never densified.
    """
    plane = shape[1] * shape[2]
    kept_shape = shape if channels is None else (len(channels), shape[1], shape[2])
    size = kept_shape[0] * plane
    total = int(counts.sum())
    # position of every requested entry in (index, value): concatenated aranges per row
    entry = np.repeat(offsets - (np.cumsum(counts) - counts), counts) + np.arange(total)
    start = np.repeat(np.arange(len(counts), dtype=np.int64) * size, counts)  # its image's
    position = index[entry]
    if channels is not None:
        renumbered = np.full(shape[0], -1, dtype=np.int64)
        renumbered[channels] = np.arange(len(channels))
        channel = renumbered[position // plane]
        kept = channel >= 0
        entry, start = entry[kept], start[kept]
        position = channel[kept] * plane + position[kept] % plane
    out = np.zeros((len(counts), size), dtype=np.float32)
    out.reshape(-1)[start + position] = value[entry]
    return out.reshape(len(counts), *kept_shape)
