"""ProbePlots: the figures of a probe's test, as PNGs in the run folder and images in W&B."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from ssl_lightning.data.datamodule import ViewsDataModule
from ssl_lightning.methods.probe import Probe


class ProbePlots(Callback):
    """After a probe's test: the figures its task draws (classification: ROC curve; regression:
    predicted vs true; both: a PCA map of the backbone embeddings), as PNGs in `out_dir` and W&B
    images when logged to W&B.

    Runs on the weights `trainer.test` evaluated (the best checkpoint in `ssl-train`), over the
    whole test split, so the ROC's AUC is the reported test AUC.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        paths = self.plot(pl_module, trainer.datamodule)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for path in paths:
                    logger.log_image(key=f"plots/{path.stem}", images=[str(path)])

    @torch.no_grad()
    def plot(self, probe: Probe, datamodule: ViewsDataModule) -> list[Path]:
        """Write the figures of `probe`'s task on the test split; returns their paths."""
        parts: dict[str, list[Tensor]] = {}
        test = datamodule.split["test"]
        for batch in datamodule.evaluation_batches(test, probe.device, probe.dtype):
            features = probe.backbone(batch["x"])
            columns = {
                "features": features.float(),
                "prediction": probe.task.prediction(probe.head(features)),
                "label": probe.task.target(batch),
            }
            for name, values in columns.items():
                parts.setdefault(name, []).append(values.cpu())
        data = {name: torch.cat(values).numpy() for name, values in parts.items()}
        return probe.task.figures(data, self.out_dir)
