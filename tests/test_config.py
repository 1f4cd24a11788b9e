"""Hydra composition: every method x dataset x hardware composes; struct mode rejects typos."""

import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from ssl_lightning.train import CONFIG_DIR
from tests.helpers import compose_run

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_its_documented_options():
    assert options("method") == ["barlow_twins", "probe", "simclr"]
    assert set(options("hardware")) >= {"cpu", "gpu", "ddp", "multinode", "ddp_cpu"}
    assert set(options("logger")) == {"wandb", "csv", "tensorboard", "none"}
    assert {"jets", "qg_e2e", "qg_e2e_parquet", "e2e_2g", "e2e_2g_labelled"} <= set(
        options("dataset")
    )
    assert {"digits", "synthetic", "hdf5", "cifar10", "image_folder"} <= set(options("dataset"))
    assert {"resnet15", "resnet15_wide", "resnet18_cifar"} <= set(options("backbone"))


@pytest.mark.parametrize(
    "method,dataset,hardware",
    list(itertools.product(options("method"), options("dataset"), options("hardware"))),
)
def test_every_combination_composes(method: str, dataset: str, hardware: str, tmp_path):
    overrides = [f"method={method}", f"dataset={dataset}", f"hardware={hardware}"]
    if dataset in ("hdf5", "qg_e2e", "qg_e2e_parquet", "e2e_2g", "e2e_2g_labelled"):
        overrides.append(f"dataset.source.path={tmp_path}/x.h5")
    if dataset == "image_folder":
        overrides += [f"dataset.source.root={tmp_path}", "dataset.num_classes=2"]
    if method == "probe" and dataset in ("hdf5", "e2e_2g"):
        overrides.append("probe.task=regression")
        overrides.append("probe.target=m0")
    cfg = compose_run(overrides, tmp_path)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    assert method_cfg["_target_"].startswith("ssl_lightning.methods.")
    assert method_cfg["backbone"]["in_channels"] == cfg.dataset.channels
    assert method_cfg["num_classes"] == cfg.dataset.num_classes
    assert cfg.hardware.accelerator in ("cpu", "gpu")
    assert cfg.hardware.strategy in ("auto", "ddp")
    assert OmegaConf.to_container(cfg.dataset, resolve=True)["source"]["_target_"]


def test_probe_monitor_follows_the_task(tmp_path):
    cfg = compose_run(["method=probe", "probe.task=regression", "probe.target=ink"], tmp_path)
    assert (cfg.method.monitor, cfg.method.monitor_mode) == ("val/mae", "min")
    cfg = compose_run(["method=probe"], tmp_path)
    assert (cfg.method.monitor, cfg.method.monitor_mode) == ("val/auroc", "max")


@pytest.mark.parametrize(
    "override", ["method.temprature=0.2", "trainer.max_epoch=3", "hardware=tpu", "probe.mode=x"]
)
def test_misspelt_keys_and_options_fail_with_hydras_message(override: str, tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_run([override], tmp_path)
