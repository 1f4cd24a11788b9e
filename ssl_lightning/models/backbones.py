"""Building backbones from config and restoring them from pretraining checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from ssl_lightning.errors import UserError


def build_backbone(cfg: dict[str, Any]) -> nn.Module:
    """Instantiate a backbone from its `_target_` config; every backbone exposes `out_dim`."""
    return instantiate(cfg)


def read_checkpoint(file: Path, what: str, fix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Backbone config and state dict of an ssl-train checkpoint (pretraining or probe), or a
    one-line UserError naming the `what` and how to `fix` it."""
    if not file.is_file():
        raise UserError(f"{what} not found: {file} — {fix}")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=False)
        return ckpt["hyper_parameters"]["backbone"], ckpt["state_dict"]
    except Exception as err:  # any unreadable / foreign file gets the same one-line answer
        raise UserError(
            f"{file} is not a ssl-lightning {what} ({type(err).__name__}: {err}) — {fix}"
        ) from err


def load_backbone_weights(backbone: nn.Module, path: str, cfg: dict[str, Any]) -> None:
    """Copy `backbone.*` weights from a pretraining checkpoint, refusing a different backbone."""
    file = Path(path).expanduser()
    saved_cfg, state = read_checkpoint(
        file,
        "probe checkpoint",
        "set method.pretrained to a pretraining run's last.ckpt (or null to start from random "
        "weights)",
    )
    if dict(saved_cfg) != dict(cfg):
        raise UserError(
            f"{file} holds backbone {dict(saved_cfg)} but this run builds {dict(cfg)}: choose the "
            "matching backbone=... and dataset.channels, or another checkpoint"
        )
    backbone.load_state_dict(backbone_state(state))


def load_backbone(checkpoint: Path) -> nn.Module:
    """The backbone of a pretraining or probe checkpoint (both keep `backbone.*` and its config),
    in eval mode."""
    config, state = read_checkpoint(
        checkpoint, "checkpoint", "pass --checkpoint <run_dir>/checkpoints/last.ckpt or best.ckpt"
    )
    backbone = build_backbone(config)
    backbone.load_state_dict(backbone_state(state))
    return backbone.eval()


def backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """The `backbone.*` entries of a module's state dict, without the prefix."""
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
