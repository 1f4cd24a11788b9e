"""`ssl-train`: the one entry point. Compose the config, build the parts, fit, test, report.

Up front it imports Hydra and OmegaConf only, so that `ssl-train --help` and tab completion
answer at once: torch, Lightning, W&B and our parts are imported by the functions using them.
"""

from __future__ import annotations

import logging
import time
import warnings
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_lightning.errors import UserError

if TYPE_CHECKING:
    from ssl_lightning.data.datamodule import ViewsDataModule
    from ssl_lightning.data.needs import DataNeeds

CONFIG_PACKAGE = "ssl_lightning.conf"  # the repo's conf/, shipped in the package (pyproject.toml)
CONFIG_DIR = str(resources.files(CONFIG_PACKAGE))  # the same folder, for code that reads its files
# parts of a folder path, to name things after the run folder (conf/logger/wandb.yaml)
OmegaConf.register_new_resolver("path.name", lambda path: PurePath(path).name, replace=True)
OmegaConf.register_new_resolver(
    "path.parent", lambda path: str(PurePath(path).parent), replace=True
)
log = logging.getLogger("ssl_lightning.train")
TRAINER_HARDWARE_KEYS = (
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "sync_batchnorm",
)


def build(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, letting a UserError from a constructor through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig, run_dir: Path, needs: DataNeeds) -> ViewsDataModule:
    """The data module for `cfg.dataset`, with the augmentation of `cfg.augment`, emitting what
    the training module `needs`."""
    from ssl_lightning.data.datamodule import ViewsDataModule

    ds = cfg.dataset
    return ViewsDataModule(
        source=build(ds.source),
        needs=needs,
        augment=build(cfg.augment),
        channels=ds.channels,
        num_classes=ds.num_classes,
        val_fraction=ds.val_fraction,
        test_fraction=ds.test_fraction,
        split_seed=ds.split_seed,
        label_fraction=ds.label_fraction,
        preprocess=OmegaConf.to_container(ds.preprocess, resolve=True),
        seed=cfg.seed,
        split_file=str(run_dir / "split.npz"),
        pin_memory=cfg.hardware.pin_memory,
        channels_last=cfg.hardware.channels_last,
        batch_size=cfg.method.batch_size,
        **cfg.loader,
    )


def check_accelerator(hardware: DictConfig) -> None:
    """Stop before anything is built (data, a W&B run) when the GPUs asked for are not here."""
    import torch

    if hardware.accelerator != "gpu":
        return
    found = torch.cuda.device_count()
    if found == 0:
        raise UserError(
            "hardware.accelerator=gpu but this machine has no CUDA GPU: "
            "use hardware=cpu (hardware=ddp_cpu for DDP on CPU processes)"
        )
    if hardware.devices > found:
        raise UserError(
            f"hardware.devices={hardware.devices} but this machine has {found} GPU(s): "
            f"set hardware.devices={found}"
        )


