"""Batched view augmentations with keyed per-sample randomness: SimCLR's set and a jet set.

Both modules take a float32 batch x [N, C, H, W] already on the device and int64 keys [V * N]
from `random_keys.sample_keys`, view-major (keys[v * N + i] is view v of sample i), and return
the V views as a new tensor [V * N, C, H, W] (the input is left alone). Every random choice for
a view is drawn from its key alone, so a sample's view does not depend on the other samples in
its batch, on the rank, or on how many views one call makes. No Python loop visits samples: each
operation acts on the whole batch with per-sample parameters, and one call makes all views, so
its fixed cost (a few hundred small tensor ops) is paid once per batch.
"""

from ssl_lightning.data.augment.jets import JetAugment
from ssl_lightning.data.augment.natural import NaturalAugment

__all__ = ["JetAugment", "NaturalAugment"]
