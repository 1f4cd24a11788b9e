"""The output file: X_jets (dense or sparse) and the per-jet datasets, provenance attributes,
and an atomic write, so a failed or interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ssl_lightning import __version__
from ssl_lightning.atomic_files import replaced_atomically
from ssl_lightning.data.sparse_images import SPARSE_CHUNK_ENTRIES, SparseImageWriter
from ssl_lightning.errors import UserError
from ssl_lightning.generator.config import (
    FORMAT_VERSION,
    GENERATOR,
    JetGenConfig,
    config_fingerprint,
    library_versions,
)
from ssl_lightning.generator.physics import CHANNELS, SCALARS, Chunk, pythia_settings

DENSE_CHUNK_ROWS = 32  # HDF5 chunk of dense X_jets; divides a block, so each is written once
DENSE_MAX_SIZE = 64  # --sparse auto stores larger images sparse
SPARSE_CHOICES = ("auto", "yes", "no")


class JetFileWriter:
    """Streams blocks into X_jets (dense channels-last, or the sparse group) and the scalars."""

    def __init__(self, f: h5py.File, config: JetGenConfig, sparse: bool) -> None:
        n, size = config.num_jets, config.image_size
        self.shape = (3, size, size)
        self.sparse = sparse
        self.f = f
        self.done = 0
        # gzip level 1: ~40x smaller dense images (mostly zeros) for a few ms per block
        gzip = {"compression": "gzip", "compression_opts": 1}
        if sparse:
            group = f.create_group("X_jets")
            self.sparse_writer = SparseImageWriter(group, n, self.shape, SPARSE_CHUNK_ENTRIES)
        else:
            f.create_dataset(
                "X_jets",
                shape=(n, size, size, 3),
                dtype=np.float32,
                chunks=(min(n, DENSE_CHUNK_ROWS), size, size, 3),
                **gzip,
            )
        for key, dtype in SCALARS.items():
            f.create_dataset(key, shape=(n,), dtype=dtype)

    def write(self, block: Chunk) -> None:
        lo, hi = self.done, self.done + len(block.nnz)
        if self.sparse:
            self.sparse_writer.append_sparse(block.nnz, block.index, block.value)
        else:
            self.f["X_jets"][lo:hi] = block.dense(self.shape).transpose(0, 2, 3, 1)
        for key in SCALARS:
            self.f[key][lo:hi] = block.scalars[key]
        self.done = hi


def use_sparse(sparse: str, image_size: int) -> bool:
    """Whether X_jets is stored sparse, for the `--sparse` choice `sparse`."""
    if sparse not in SPARSE_CHOICES:
        raise UserError(f"sparse={sparse!r} is not one of {', '.join(SPARSE_CHOICES)}: pick one")
    return sparse == "yes" or (sparse == "auto" and image_size > DENSE_MAX_SIZE)


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """A temporary file to write, moved onto `out` only if the block succeeds (`atomic_files`);
    a bad output path is a UserError before any jet is generated."""
    if out.is_dir():
        raise UserError(f"output {out} is a folder: give a file path such as {out / 'jets.h5'}")
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist: create it or change the path")
    with replaced_atomically(out) as tmp:
        try:
            tmp.open("xb").close()  # fails now, not after the generation, in a read-only folder
        except OSError as err:
            raise UserError(
                f"cannot write in {out.parent} ({err.strerror}): choose a writable output folder"
            ) from err
        yield tmp


def write_attributes(
    f: h5py.File, config: JetGenConfig, sparse: bool, events: int, command: str | None
) -> None:
    """Provenance: generator and library versions, every setting, the command and the layout."""
    f.attrs.update(
        {
            "generator": GENERATOR,
            "generator_version": __version__,
            "format_version": FORMAT_VERSION,
            **library_versions(),
            **dataclasses.asdict(config),
            "fingerprint": config_fingerprint(config),
            "events_generated": events,
            "command": shlex.join(sys.argv) if command is None else command,
            "pythia_settings_quark": "\n".join(pythia_settings(config, 1)),
            "pythia_settings_gluon": "\n".join(pythia_settings(config, 0)),
            "storage": "sparse" if sparse else "dense channels_last (N, H, W, C)",
            "channels": list(CHANNELS),
            "image_axes": "rows: eta, columns: phi, centred on the jet axis",
            "labels": "y=1 quark jet (qg -> Zq), y=0 gluon jet (qqbar -> Zg)",
            "jet_algorithm": f"anti-kT R={config.jet_r}, visible final-state particles",
        }
    )