def hardware_trainer_args(hardware: DictConfig, idle_parameters: bool) -> dict[str, Any]:
    """Trainer arguments of the `hardware` group; bf16 falls back to fp16 on GPUs without it, and
    DDP looks for unused parameters when the module has `idle_parameters`."""
    import torch

    args = {key: hardware[key] for key in TRAINER_HARDWARE_KEYS}
    if idle_parameters and args["strategy"] == "ddp":
        args["strategy"] = "ddp_find_unused_parameters_true"
    if args["accelerator"] == "cpu":
        args["sync_batchnorm"] = False  # done by GlobalBatchNorm instead
    if (
        args["precision"] == "bf16-mixed"
        and args["accelerator"] == "gpu"
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
        args["precision"] = "16-mixed"
    return args


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """`ckpt_path` if given ('last' included), else the newest of this run folder's own
    checkpoints: `checkpoints/last.ckpt`, or a `hpc_ckpt_<n>.ckpt` that Lightning's SLURM
    auto-requeue saved later (on SIGUSR1, mid-epoch). Both are written atomically, so the newest
    file is a complete one."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    found = [path for path in candidates if path.is_file()]
    return str(max(found, key=lambda path: path.stat().st_mtime_ns)) if found else None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (and for probes, test) as configured; returns what results.json holds."""
    import lightning as L
    import torch
    import wandb
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import WandbLogger

    from ssl_lightning.callbacks.loss_trace import LossTrace
    from ssl_lightning.callbacks.preemption import Preemption
    from ssl_lightning.checkpoint_io import AtomicCheckpointIO
    from ssl_lightning.config_checks import check_config
    from ssl_lightning.host_memory import keep_freed_memory
    from ssl_lightning.loggers import wandb_sync_dir
    from ssl_lightning.models.global_batchnorm import convert_to_global_batchnorm
    from ssl_lightning.results import log_summary, provenance, scalar_metrics, write_results

    check_config(cfg)  # first: a wrong value stops before W&B, the data or the model are made
    log_lightning_once()
    started = time.time()
    run_dir = Path(cfg.paths.output_dir)
    checkpoint_dir = run_dir / "checkpoints"
    check_accelerator(cfg.hardware)
    keep_freed_memory(cfg.hardware.malloc_keep_mb)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    model = build(method, _recursive_=False, _convert_="all")
    supervised = model.data_needs.labelled
    make_data_dir(Path(cfg.paths.data_dir))
    datamodule = build_datamodule(cfg, run_dir, model.data_needs)
    if cfg.hardware.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.hardware.sync_batchnorm and cfg.hardware.accelerator == "cpu":
        convert_to_global_batchnorm(model)  # torch's SyncBatchNorm refuses CPU modules
    if cfg.hardware.compile:  # last, on the final modules; in place: parameter names are kept
        model.backbone.compile()
    loggers = [build(node) for node in cfg.logger.values()]
    for logger in loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})
    # best.ckpt and last.ckpt from two callbacks: Lightning's save_last writes last.ckpt only at
    # a step where the best one was saved, so an epoch that does not improve the metric left it
    # behind (and a requeued job resumed from there). Both overwrite their file: a checkpoint
    # saved on a signal before they first saved would otherwise fork last-v1.ckpt.
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=model.checkpoint_metric,
        mode=model.checkpoint_mode,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(dirpath=checkpoint_dir, filename="last", enable_version_counter=False)
    trace = LossTrace()
    watcher = cfg.callbacks.probe_plots if supervised else cfg.callbacks.representation
    callbacks = [
        checkpoint,  # before `last`, so last.ckpt holds this epoch's best-checkpoint state
        last,
        trace,
        Preemption(checkpoint_dir, cfg.preemption.max_requeues),
        build(watcher),
    ]
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.trainer.enable_progress_bar:  # its refresh reads logged tensors: a device sync each
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.trainer.log_every_n_steps))
    # ViewsDataModule resumes its loader mid-epoch itself (its state_dict), which Lightning's
    # check for a resumable loader does not see
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
    # Lightning's CombinedLoader builds torch's deprecated LeafSpec for every loader (Lightning
    # 2.6.6 on torch 2.14): nothing a run can change
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    trainer = L.Trainer(
        **cfg.trainer,
        **hardware_trainer_args(cfg.hardware, model.idle_parameters),
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
    )
    wandb_dirs = [wandb_sync_dir(lg) for lg in loggers if isinstance(lg, WandbLogger)]
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
        # read now: testing with ckpt_path="best" restores the callbacks' state saved in best.ckpt
        checkpoints = {"last": last.best_model_path, "best": checkpoint.best_model_path}
        metrics = scalar_metrics(trainer.callback_metrics)
        if supervised:
            tested = trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
            metrics.update(scalar_metrics(tested[0]))
        record = provenance(datamodule.source.fingerprint())
        for logger in loggers:
            logger.log_hyperparams({"provenance": record})
    finally:  # close W&B runs so the next job of a multirun starts its own
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            wandb.teardown()  # flush the offline .wandb file before results.json points at it
    results = {
        "method": HydraConfig.get().runtime.choices["method"],
        "dataset": cfg.dataset.name,
        "backbone": HydraConfig.get().runtime.choices["backbone"],
        "seed": cfg.seed,
        "metrics": metrics,
        "train_loss_first_step": trace.first,
        "train_loss_last_epoch": trace.last_epoch_mean,
        "checkpoints": checkpoints,
        "global_batch": model.global_batch,
        "lr_scaled": model.scaled_lr,
        "duration_s": round(time.time() - started, 2),
        "wandb_dir": wandb_dirs[0] if wandb_dirs else None,
        "run_dir": str(run_dir),
        "probe": probe_record(method, cfg.dataset.label_fraction) if supervised else None,
        **record,
    }
    if trainer.is_global_zero:
        write_results(run_dir / "results.json", results)
        log_summary(results, model.checkpoint_metric)
    return results


