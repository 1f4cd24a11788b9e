"""What determines the generated arrays: `JetGenConfig`, its checks, and its fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import numbers
from dataclasses import dataclass

import fastjet

from ssl_lightning.errors import UserError

# The generator's former module path, kept as is: it goes into config_fingerprint (which names
# the cached data files) and into each file's attributes, so a new value would regenerate them.
GENERATOR = "ssl_lightning.data.jets"
FORMAT_VERSION = 1  # bump when the same JetGenConfig would give different arrays
MAX_IMAGE_SIZE = 1024  # keeps 3*H*W inside the int32 sparse index
# SeedSequence keys, so the seeds for Pythia's init, each chunk and each shuffle never collide
INIT_KEY, CHUNK_KEY, SHUFFLE_KEY = 0, 1, 2
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
