"""Hydra composition: every method x dataset x hardware composes; struct mode rejects typos."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from torch.optim import AdamW

from ssl_lightning.optim import LARS, build_optimizer
from ssl_lightning.train import CONFIG_DIR, build
from tests.helpers import compose_run

CONF = Path(CONFIG_DIR)


def options(group: str) -> list[str]:
    """The options a user can pick: base files (shared parts other options inherit) excluded."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if "base" not in p.stem)


def test_every_group_has_its_documented_options():
    assert {"barlow_twins", "probe", "simclr"} <= set(options("method"))
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
        overrides.append("method.task=regression")
        overrides.append("method.target=m0")
    cfg = compose_run(overrides, tmp_path)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    assert method_cfg["_target_"].startswith("ssl_lightning.methods.")
    assert method_cfg["backbone"]["in_channels"] == cfg.dataset.channels
    assert method_cfg["num_classes"] == cfg.dataset.num_classes
    assert cfg.hardware.accelerator in ("cpu", "gpu")
    assert cfg.hardware.strategy in ("auto", "ddp")
    assert OmegaConf.to_container(cfg.dataset, resolve=True)["source"]["_target_"]


@pytest.mark.parametrize(
    "task,metric,mode",
    [("classification", "val/auroc", "max"), ("regression", "val/mae", "min")],
)
def test_the_probe_task_picks_the_checkpoint_metric(task: str, metric: str, mode: str, tmp_path):
    cfg = compose_run(["method=probe", f"method.task={task}", "method.target=ink"], tmp_path)
    probe = build(OmegaConf.to_container(cfg.method, resolve=True), _recursive_=False)
    assert (probe.checkpoint_metric, probe.checkpoint_mode) == (metric, mode)


@pytest.mark.parametrize("name,kind", [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", AdamW)])
def test_the_optimizer_group_swaps_the_optimizer_with_only_its_own_keys(name, kind, tmp_path):
    cfg = compose_run([f"optimizer@method.optimizer={name}"], tmp_path)
    options = OmegaConf.to_container(cfg.method.optimizer)
    assert options == OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml"))
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(name, [{"params": params}], options["lr"], options), kind)


def test_variants_inherit_their_base_and_state_only_what_differs(tmp_path):
    cpu = compose_run(["hardware=cpu"], tmp_path).hardware
    gpu = compose_run(["hardware=gpu"], tmp_path).hardware
    changed = {key for key in cpu if cpu[key] != gpu[key]}
    assert changed == {
        "accelerator",
        "precision",
        "pin_memory",
        "malloc_keep_mb",
        "loader_workers",
        "loader_prefetch",
    }
    bt = compose_run(["method=barlow_twins"], tmp_path).method
    simclr = compose_run(["method=simclr"], tmp_path).method
    assert bt.scheduler == simclr.scheduler and bt.batch_size == simclr.batch_size
    assert bt.optimizer.weight_decay != simclr.optimizer.weight_decay  # Barlow Twins' own value


@pytest.mark.parametrize("hardware", ["gpu", "ddp", "multinode"])
def test_gpu_hardware_reads_batches_in_worker_processes_ahead_of_the_step(hardware, tmp_path):
    loader = compose_run([f"hardware={hardware}"], tmp_path).loader
    assert loader.num_workers > 0 and loader.prefetch_factor > 0
    assert compose_run(["hardware=cpu"], tmp_path).loader.num_workers == 0


@pytest.mark.parametrize(
    "override", ["method.temprature=0.2", "trainer.max_epoch=3", "hardware=tpu", "method.mode=x"]
)
def test_misspelt_keys_and_options_fail_with_hydras_message(override: str, tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_run([override], tmp_path)
