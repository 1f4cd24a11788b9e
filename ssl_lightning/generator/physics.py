"""The physics: Pythia 8 events, FastJet clustering, leading-jet selection and jet images.

Quark jets come from qg -> Z q and gluon jets from q qbar -> Z g with Z -> neutrinos, so the jet
recoils alone against invisible particles. Visible final-state particles are clustered with
anti-kT R=0.4; the leading jet inside |eta| < eta_max is kept when its pT lies in the window
(without the window gluon jets come out softer and pT alone separates the classes).

Every jet becomes a 3-channel eta-phi image centred on the jet axis (rows: eta, columns: phi),
pixel value = summed pT of the jet's constituents: 0 charged particles except electrons
(tracks), 1 photons and electrons (ECAL), 2 neutral hadrons (HCAL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import awkward as ak
import fastjet
import numpy as np
import pythia8mc

from ssl_lightning.data.sparse_images import densify
from ssl_lightning.errors import UserError
from ssl_lightning.generator.config import CHUNK_KEY, INIT_KEY, JetGenConfig

CHANNELS = ("tracks", "ecal", "hcal")
NEUTRINOS = (12, 14, 16)
ECAL_IDS = (11, 22)  # electrons and photons deposit in the ECAL, not as tracks
PYTHIA_SEED_MAX = 900_000_000  # Pythia accepts seeds 0..900_000_000; 0 means "from the clock"
PROCESSES = {1: "WeakBosonAndParton:qg2gmZq", 0: "WeakBosonAndParton:qqbar2gmZg"}  # y -> process
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


@dataclass
class Chunk:
    """Jets of one class from one chunk (or a shuffled block); images as sorted sparse entries
    per jet, the layout of `ssl_lightning.data.sparse_images`, so they pass between processes
    and into the file without their zeros."""

    scalars: dict[str, np.ndarray]
    nnz: np.ndarray  # int64 [n]: entries of jet i
    index: np.ndarray  # int32: flat position in (C, H, W) of each entry
    value: np.ndarray  # float32: summed pT of each entry
    events: int  # Pythia events it took

    def dense(self, shape: tuple[int, int, int]) -> np.ndarray:
        """float32 [n, C, H, W] images."""
        return densify(self.index, self.value, np.cumsum(self.nnz) - self.nnz, self.nnz, shape)


class EventGenerator:
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

    def chunk(self, label: int, index: int, size: int) -> Chunk:
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
        return Chunk(scalars, nnz, flat, value, tried)

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
