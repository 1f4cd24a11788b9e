"""`ssl-make-jets`: quark and gluon jet images from Pythia 8 + FastJet, in the E2E file layout.

One module per job: `config` (settings and fingerprint), `physics` (events, jets, images),
`parallel` (the worker pool and the fixed chunk order), `storage` (the HDF5 file), `run`
(`generate_jets`, tying them together) and `cli` (the command line). Nothing here imports torch,
so spawned workers start quickly.
"""

from ssl_lightning.generator.cli import main
from ssl_lightning.generator.config import JetGenConfig, config_fingerprint, library_versions
from ssl_lightning.generator.run import generate_jets

__all__ = ["JetGenConfig", "config_fingerprint", "generate_jets", "library_versions", "main"]
