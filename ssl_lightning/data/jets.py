"""`ssl-make-jets`: quark and gluon jet images from Pythia 8 + FastJet, in the E2E file layout.

Quark jets come from qg -> Z q and gluon jets from q qbar -> Z g with Z -> neutrinos, so the jet
recoils alone against invisible particles. Visible final-state particles are clustered with
anti-kT R=0.4; the leading jet inside |eta| < eta_max is kept when its pT lies in the window
(without the window gluon jets come out softer and pT alone separates the classes).

Every jet becomes a 3-channel eta-phi image centred on the jet axis (rows: eta, columns: phi),
pixel value = summed pT of the jet's constituents: 0 charged particles except electrons
(tracks), 1 photons and electrons (ECAL), 2 neutral hadrons (HCAL).

Reproducibility: jets are made in fixed-size chunks per class, each seeded from (seed, class,
chunk index), and written in chunk order, so the output does not depend on the worker count.
Each block (chunk k of both classes) is shuffled with its own seed, which mixes the classes;
all jets are independent draws, so a block-wise shuffle is as good as a global one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.metadata
import math
import multiprocessing
import numbers
import os
import secrets
import shlex
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import fastjet
import h5py
import numpy as np
import pythia8mc
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

from ssl_lightning import __version__
from ssl_lightning.errors import UserError

GENERATOR = "ssl_lightning.data.jets"
FORMAT_VERSION = 1  # bump when the same JetGenConfig would give different arrays
CHUNK_JETS = 64  # jets per class per chunk: fixed, so the output never depends on `workers`
DENSE_CHUNK_ROWS = 32  # HDF5 chunk of dense X_jets; divides a block, so each is written once
DENSE_MAX_SIZE = 64  # --sparse auto stores larger images sparse
MAX_IMAGE_SIZE = 1024  # keeps 3*H*W inside the int32 sparse index
CHANNELS = ("tracks", "ecal", "hcal")
SPARSE_CHOICES = ("auto", "yes", "no")
NEUTRINOS = (12, 14, 16)
ECAL_IDS = (11, 22)  # electrons and photons deposit in the ECAL, not as tracks
PYTHIA_SEED_MAX = 900_000_000  # Pythia accepts seeds 0..900_000_000; 0 means "from the clock"
PROCESSES = {1: "WeakBosonAndParton:qg2gmZq", 0: "WeakBosonAndParton:qqbar2gmZg"}  # y -> process
# SeedSequence keys, so the seeds for Pythia's init, each chunk and each shuffle never collide
INIT_KEY, CHUNK_KEY, SHUFFLE_KEY = 0, 1, 2
MIN_ACCEPTANCE = 0.01  # below this after MIN_EVENTS_FOR_GIVING_UP events the window is hopeless
MIN_EVENTS_FOR_GIVING_UP = 1000
MAX_BATCH_EVENTS = 250  # bounds the wasted work before giving up
# per-jet datasets next to X_jets, as in the E2E files (y is float 0/1 there too)
SCALARS = {
    "y": np.float32,
    "pt": np.float32,
    "m0": np.float32,
    "nconst": np.int32,
    "eta": np.float32,
    "phi": np.float32,
}
INT_FIELDS = ("num_jets", "seed", "image_size")
FLOAT_FIELDS = (
    "pixel_width",
    "pt_min",
    "pt_max",
    "eta_max",
    "pthat_min",
    "pthat_max",
    "jet_r",
    "ecm",
)


@dataclass(frozen=True)
class JetGenConfig:
    """Everything that determines the generated arrays (storage format aside).

    `pthat_min`/`pthat_max` (Pythia's hard-process pT range) default to the jet pT window: a hard
    process near the window gives most jets inside it, which is what makes generation cheap.
    """

    num_jets: int
    seed: int
    image_size: int = 32
    pixel_width: float = 0.025
    pt_min: float = 500.0
    pt_max: float = 550.0
    eta_max: float = 2.5
    pthat_min: float | None = None
    pthat_max: float | None = None
    jet_r: float = 0.4
    ecm: float = 14000.0

    def __post_init__(self) -> None:
        if self.pthat_min is None:
            object.__setattr__(self, "pthat_min", self.pt_min)
        if self.pthat_max is None:
            object.__setattr__(self, "pthat_max", self.pt_max)
        # plain int/float (also from numpy or YAML), so that 500 and 500.0 fingerprint alike
        for names, kind, cast in (
            (INT_FIELDS, numbers.Integral, int),
            (FLOAT_FIELDS, numbers.Real, float),
        ):
            for name in names:
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, kind):
                    what = "an integer" if cast is int else "a number"
                    raise UserError(f"{name}={value!r} is not {what}: set it to {what}")
                object.__setattr__(self, name, cast(value))
        _validate(self)


def _validate(c: JetGenConfig) -> None:
    """One UserError per bad setting, naming the problem and the fix."""
    if c.num_jets < 2 or c.num_jets % 2:
        raise UserError(
            f"num_jets={c.num_jets!r} must be an even number >= 2 (half quark, half gluon "
            "jets): use e.g. 1000"
        )
    if not 0 <= c.seed < 2**63:
        raise UserError(f"seed={c.seed!r} must be an integer in 0..2**63-1: use e.g. 0")
    if not 1 <= c.image_size <= MAX_IMAGE_SIZE:
        raise UserError(
            f"image_size={c.image_size!r} must be an integer in 1..{MAX_IMAGE_SIZE}: use e.g. 32"
        )
    positive = {"pixel_width": c.pixel_width, "eta_max": c.eta_max, "jet_r": c.jet_r}
    positive |= {"pthat_min": c.pthat_min, "ecm": c.ecm}
    for name, value in positive.items():
        if not value > 0:
            raise UserError(f"{name}={value!r} must be > 0: use e.g. the default")
    if not 0 <= c.pt_min < c.pt_max:
        raise UserError(
            f"the jet pT window pt_min={c.pt_min!r}, pt_max={c.pt_max!r} is empty: "
            "set 0 <= pt_min < pt_max (default 500, 550)"
        )
    if not c.pthat_min < c.pthat_max <= c.ecm / 2:
        raise UserError(
            f"pthat_min={c.pthat_min!r}, pthat_max={c.pthat_max!r} is no hard-process pT range "
            f"at eCM={c.ecm!r}: set pthat_min < pthat_max <= eCM/2, near the jet pT window"
        )


def library_versions() -> dict[str, str]:
    """Versions that change the generated events, for file attributes and the fingerprint."""
    return {
        "pythia8_version": importlib.metadata.version("pythia8mc"),
        "fastjet_version": fastjet.__version__,
    }


def config_fingerprint(config: JetGenConfig) -> str:
    """Short stable hash of everything that determines the arrays, for caching generated data."""
    settings = tuple(sorted(dataclasses.asdict(config).items()))
    parts = (GENERATOR, FORMAT_VERSION, settings, tuple(sorted(library_versions().items())))
    # hashlib here, not sources.base.stable_hash: importing the sources package pulls in torch,
    # seconds of start-up in every spawned worker
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def pythia_settings(config: JetGenConfig, label: int) -> list[str]:
    """Pythia `readString` lines for class `label` (1 quark, 0 gluon), without the seed."""
    return [
        f"Beams:eCM = {config.ecm}",
        f"{PROCESSES[label]} = on",
        "WeakZ0:gmZmode = 2",  # pure Z, no photon
        "23:onMode = off",
        "23:onIfAny = 12 14 16",  # Z -> neutrinos: nothing visible recoils against the jet
        f"PhaseSpace:pTHatMin = {config.pthat_min}",
        f"PhaseSpace:pTHatMax = {config.pthat_max}",
        "Print:quiet = on",
        "Next:numberCount = 0",
    ]


def _seed(config: JetGenConfig, *key: int) -> int:
    """A seed in 1..PYTHIA_SEED_MAX from (config.seed, *key); never 0, Pythia's clock seed."""
    state = np.random.SeedSequence([config.seed, *key]).generate_state(1, np.uint64)[0]
    return 1 + int(state % PYTHIA_SEED_MAX)


# --- one chunk of jets ------------------------------------------------------------------------
@dataclass
class _Chunk:
    """Jets of one class from one chunk; images as sorted sparse entries per jet."""

    scalars: dict[str, np.ndarray]
    nnz: np.ndarray  # int64 [n]: entries of jet i
    index: np.ndarray  # int32: flat position in (C, H, W) of each entry
    value: np.ndarray  # float32: summed pT of each entry
    events: int  # Pythia events it took

    def dense(self, shape: tuple[int, int, int]) -> np.ndarray:
        """float32 [n, C, H, W] images."""
        size = int(np.prod(shape))
        out = np.zeros((len(self.nnz), size), dtype=np.float32)
        rows = np.repeat(np.arange(len(self.nnz)), self.nnz)
        out[rows, self.index] = self.value
        return out.reshape(len(self.nnz), *shape)


class _EventGenerator:
    """Pythia per class, initialised once per process and re-seeded for every chunk.

    Re-seeding (instead of a new Pythia, ~0.4 s init) keeps a chunk's events a function of its
    seed alone: init uses the same seed in every process and no state carries between events.
    """

    def __init__(self, config: JetGenConfig) -> None:
        self.config = config
        self._pythia: dict[int, pythia8mc.Pythia] = {}
        self._charged: dict[int, bool] = {}
        self._jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_r)
        # no FastJet banner in the progress bar (the awkward-array wrapper hides the SWIG class)
        fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)

    def _pythia_for(self, label: int) -> pythia8mc.Pythia:
        if label not in self._pythia:
            pythia = pythia8mc.Pythia("", False)
            init_seed = _seed(self.config, INIT_KEY, label)
            settings = pythia_settings(self.config, label)
            for line in [*settings, "Random:setSeed = on", f"Random:seed = {init_seed}"]:
                if not pythia.readString(line):
                    raise RuntimeError(f"Pythia rejected the setting {line!r}")
            if not pythia.init():
                raise RuntimeError(f"Pythia failed to initialise with {settings}")
            self._pythia[label] = pythia
        return self._pythia[label]

    def chunk(self, label: int, index: int, size: int) -> _Chunk:
        """`size` jets of class `label` inside the window, from chunk `index`'s seed."""
        pythia = self._pythia_for(label)
        pythia.rndm.init(_seed(self.config, CHUNK_KEY, label, index))
        parts: list[dict[str, np.ndarray]] = []
        accepted = tried = 0
        while accepted < size:
            acceptance = (accepted + 1) / (tried + 2)  # Laplace's rule: 1/2 at first, never 0
            # aim slightly low: another small batch is cheaper than discarding surplus events
            batch = math.ceil((size - accepted) / min(1.0, 1.25 * acceptance))
            batch = min(max(batch, 4), MAX_BATCH_EVENTS)
            events = pythia.nextBatch(batch)
            tried += len(events)
            part = self._leading_jets(events)
            parts.append(part)
            accepted += len(part["pt"])
            if tried >= MIN_EVENTS_FOR_GIVING_UP and accepted < MIN_ACCEPTANCE * tried:
                raise UserError(
                    f"only {accepted} of {tried} events gave a jet with {self.config.pt_min} <= "
                    f"pT < {self.config.pt_max} GeV and |eta| < {self.config.eta_max}: widen "
                    "the window or move pthat_min/pthat_max next to it"
                )
        jets = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        last = np.cumsum(jets["nconst"])[size - 1]  # drop surplus jets and their constituents
        jets = {key: v[:last] if key.startswith("c_") else v[:size] for key, v in jets.items()}
        nnz, flat, value = self._images(jets, pythia.particleData)
        scalars = {key: jets[key].astype(dtype) for key, dtype in SCALARS.items() if key != "y"}
        scalars["y"] = np.full(size, label, dtype=np.float32)
        return _Chunk(scalars, nnz, flat, value, tried)

    def _leading_jets(self, events: ak.Array) -> dict[str, np.ndarray]:
        """Kinematics and constituents (keys c_*) of the events' accepted leading jets.

        Works on flat numpy arrays: awkward's per-event operations cost more than the clustering.
        """
        cfg = self.config
        prt = ak.flatten(events.prt)
        pid, status = ak.to_numpy(prt.id), ak.to_numpy(prt.status)
        visible = (status > 0) & ~np.isin(np.abs(pid), NEUTRINOS)  # isFinal, no neutrinos
        event = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(events.prt)))[visible]
        pid = pid[visible]
        px, py, pz, e = (ak.to_numpy(prt.p[k])[visible] for k in ("px", "py", "pz", "e"))
        counts = np.bincount(event, minlength=len(events))
        particles = ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": e}), counts)
        cluster = fastjet.ClusterSequence(particles, self._jet_def)
        jets = cluster.inclusive_jets(min_pt=cfg.pt_min)  # softer jets can never pass
        jx, jy, jz, je = (ak.to_numpy(ak.flatten(jets[k])) for k in ("px", "py", "pz", "E"))
        jet_event = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(jets)))
        pt = np.hypot(jx, jy)
        eta = np.arcsinh(jz / pt)
        # leading jet inside |eta| < eta_max: sort by (event, pT) and take each event's last
        ranked = np.where(np.abs(eta) < cfg.eta_max, pt, -1.0)
        order = np.lexsort((ranked, jet_event))
        events_in_order = jet_event[order]
        lead = order[np.append(events_in_order[1:] != events_in_order[:-1], True)[: len(order)]]
        lead = lead[(ranked[lead] >= cfg.pt_min) & (ranked[lead] < cfg.pt_max)]

        # constituents: per jet, indices into its event's particles
        members = ak.flatten(cluster.constituent_index(min_pt=cfg.pt_min), axis=1)
        sizes = ak.to_numpy(ak.num(members))
        nconst = sizes[lead]
        first = (np.cumsum(sizes) - sizes)[lead]
        position = np.repeat(first - (np.cumsum(nconst) - nconst), nconst) + np.arange(nconst.sum())
        event_start = (np.cumsum(counts) - counts)[jet_event[lead]]
        flat = np.repeat(event_start, nconst) + ak.to_numpy(ak.flatten(members))[position]
        mass2 = je[lead] ** 2 - jx[lead] ** 2 - jy[lead] ** 2 - jz[lead] ** 2
        return {
            "pt": pt[lead],
            "eta": eta[lead],
            "phi": np.arctan2(jy[lead], jx[lead]),
            "m0": np.sqrt(np.maximum(mass2, 0.0)),
            "nconst": nconst,
            "c_px": px[flat],
            "c_py": py[flat],
            "c_pz": pz[flat],
            "c_id": pid[flat],
        }

    def _images(
        self, jets: dict[str, np.ndarray], particle_data: pythia8mc.ParticleData
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse images: entries per jet, sorted flat (C, H, W) indices and summed pT."""
        size, width = self.config.image_size, self.config.pixel_width
        n = len(jets["pt"])
        jet = np.repeat(np.arange(n), jets["nconst"])
        pt = np.hypot(jets["c_px"], jets["c_py"])
        with np.errstate(divide="ignore"):  # pT = 0 along the beam: eta = inf, off the grid
            deta = np.arcsinh(jets["c_pz"] / pt) - jets["eta"][jet]
        dphi = np.arctan2(jets["c_py"], jets["c_px"]) - jets["phi"][jet]
        dphi = (dphi + np.pi) % (2 * np.pi) - np.pi  # phi wraps around
        row = np.floor(deta / width + size / 2)
        col = np.floor(dphi / width + size / 2)
        inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
        channel = self._channels(jets["c_id"], particle_data)
        flat = ((jet * 3 + channel) * size + row) * size + col  # float64 is exact here
        keys, where = np.unique(flat[inside].astype(np.int64), return_inverse=True)
        value = np.bincount(where, weights=pt[inside], minlength=len(keys)).astype(np.float32)
        pixels = size * size * 3
        nnz = np.bincount(keys // pixels, minlength=n).astype(np.int64)
        return nnz, (keys % pixels).astype(np.int32), value

    def _channels(self, pid: np.ndarray, particle_data: pythia8mc.ParticleData) -> np.ndarray:
        """0 tracks (charged, not electrons), 1 ECAL (photons, electrons), 2 HCAL (neutral)."""
        ids, where = np.unique(pid, return_inverse=True)
        for i in ids.tolist():
            if i not in self._charged:
                self._charged[i] = particle_data.chargeType(i) != 0
        charged = np.array([self._charged[i] for i in ids.tolist()], dtype=bool)[where]
        return np.where(np.isin(np.abs(pid), ECAL_IDS), 1, np.where(charged, 0, 2))


_worker: _EventGenerator | None = None


def _init_worker(config: JetGenConfig) -> None:
    """Runs once per spawned process: Pythia is set up per process, not per chunk."""
    global _worker
    _worker = _EventGenerator(config)


def _worker_chunk(task: tuple[int, int, int]) -> _Chunk:
    assert _worker is not None, "worker process was not initialised"
    return _worker.chunk(*task)


# --- parallel generation and writing ----------------------------------------------------------
def _tasks(config: JetGenConfig) -> list[tuple[int, int, int]]:
    """(label, chunk index, size) in block order: chunk k of quarks, then of gluons."""
    per_class = config.num_jets // 2
    sizes = [min(CHUNK_JETS, per_class - start) for start in range(0, per_class, CHUNK_JETS)]
    return [(label, k, size) for k, size in enumerate(sizes) for label in (1, 0)]


def _chunks(config: JetGenConfig, workers: int) -> Iterator[_Chunk]:
    """All chunks in task order, generated in this process or in `workers` spawned ones.

    Only one task per worker is handed out at a time (not all, as Executor.map does), so that
    after an error or Ctrl-C the pool stops at once instead of finishing queued chunks.
    """
    tasks = _tasks(config)
    if workers == 1:
        generator = _EventGenerator(config)
        for task in tasks:
            yield generator.chunk(*task)
        return
    workers = min(workers, len(tasks))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # no forked locks or HDF5 handles
        initializer=_init_worker,
        initargs=(config,),
    )
    running: dict[int, Future[_Chunk]] = {}
    finished: dict[int, _Chunk] = {}  # done out of order, waiting for earlier chunks
    submitted = 0
    try:
        for i in range(len(tasks)):
            while i not in finished:
                while submitted < len(tasks) and len(running) < workers:
                    running[submitted] = pool.submit(_worker_chunk, tasks[submitted])
                    submitted += 1
                wait(running.values(), return_when=FIRST_COMPLETED)
                for j in [j for j, future in running.items() if future.done()]:
                    finished[j] = running.pop(j).result()
            yield finished.pop(i)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _blocks(config: JetGenConfig, chunks: Iterable[_Chunk]) -> Iterator[_Chunk]:
    """Quark and gluon chunk k merged and shuffled with block k's own seed."""
    shape = (3, config.image_size, config.image_size)
    it = iter(chunks)
    for k, (quark, gluon) in enumerate(zip(it, it, strict=True)):
        images = np.concatenate([quark.dense(shape), gluon.dense(shape)])
        rng = np.random.default_rng([config.seed, SHUFFLE_KEY, k])
        order = rng.permutation(len(images))
        flat = images[order].reshape(len(images), -1)
        rows, index = np.nonzero(flat)
        scalars = {
            key: np.concatenate([quark.scalars[key], gluon.scalars[key]])[order] for key in SCALARS
        }
        nnz = np.bincount(rows, minlength=len(images)).astype(np.int64)
        yield _Chunk(
            scalars, nnz, index.astype(np.int32), flat[rows, index], quark.events + gluon.events
        )


class _Writer:
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
            # imported here: the sources package loads torch, which spawned workers do not need
            from ssl_lightning.data.sources.hdf5 import SPARSE_CHUNK_ENTRIES, SparseImageWriter

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

    def write(self, block: _Chunk) -> None:
        lo, hi = self.done, self.done + len(block.nnz)
        if self.sparse:
            self.sparse_writer.append_sparse(block.nnz, block.index, block.value)
        else:
            self.f["X_jets"][lo:hi] = block.dense(self.shape).transpose(0, 2, 3, 1)
        for key in SCALARS:
            self.f[key][lo:hi] = block.scalars[key]
        self.done = hi


class _RateColumn(ProgressColumn):
    """Average jets per second so far (rich's own speed columns are for bytes)."""

    def render(self, task: Task) -> Text:
        rate = f"{task.completed / task.elapsed:.1f}" if task.completed and task.elapsed else "-"
        return Text(f"{rate} jets/s", style="progress.data.speed")


def _use_sparse(sparse: str, image_size: int) -> bool:
    if sparse not in SPARSE_CHOICES:
        raise UserError(f"sparse={sparse!r} is not one of {', '.join(SPARSE_CHOICES)}: pick one")
    return sparse == "yes" or (sparse == "auto" and image_size > DENSE_MAX_SIZE)


def _temporary_file(out: Path) -> Path:
    """A new empty file next to `out`, so that os.replace onto `out` is atomic."""
    if out.is_dir():
        raise UserError(f"output {out} is a folder: give a file path such as {out / 'jets.h5'}")
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist: create it or change the path")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.open("xb").close()  # honours the umask, unlike tempfile.mkstemp's mode 0600
    except OSError as err:
        raise UserError(
            f"cannot write in {out.parent} ({err.strerror}): choose a writable output folder"
        ) from err
    return tmp


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
    use_sparse = _use_sparse(sparse, config.image_size)
    tmp = _temporary_file(out)
    columns = (
        TextColumn("jets"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    chunks = _chunks(config, workers)
    try:
        with (
            h5py.File(tmp, "w") as f,
            Progress(*columns, console=Console(stderr=True), disable=not progress) as bar,
        ):
            task = bar.add_task("jets", total=config.num_jets)
            writer = _Writer(f, config, use_sparse)
            events = 0
            for block in _blocks(config, chunks):
                writer.write(block)
                events += block.events
                bar.update(task, completed=writer.done)
            _write_attributes(f, config, use_sparse, events, command)
        os.replace(tmp, out)
    finally:
        chunks.close()  # stops the worker processes now, also after an error
        tmp.unlink(missing_ok=True)
    return out


def _write_attributes(
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


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = JetGenConfig(num_jets=2, seed=0)  # the defaults, shown by --help
    p = argparse.ArgumentParser(
        prog="ssl-make-jets",
        description="Generate quark/gluon jet images (Pythia 8, anti-kT R=0.4) into an HDF5 "
        "file in the E2E layout (X_jets, y, pt, m0, nconst, eta, phi).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--num-jets", type=int, required=True, help="total jets, even (half per class)")
    p.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    p.add_argument("--image-size", type=int, default=d.image_size, help="pixels per side")
    p.add_argument("--pixel-width", type=float, default=d.pixel_width, help="in eta and phi")
    p.add_argument("--workers", type=int, default=1, help="generator processes")
    p.add_argument("--pt-min", type=float, default=d.pt_min, help="jet pT window low edge, GeV")
    p.add_argument("--pt-max", type=float, default=d.pt_max, help="jet pT window high edge, GeV")
    p.add_argument("--eta-max", type=float, default=d.eta_max, help="jet |eta| limit")
    p.add_argument(
        "--pthat-min", type=float, default=None, help="Pythia pTHatMin, GeV (default: --pt-min)"
    )
    p.add_argument(
        "--pthat-max", type=float, default=None, help="Pythia pTHatMax, GeV (default: --pt-max)"
    )
    p.add_argument(
        "--sparse",
        choices=SPARSE_CHOICES,
        default="auto",
        help=f"sparse X_jets group instead of a dense array (auto: images > {DENSE_MAX_SIZE} px)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Console script `ssl-make-jets`: bad input ends in one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        config = JetGenConfig(
            num_jets=args.num_jets,
            seed=args.seed,
            image_size=args.image_size,
            pixel_width=args.pixel_width,
            pt_min=args.pt_min,
            pt_max=args.pt_max,
            eta_max=args.eta_max,
            pthat_min=args.pthat_min,
            pthat_max=args.pthat_max,
        )
        start = time.perf_counter()
        out = generate_jets(
            config,
            args.out,
            workers=args.workers,
            progress=True,
            sparse=args.sparse,
            command=shlex.join(["ssl-make-jets", *argv]),
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"error: interrupted; {args.out} was not written", file=sys.stderr)
        raise SystemExit(130) from None
    seconds = time.perf_counter() - start
    print(
        f"wrote {config.num_jets} jets to {out} ({out.stat().st_size / 1e6:.1f} MB) in "
        f"{seconds:.1f} s: {config.num_jets / seconds:.1f} jets/s"
    )


if __name__ == "__main__":
    main()
