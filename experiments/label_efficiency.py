"""Label-efficiency study: does SSL pretraining beat training from scratch with few labels?

    python experiments/label_efficiency.py experiment=label_efficiency_small [overrides]

1. Pretrains each method of `study.pretrain.checkpoints` whose checkpoint is not given, once,
   on the training split (one `ssl-train -m` sweep).
2. Trains every probe job (task x pretrained method x mode, plus scratch, x label fraction x
   seed) as one `ssl-train -m` sweep over the jobs still lacking a results.json, so a rerun
   continues where the last one stopped. `study.launcher` picks the Hydra launcher (SLURM...).
3. Computes the label-free baselines, collects every results.json into results.csv,
   summary.csv, results.md and plots/*.png in `study.out_dir`, and logs them to W&B.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import wandb
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_lightning.data.sources.base import ImageSource
from ssl_lightning.data.splits import labelled_subset, make_split
from ssl_lightning.errors import UserError
from ssl_lightning.studies.baselines import baseline_aucs
from ssl_lightning.studies.collect import (
    load_results,
    markdown_tables,
    result_rows,
    summarise,
    write_csv,
)
from ssl_lightning.studies.figures import plot_study
from ssl_lightning.studies.plan import (
    JOB_OVERRIDES,
    is_finished,
    pending,
    plan_jobs,
    probe_budget,
    sweep_value,
)
from ssl_lightning.train import CONFIG_DIR


def compose_config(overrides: list[str]) -> DictConfig:
    """`ssl-train`'s config for `overrides`, with the Hydra node set so interpolations resolve."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def ssl_train_multirun(overrides: list[str]) -> None:
    """One `ssl-train -m` sweep; a failed job stops the study (rerun to continue)."""
    command = [sys.executable, "-m", "ssl_lightning.train", "-m", *overrides]
    if subprocess.run(command, check=False).returncode != 0:
        raise UserError("a study job failed (its error is above): fix it and rerun to continue")


def pretrain(study: DictConfig, out_dir: Path) -> dict[str, str]:
    """Checkpoint per SSL method: the given one, else that of this study's pretraining run."""
    given = {m: c for m, c in study.pretrain.checkpoints.items() if c}
    sweep_dir = out_dir / "pretrain"
    todo = [
        m for m in study.pretrain.checkpoints if m not in given and not is_finished(sweep_dir / m)
    ]
    if todo:
        ssl_train_multirun(
            [
                f"method={','.join(todo)}",
                *study.common,
                *study.pretrain.overrides,
                *study.launcher,
                f"hydra.sweep.dir={sweep_dir}",
                "hydra.sweep.subdir=${task_name}",
            ]
        )
    found = {
        m: str(sweep_dir / m / "checkpoints" / "last.ckpt") for m in study.pretrain.checkpoints
    }
    return {**found, **given}


def labelled_sizes(source: ImageSource, dataset: DictConfig, fractions: list[float]) -> dict:
    """Labelled training samples at each fraction, as the probes' data module will pick them."""
    split = make_split(len(source), dataset.val_fraction, dataset.test_fraction, dataset.split_seed)
    return {
        f: len(labelled_subset(split["train"], source.labels, f, dataset.split_seed))
        for f in fractions
    }


def log_to_wandb(study: DictConfig, out_dir: Path, files: list[Path], tables: dict) -> None:
    """The study's tables, plots and files as one W&B run (offline unless configured)."""
    run = wandb.init(
        project=study.wandb.project,
        entity=study.wandb.entity,
        mode=study.wandb.mode,
        dir=str(out_dir),
        name=study.name,
        job_type="label_efficiency",
        config=OmegaConf.to_container(study, resolve=True),
    )
    for name, rows in tables.items():
        columns = sorted({k for row in rows for k in row})
        run.log(
            {name: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])}
        )
    run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"})
    artifact = wandb.Artifact(study.name, type="study")
    for path in files:
        artifact.add_file(str(path))
    run.log_artifact(artifact)
    run.finish()


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Pretrain, probe, collect; returns the output paths and the baselines."""
    if "study" not in cfg:
        raise UserError("no study chosen: add experiment=label_efficiency_small (or _full)")
    study = cfg.study
    out_dir = Path(study.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    job_cfg = compose_config(["method=probe", *study.common, *study.probe.overrides])
    dataset = job_cfg.dataset
    source = instantiate(dataset.source)
    source.prepare()  # generate the data once, before any job needs it
    probe = study.probe
    sizes = labelled_sizes(source, dataset, list(probe.fractions))
    budgets = {
        f: probe_budget(
            n, probe.batch_size, probe.steps, probe.max_epochs, probe.lp_share, probe.warmup_share
        )
        for f, n in sizes.items()
    }
    checkpoints = pretrain(study, out_dir)
    tasks = OmegaConf.to_container(study.tasks, resolve=True)
    jobs = plan_jobs(tasks, checkpoints, probe.fractions, probe.seeds, budgets)
    probes_dir = out_dir / "probes"
    todo = pending(jobs, probes_dir)
    print(f"study {study.name}: {len(jobs) - len(todo)} of {len(jobs)} probe jobs already done")
    if todo:
        ssl_train_multirun(
            [
                "method=probe",
                *study.common,
                *probe.overrides,
                *study.launcher,
                f"+study_job={sweep_value(todo)}",
                *JOB_OVERRIDES,
                f"hydra.sweep.dir={probes_dir}",
            ]
        )
    split = make_split(len(source), dataset.val_fraction, dataset.test_fraction, dataset.split_seed)
    baselines = (
        baseline_aucs(source, split, study.baselines.count_target, dataset.preprocess.zero_suppress)
        if source.labels is not None and study.baselines.count_target in source.targets
        else {}
    )
    metrics = [m for spec in tasks.values() for m in spec["metrics"]]
    rows = result_rows(load_results(probes_dir), metrics)
    summary = summarise(rows, metrics)
    table = markdown_tables(summary, baselines)
    (out_dir / "results.md").write_text(table)
    files = [
        write_csv(rows, out_dir / "results.csv"),
        write_csv(summary, out_dir / "summary.csv"),
        out_dir / "results.md",
        *plot_study(summary, baselines, out_dir / "plots"),
    ]
    log_to_wandb(study, out_dir, files, {"results": rows, "summary": summary})
    print(table)
    print(f"results: {out_dir}/results.md, results.csv, summary.csv, plots/")
    return {"files": files, "baselines": baselines, "rows": rows}


def main() -> None:
    """Console entry: Hydra overrides on the command line, bad input as one line + status 2."""
    try:
        run_study(compose_config(sys.argv[1:]))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