def log_lightning_once() -> None:
    """Once logging is set up (Hydra sets it up for `ssl-train`), Lightning's messages reach its
    handlers (the terminal, train.log) alone: the `lightning` package also gives its logger a
    stderr handler of its own, which would print each message a second time."""
    if logging.getLogger().handlers:
        lightning_log = logging.getLogger("lightning")
        for handler in list(lightning_log.handlers):
            lightning_log.removeHandler(handler)


def make_data_dir(path: Path) -> None:
    """Create the data folder (paths.data_dir) on first use and say where it is, once: generated
    and converted data land there, not in the folder a run starts in."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    except OSError as err:
        raise UserError(
            f"cannot create the data folder {path}: {err.strerror} — set SSL_LIGHTNING_DATA to a "
            "writable folder"
        ) from None
    log.info(f"data folder: {path} (created; set SSL_LIGHTNING_DATA to move it)")


def probe_record(method: dict[str, Any], label_fraction: float) -> dict[str, Any]:
    """Which probe ran, so that its results.json alone tells it from the others of a study."""
    pretrained = method["pretrained"]
    return {
        "mode": method["mode"],
        "task": method["task"],
        "target": method["target"],
        "label_fraction": label_fraction,
        "backbone_checkpoint": str(Path(pretrained).expanduser().resolve()) if pretrained else None,
    }


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `ssl-train <overrides>` would run, writing into `output_dir`, for running
    `run()` in-process (tests, benchmarks): Hydra's runtime is set as `run()` expects."""
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # hydra.main hands the task its config without the hydra node
        del cfg["hydra"]
    return cfg


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_PACKAGE}", config_name="train")
def main(cfg: DictConfig) -> None:
    """The Hydra job of `ssl-train`: bad input ends in one line on stderr and exit status 2, a
    signal in one line and 143 (130 for Ctrl-C). In a multirun a failed job is reported and
    recorded, and the sweep goes on (`ssl_lightning.hydra_callbacks`, which also hold the run
    folder). DDP ranks above 0 run the same job as rank 0, which alone reports it."""
    import traceback

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ssl_lightning.callbacks.preemption import stop_before_training
    from ssl_lightning.distributed import ddp_job_scope
    from ssl_lightning.errors import report
    from ssl_lightning.hydra_callbacks import in_multirun, leads_the_job, record_failure

    stop_before_training()
    run_dir = Path(cfg.paths.output_dir)
    lead = leads_the_job()

    def failed(message: str, status: int) -> None:
        """Report; then end the process, or in a multirun record the failure and go on."""
        if lead:
            report(message)
            if in_multirun():
                record_failure(run_dir, message, status)
                return
        raise SystemExit(status)

    try:
        with ddp_job_scope(expected=(UserError, SIGTERMException)):
            run(cfg)
    except UserError as err:
        failed(str(err), 2)
    except (SIGTERMException, KeyboardInterrupt, SystemExit) as stop:
        # Ctrl-C inside `fit` (while jets are generated, say) ends in Lightning's sys.exit(1)
        ctrl_c = isinstance(stop, KeyboardInterrupt) or isinstance(
            stop.__context__, KeyboardInterrupt
        )
        if not (ctrl_c or isinstance(stop, SIGTERMException)):
            raise
        last = run_dir / "checkpoints" / "last.ckpt"
        saved = f"checkpoint: {last}" if last.is_file() else "before training, nothing to save"
        if lead:
            report(
                f"stopped by a signal ({saved}); rerun the same command with "
                f"hydra.run.dir={run_dir} to resume"
            )
        raise SystemExit(130 if ctrl_c else 143) from None
    except Exception as err:
        if not (lead and in_multirun()):
            raise
        traceback.print_exc()  # a bug, with its traceback; the sweep goes on
        failed(f"{type(err).__name__}: {err}", 1)


def cli() -> None:
    """Console script `ssl-train`: `main`, with Hydra's own errors (a config it cannot compose,
    an output folder it cannot make) in one line and exit status 2 as well."""
    from ssl_lightning.config_checks import hydra_errors_in_one_line

    with hydra_errors_in_one_line():
        main()


if __name__ == "__main__":
    cli()
