"""Composing `ssl-train`'s config in-process, as the command line would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ssl_lightning.train import CONFIG_DIR


def compose_run(overrides: list[str], output_dir: Path):
    """The config `ssl-train <overrides>` would run, writing into `output_dir`."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # hydra.main hands the task its config without the hydra node
        del cfg["hydra"]
    return cfg
