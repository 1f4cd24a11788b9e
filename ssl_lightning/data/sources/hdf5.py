"""Images from HDF5 files, read lazily per batch: dense arrays or a sparse (CSR) group.

Dense images are a 4-D dataset, channels-last (N, H, W, C), as in the E2E quark/gluon files'
`X_jets`, or channels-first (N, C, H, W). Jet images are mostly zeros, so large ones are stored
as a sparse group instead (format in `ssl_lightning.data.sparse_images`), densified per batch.
Several files in the same layout (a list, a glob or a folder) are read as one dataset, in
sorted path order, as public data sets come split into runs.

Reading is fastest through a memory map: an uncompressed, contiguous dataset (what h5py writes
by default) is read as a plain numpy array at its file offset, skipping HDF5's slow selections.
Chunked or compressed datasets go through h5py, one slice per run of consecutive rows (several
times faster there than h5py's fancy indexing).

HDF5 handles must not cross process boundaries: the handle is opened lazily, dropped when the
source is pickled (spawned DataLoader workers) and closed before every fork (forked workers), so
each process opens its own; memory maps are likewise rebuilt after unpickling.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ssl_lightning.data.sources.base import (
    ImageSource,
    file_identity,
    resolve_files,
    stable_hash,
)
from ssl_lightning.data.sparse_images import SPARSE_PARTS, check_sparse, densify, is_sparse
from ssl_lightning.errors import UserError

LAYOUTS = ("channels_last", "channels_first")
SUFFIXES = (".h5", ".hdf5", ".hdf")  # the files a folder in dataset.source.path contributes
MAX_CHANNELS_GUESS = 16  # an axis longer than this is taken to be spatial, not channels
NUMERIC_KINDS = "biuf"  # numpy dtype kinds accepted for pixels, labels and targets
MAX_LISTED = 30  # keys named in a "no such dataset" error
CHUNK_CACHE_BYTES = 64 << 20  # per-dataset chunk cache, so chunked files are not re-decompressed
CHUNK_CACHE_SLOTS = 100_003  # a prime well above the chunks that fit, as HDF5 advises

_open_files: weakref.WeakSet[HDF5File] = weakref.WeakSet()
_fork_hook_registered = False  # registered on the first open handle, not as a side effect of import


def _close_before_fork() -> None:
    for file in list(_open_files):
        file.close()


def _track_open(file: HDF5File) -> None:
    """Remember a file holding a handle, so that it is closed before every fork."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(before=_close_before_fork)
        _fork_hook_registered = True
    _open_files.add(file)


