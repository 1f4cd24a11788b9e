"""The built-in dataset: quark/gluon jets generated with Pythia 8 + FastJet on first use.

The file is named by the fingerprint of its settings, so a changed setting generates a new file
instead of silently reusing a stale one; once written it is read like a real E2E file.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from ssl_lightning.data.sources.prepared import PreparedFileSource
from ssl_lightning.generator import JetGenConfig, config_fingerprint, generate_jets

JETS_PER_CPU_SECOND = 45  # measured generation rate after the pT window, for the time estimate


class GeneratedJetsSource(PreparedFileSource):
    """Quark (y=1) / gluon (y=0) jet images in the E2E layout, generated once into `data_dir`."""

    def __init__(
        self,
        data_dir: str,
        num_jets: int,
        seed: int,
        image_size: int,
        pixel_width: float,
        pt_min: float,
        pt_max: float,
        eta_max: float,
        workers: int,
        target_keys: list[str],
        in_memory: bool,
    ) -> None:
        self.config = JetGenConfig(
            num_jets=num_jets,
            seed=seed,
            image_size=image_size,
            pixel_width=pixel_width,
            pt_min=pt_min,
            pt_max=pt_max,
            eta_max=eta_max,
        )
        path = Path(data_dir).expanduser() / "jets" / f"jets_{self.fingerprint()}.h5"
        super().__init__(path, "y", target_keys, in_memory)
        self.workers = workers

    def write(self) -> None:
        minutes = self.config.num_jets / (JETS_PER_CPU_SECOND * self.workers) / 60
        console = Console(stderr=True)
        console.print(
            f"Generating {self.config.num_jets} quark/gluon jets with Pythia 8 + FastJet into "
            f"{self.path} (once; about {minutes:.1f} min with {self.workers} worker(s))"
        )
        started = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        generate_jets(self.config, self.path, workers=self.workers, progress=True)
        console.print(f"Generated in {time.time() - started:.0f} s")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.config.image_size, self.config.image_size)

    def __len__(self) -> int:
        return self.config.num_jets

    def fingerprint(self) -> str:
        return config_fingerprint(self.config)