class HDF5Source(ImageSource):
    """Images (dense or sparse), optional class labels and regression targets from one or more
    HDF5 files in the same layout, concatenated in sorted path order."""

    def __init__(
        self,
        path: str | Sequence[str],
        image_key: str,
        layout: str,
        label_key: str | None,
        target_keys: list[str],
        in_memory: bool,
        channel_subset: Sequence[int] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise UserError(
                f"dataset.source.layout={layout!r} is not a layout: use channels_last "
                "(N, H, W, C) or channels_first (N, C, H, W)"
            )
        self.paths = resolve_files(path, SUFFIXES, "HDF5")
        self.image_key = image_key
        self.layout = layout
        self.label_key = label_key
        self.target_keys = list(target_keys)
        self.files = [
            HDF5File(
                file, image_key, layout, label_key, self.target_keys, in_memory, channel_subset
            )
            for file in self.paths
        ]
        first = self.files[0]
        for file in self.files[1:]:
            if file.stored_shape != first.stored_shape:
                raise UserError(
                    f"{file.path} holds {image_key!r} images of shape {file.stored_shape} (C, H, "
                    f"W) but {first.path} of {first.stored_shape}: files read as one dataset "
                    f"must agree; remove {file.path.name} from dataset.source.path"
                )
        lengths = [len(file) for file in self.files]
        self._starts = np.cumsum([0, *lengths[:-1]])  # each file's first row in the dataset
        self._num_samples = sum(lengths)
        self._labels = None if label_key is None else np.concatenate([f.labels for f in self.files])
        self._targets = {
            key: np.concatenate([f.targets[key] for f in self.files]) for key in self.target_keys
        }

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.files[0].image_shape

    def __len__(self) -> int:
        return self._num_samples

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return self._targets

    def fingerprint(self) -> str:
        return stable_hash(
            "hdf5",
            tuple(file_identity(path) for path in self.paths),
            self.image_key,
            self.layout,
            self.label_key,
            tuple(self.target_keys),
        )

    def prepare(self) -> None:
        """Hash the files once on rank 0, so the other ranks find their digests cached."""
        self.fingerprint()

    def read(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return np.zeros((0, *self.image_shape), dtype=np.float32)
        if indices.min() < 0 or indices.max() >= self._num_samples:
            raise IndexError(f"indices must lie in [0, {self._num_samples}) for {self.paths}")
        if len(self.files) == 1:
            return self.files[0].read(indices)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        out = None
        for number in np.unique(which):
            here = which == number
            rows = self.files[number].read(indices[here] - self._starts[number])
            if out is None:  # laid out in memory as one file's rows are
                out = np.empty_like(rows, shape=(len(indices), *rows.shape[1:]))
            out[here] = rows
        return out

    def close(self) -> None:
        """Close this process's handles; the next read reopens them."""
        for file in self.files:
            file.close()


def _channel_numbers(subset: Sequence[int] | None, stored: int) -> np.ndarray | None:
    """dataset.source.channel_subset checked against the `stored` channels of the files."""
    if subset is None:
        return None
    numbers = list(subset) if isinstance(subset, Sequence) and not isinstance(subset, str) else []
    if (
        not numbers
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)
        or len(set(numbers)) != len(numbers)
        or min(numbers) < 0
        or max(numbers) >= stored
    ):
        raise UserError(
            f"dataset.source.channel_subset={subset} must list distinct channel numbers of the "
            f"data's {stored} channels (0..{stored - 1}), e.g. [0, 1, 2], or be null for all"
        )
    return np.asarray(numbers, dtype=np.int64)


class HDF5File:
    """One file of an HDF5Source: its images, read by row, and its labels and targets."""

    def __init__(
        self,
        path: Path,
        image_key: str,
        layout: str,
        label_key: str | None,
        target_keys: list[str],
        in_memory: bool,
        channel_subset: Sequence[int] | None,
    ) -> None:
        self.path = path
        self.layout = layout
        self._handle: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}  # open parts of _handle (see _dataset)
        self._memory: dict[str, np.ndarray] = {}  # in_memory copies by part
        self._spans: dict[str, tuple[int, str, tuple[int, ...]]] = {}  # mappable parts
        self._maps: dict[str, np.ndarray] = {}  # this process's memory maps of those
        with corrupt_file_as_user_error(self.path), self._open_file() as f:
            node = _get(f, image_key, "dataset.source.image_key", self.path)
            self.sparse = isinstance(node, h5py.Group)
            if self.sparse:
                self.stored_shape, self._indptr = _check_sparse(node, image_key, self.path)
                self._num_samples = len(self._indptr) - 1
                self._parts = {part: f"{node.name}/{part}" for part in SPARSE_PARTS[1:]}
            else:
                self.stored_shape = _check_dense(node, image_key, layout, self.path)
                self._num_samples = len(node)
                self._parts = {"images": node.name}
            self.channels = _channel_numbers(channel_subset, self.stored_shape[0])
            for part, name in self._parts.items():
                if in_memory:
                    self._memory[part] = f[name][()]
                elif (span := _contiguous_span(f[name])) is not None:
                    self._spans[part] = span
            self.labels = None if label_key is None else self._read_labels(f, label_key)
            self.targets = {key: self._read_target(f, key) for key in target_keys}

    # --- metadata -----------------------------------------------------------------------------
    def _read_labels(self, f: h5py.File, key: str) -> np.ndarray:
        values = self._per_sample(f, key, "dataset.source.label_key")
        where = f"HDF5 dataset {key!r} in {self.path}"
        fix = "set dataset.source.label_key to a class-id dataset, or null for unlabelled data"
        if values.dtype.kind not in NUMERIC_KINDS:
            raise UserError(f"{where} has dtype {values.dtype}, not numeric class ids: {fix}")
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            bad = values[~(np.isfinite(values) & (values == np.round(values)))][0]
            raise UserError(f"{where} holds non-integer labels (e.g. {bad}): {fix}")
        if values.min(initial=0) < 0:
            raise UserError(f"{where} holds negative labels; class ids must be 0..K-1: {fix}")
        return values.astype(np.int64)

    def _read_target(self, f: h5py.File, key: str) -> np.ndarray:
        values = self._per_sample(f, key, "dataset.source.target_keys")
        if values.dtype.kind not in NUMERIC_KINDS:
            raise UserError(
                f"HDF5 dataset {key!r} in {self.path} has dtype {values.dtype}, not a numeric "
                "regression target: remove it from dataset.source.target_keys"
            )
        return values.astype(np.float32)

    def _per_sample(self, f: h5py.File, key: str, field: str) -> np.ndarray:
        """One value per image: shape (N,) or (N, 1)."""
        node = _get(f, key, field, self.path)
        if not isinstance(node, h5py.Dataset):
            raise UserError(f"{key!r} in {self.path} is a group, not a dataset: set {field}")
        values = node[()]
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != self._num_samples:
            raise UserError(
                f"HDF5 dataset {key!r} in {self.path} has shape {values.shape} but there are "
                f"{self._num_samples} images: it needs one value per image; fix the file or {field}"
            )
        return values

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) as read: the kept channels only."""
        if self.channels is None:
            return self.stored_shape
        return (len(self.channels), *self.stored_shape[1:])

    def __len__(self) -> int:
        return self._num_samples

    # --- reading ------------------------------------------------------------------------------
    def read(self, indices: np.ndarray) -> np.ndarray:
        """float32 [n, C, H, W] rows for valid, non-empty int64 `indices` of this file."""
        if self.sparse:
            return self._read_sparse(indices)
        images = self._direct("images")
        if images is not None:
            rows = images[indices]
        else:  # read each unique row once, in file order, then reorder/expand
            unique, inverse = np.unique(indices, return_inverse=True)
            rows = _read_runs(self._dataset("images"), unique, unique + 1)
            if not np.array_equal(unique, indices):
                rows = rows[inverse]
        rows = np.asarray(rows, dtype=np.float32)
        last = self.layout == "channels_last"
        if self.channels is not None:
            rows = np.take(rows, self.channels, axis=3 if last else 1)
        # channels-last rows as a transposed view, not copied: channels-last training keeps
        # them that way (a C-order copy here and the copy back on the device cost 1.2 of the
        # 1.4 ms a 256-jet batch took)
        return rows.transpose(0, 3, 1, 2) if last else rows

    def _read_sparse(self, indices: np.ndarray) -> np.ndarray:
        """Scatter each requested row's (index, value) entries into a zeroed dense batch."""
        starts = self._indptr[indices]
        counts = self._indptr[indices + 1] - starts
        index, value, offsets = self._direct("index"), self._direct("value"), starts
        if index is None or value is None:
            index, value, offsets = self._read_segments(indices)
        return densify(index, value, offsets, counts, self.stored_shape, self.channels)

    def _read_segments(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read the entries of the unique requested rows through h5py.

        Returns the concatenated index and value entries and, per requested row, the offset of
        its entries in them.
        """
        unique, inverse = np.unique(indices, return_inverse=True)
        starts, ends = self._indptr[unique], self._indptr[unique + 1]
        index, value = (
            _read_runs(self._dataset(part), starts, ends) for part in ("index", "value")
        )
        counts = ends - starts
        return index, value, (np.cumsum(counts) - counts)[inverse]

    def _direct(self, part: str) -> np.ndarray | None:
        """The part as a numpy array (in-memory copy or memory map), or None: use h5py."""
        if part in self._memory:
            return self._memory[part]
        if part not in self._maps and part in self._spans:
            offset, dtype, shape = self._spans[part]
            mapped = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
            self._maps[part] = np.asarray(mapped)  # plain ndarray view: results are not memmaps
        return self._maps.get(part)

    # --- file handle --------------------------------------------------------------------------
    def _open_file(self) -> h5py.File:
        try:
            return h5py.File(
                self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=CHUNK_CACHE_SLOTS
            )
        except OSError as err:
            raise UserError(
                f"cannot open {self.path} as HDF5 ({err}): set dataset.source.path to an HDF5 file"
            ) from err

    def _file(self) -> h5py.File:
        if self._handle is None:
            self._handle = self._open_file()
            _track_open(self)
        return self._handle

    def _dataset(self, part: str) -> h5py.Dataset:
        """The part's dataset, kept open: HDF5 drops a dataset's chunk cache when its last handle
        closes, so opening it per batch would decompress every chunk again for every batch."""
        if part not in self._datasets:
            self._datasets[part] = self._file()[self._parts[part]]
        return self._datasets[part]

    def close(self) -> None:
        """Close this process's handle; the next read reopens it."""
        self._datasets = {}
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_datasets"] = {}
        state["_maps"] = {}
        return state


@contextmanager
def corrupt_file_as_user_error(path: Path) -> Iterator[None]:
    """A damaged file (cut short, overwritten in part) opens, and then h5py fails deep inside
    HDF5 with an OSError, RuntimeError or KeyError: one line naming the file instead."""
    try:
        yield
    except (OSError, RuntimeError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{path} is damaged: HDF5 cannot read it ({reason}): re-create or re-download the "
            "file, or set dataset.source.path to another one"
        ) from err


def _get(f: h5py.File, key: str, field: str, path: Path) -> h5py.Dataset | h5py.Group:
    if key not in f:
        raise UserError(
            f"HDF5 file {path} has no dataset {key!r}; available: {_listing(f)} — set {field}"
        )
    return f[key]


def _listing(f: h5py.File) -> str:
    """The file's dataset and sparse-group paths, for error messages."""
    names: list[str] = []

    def visit(group: h5py.Group) -> None:
        for node in group.values():
            if isinstance(node, h5py.Group) and not is_sparse(node):
                visit(node)
            else:
                names.append(node.name.lstrip("/"))

    visit(f)
    shown = ", ".join(names[:MAX_LISTED]) or "(none)"
    return shown + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def _read_runs(dataset: h5py.Dataset, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Rows [start, end) for sorted, disjoint ranges, concatenated; back-to-back ranges are
    merged so each run costs one slice read."""
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    run_starts = starts[np.r_[0, breaks]].tolist()
    run_ends = ends[np.r_[breaks - 1, len(ends) - 1]].tolist()
    return np.concatenate([dataset[a:b] for a, b in zip(run_starts, run_ends, strict=True)])


def _contiguous_span(dataset: h5py.Dataset) -> tuple[int, str, tuple[int, ...]] | None:
    """(file offset, dtype, shape) if the dataset's bytes lie uncompressed in one run."""
    plist = dataset.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_external_count():
        return None
    offset = dataset.id.get_offset()  # None while no data has been written
    return None if offset is None else (offset, dataset.dtype.str, dataset.shape)


def _check_dense(node: h5py.Dataset, key: str, layout: str, path: Path) -> tuple[int, int, int]:
    """(C, H, W) of a dense image dataset, refusing shapes that cannot be (or obviously are not)
    the configured layout."""
    shape = node.shape
    where = f"HDF5 dataset {key!r} in {path} has shape {shape}"
    if len(shape) != 4:
        raise UserError(
            f"{where}, but images must be 4-D (N, H, W, C) or (N, C, H, W): add a channel axis "
            "when writing the file, or set dataset.source.image_key to the image dataset"
        )
    if node.dtype.kind not in NUMERIC_KINDS:
        raise UserError(f"{where} and dtype {node.dtype}, not numeric pixel values")
    _, a, b, c = shape
    if layout == "channels_last" and c > MAX_CHANNELS_GUESS >= a:
        raise UserError(
            f"{where}, which looks channels-first (N, C, H, W), but dataset.source.layout="
            "channels_last: set dataset.source.layout=channels_first"
        )
    if layout == "channels_first" and a > MAX_CHANNELS_GUESS >= c:
        raise UserError(
            f"{where}, which looks channels-last (N, H, W, C), but dataset.source.layout="
            "channels_first: set dataset.source.layout=channels_last"
        )
    return (c, a, b) if layout == "channels_last" else (a, b, c)


def _check_sparse(
    group: h5py.Group, key: str, path: Path
) -> tuple[tuple[int, int, int], np.ndarray]:
    """(C, H, W) and the in-memory indptr of the configured sparse image group."""
    where = f"HDF5 group {key!r} in {path}"
    if not is_sparse(group):
        raise UserError(
            f"{where} is not a sparse image group (needs datasets indptr, index, value and "
            f"attribute shape=(C, H, W)); available: {_listing(group.file)} — set "
            "dataset.source.image_key to an image dataset or sparse group"
        )
    return check_sparse(group, where)
