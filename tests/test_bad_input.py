"""Every bad input ends in one line and exit status 2, with no partial file left and nothing valid
overwritten: options of the wrong type or range, unset values, damaged data files, labels outside
the classes, checkpoints to resume that are missing, cut short or of another model, unwritable or
busy run folders, a full disk, data that trains to nothing, a probe without a backbone. Faults
(a signal to the jet generator, a failed job of a multirun) end in a clear line too."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchmetrics.classification import BinaryAUROC, MulticlassAUROC

from ssl_lightning.atomic_files import RUN_LOCK, run_folder_held, write_text_atomically
from ssl_lightning.checkpoint_io import AtomicCheckpointIO
from ssl_lightning.config_checks import RULES, check_config
from ssl_lightning.errors import UserError
from ssl_lightning.metrics import classification_metrics
from ssl_lightning.results import log_summary, write_results
from tests.conftest import with_fast
from tests.helpers import compose_run
from tests.test_errors import write_h5

TINY = [
    "dataset=synthetic",
    "augment=natural",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "debug=fast",
]


def cli(args: list[str], cwd: Path, module: str = "ssl_lightning.train") -> subprocess.Popen:
    """Start a console script as a user would, in `cwd`."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_in_a_terminal,
    )


def as_in_a_terminal() -> None:
    """Ctrl-C's SIGINT at its default, as in a terminal: a suite started in the background (as
    CI starts it) hands its children SIGINT ignored, and Python then never raises
    KeyboardInterrupt (the Ctrl-C test ran to the end and exited 0 there)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- options of the wrong type or range: refused before anything is made ---------------------
@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("method.batch_size=0", "method.batch_size=0 is not a whole number >= 1"),
        ("loader.num_workers=-1", "loader.num_workers=-1 is not a whole number >= 0"),
        ("dataset.label_fraction=abc", "dataset.label_fraction=abc is not a number in (0, 1]"),
        ("method.optimizer.name=adam", "method.optimizer.name=adam is not one of lars, sgd"),
        ("method.temperature=0", "method.temperature=0 is not a number > 0"),
        ("hardware.devices=0", "hardware.devices=0 is not a whole number >= 1"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs=1.5 is not a whole number >= 1"),
        ("dataset.num_classes=true", "dataset.num_classes=true is not a whole number >= 2, or"),
    ],
)
def test_a_wrong_option_stops_before_anything_is_made(train, tmp_path, override: str, line: str):
    key = override.split("=")[0]
    with pytest.raises(UserError) as err:
        train([override, "logger=wandb"])
    assert str(err.value).startswith(line) and f"set e.g. {key}=" in str(err.value)
    assert not (tmp_path / "run").exists()  # no run folder, no W&B run, no data read


def test_every_checked_key_is_a_key_of_the_config(tmp_path):
    """A renamed key would silently escape its check."""
    keys: set[str] = set()
    for method in ("method=simclr", "method=barlow_twins", "method=probe"):
        flat = OmegaConf.to_container(compose_run([method], tmp_path), resolve=False)
        keys |= set(_dotted(flat))
    assert {key for key, _, _ in RULES} <= keys


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _dotted(value, f"{prefix}{key}.")
    return out


def test_a_dataset_without_its_path_names_the_key(train):
    with pytest.raises(
        UserError, match=r"^dataset.source.path is not set: add dataset.source.path"
    ):
        train(["dataset=hdf5"])


def test_a_probe_needs_a_backbone_or_scratch(train):
    with pytest.raises(UserError, match=r"method.mode=linear probes a pretrained backbone"):
        train(["method=probe"])


# --- data that is damaged or would train to nothing -------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_hdf5_file_is_named(train, tmp_path, damage: str):
    path = write_h5(tmp_path / "data.h5")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # the metadata after the superblock: the root group's symbol table
        data[800:1600] = np.random.default_rng(0).integers(0, 256, 800, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{path}.*(damaged|as HDF5).*dataset.source.path"):
        train(["dataset=hdf5", f"dataset.source.path={path}"])


def test_labels_outside_the_classes_stop_at_data_setup(train, tmp_path):
    path = write_h5(tmp_path / "three.h5")
    with h5py.File(path, "r+") as f:
        f["y"][...] = np.arange(len(f["y"])) % 3
    with pytest.raises(UserError, match=r"class ids run from 0 to 2 .* dataset.num_classes=3"):
        train(["dataset=hdf5", f"dataset.source.path={path}", "dataset.channels=3"])


def test_all_zero_images_are_refused(train):
    with pytest.raises(UserError, match="all training images are zero after zero-suppression"):
        train(["dataset.preprocess.zero_suppress=1000"])


def test_a_probe_batch_shrinks_to_its_few_labels(train, caplog):
    """The README's probe with 1% of the labels: fewer labelled samples than one batch."""
    caplog.set_level("INFO", logger="ssl_lightning.data.datamodule")
    results = train(
        [
            "method=probe",
            "method.mode=scratch",
            "dataset.label_fraction=0.05",
            "trainer.max_epochs=1",
        ]
    )
    assert "test/auroc" in results["metrics"]
    assert "training on batches of" in caplog.text


# --- metrics that are undefined say so --------------------------------------------------------
def test_auroc_of_one_class_is_nan_not_zero():
    scores, labels = torch.rand(20), torch.arange(20) % 2
    one_class = classification_metrics(2, "test/")
    one_class.update(scores, torch.zeros(20, dtype=torch.long))
    assert torch.isnan(one_class.compute()["test/auroc"])
    both, reference = classification_metrics(2, "test/"), BinaryAUROC()
    both.update(scores, labels)
    reference.update(scores, labels)
    assert both.compute()["test/auroc"] == reference.compute()


def test_macro_auroc_averages_the_classes_present():
    probs, labels = torch.rand(30, 3).softmax(dim=1), torch.arange(30) % 2  # class 2 absent
    macro = classification_metrics(3, "val/")
    macro.update(probs, labels)
    per_class = MulticlassAUROC(3, average=None)
    per_class.update(probs, labels)
    with pytest.warns(UserWarning, match="No positive samples"):
        reference = per_class.compute()[:2].mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the left-out class is no news
        assert torch.isclose(macro.compute()["val/auroc"], reference)
    alone = classification_metrics(3, "val/")
    alone.update(probs, torch.zeros(30, dtype=torch.long))
    assert torch.isnan(alone.compute()["val/auroc"])


def test_an_undefined_metric_is_null_in_results_json_and_undefined_in_the_summary(tmp_path, caplog):
    results = {
        "method": "probe",
        "dataset": "synthetic",
        "duration_s": 1.0,
        "train_loss_first_step": None,
        "metrics": {"test/auroc": float("nan"), "test/acc": 0.5},
        "checkpoints": {"last": "last.ckpt"},
        "run_dir": str(tmp_path),
    }
    write_results(tmp_path / "results.json", results)
    text = (tmp_path / "results.json").read_text()
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert written["metrics"] == {"test/auroc": None, "test/acc": 0.5}
    with caplog.at_level(logging.INFO):
        log_summary(results, "val/auroc")
    assert "test/auroc: undefined" in caplog.text and "test/acc: 0.5000" in caplog.text


# --- checkpoints to resume from -------------------------------------------------------------
def test_resuming_from_a_missing_checkpoint(train, tmp_path):
    with pytest.raises(UserError, match=r"ckpt_path=.*none.ckpt not found"):
        train([f"ckpt_path={tmp_path}/none.ckpt"])


def test_resuming_from_a_cut_copy_or_a_foreign_file(train, pretrained, tmp_path):
    last = Path(pretrained["checkpoints"]["last"])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(UserError, match=r"ckpt_path=.*cut.ckpt is truncated or corrupt"):
        train([f"ckpt_path={cut}"])
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(UserError, match=r"weights.pt is not an ssl-train checkpoint"):
        train([f"ckpt_path={foreign}"])
    with pytest.raises(UserError, match=r"holds another model than this run's"):
        train(["method=barlow_twins", f"ckpt_path={last}"])
    with pytest.raises(UserError, match=r"holds another model than this run's"):
        train(["backbone=resnet15_wide", f"ckpt_path={last}"])


def test_the_checkpoint_of_the_same_model_passes(pretrained, tmp_path):
    cfg = compose_run(with_fast([f"ckpt_path={pretrained['checkpoints']['last']}"]), tmp_path)
    check_config(cfg)


def test_a_corrupt_last_ckpt_in_the_folder_is_named_and_kept(train, tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 half a zip")
    fix = re.escape(f"(mv {last} {last}.bad) and rerun")
    with pytest.raises(UserError, match=rf"^{re.escape(str(last))}, the checkpoint .*{fix}"):
        train([])
    assert last.read_bytes() == b"PK\x03\x04 half a zip"


# --- folders: unwritable, full, in use ---------------------------------------------------------
def test_an_unwritable_output_folder(train, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write .*file/run.*hydra.run.dir"):
        train([], "file/run")


def test_a_full_disk_during_training_ends_in_one_line_leaving_no_temp_file(train, tmp_path):
    real_save = torch.save

    def save_filling_the_disk(obj, handle, *args, **kwargs):
        if ".last.ckpt." in handle.name:  # best.ckpt is written first, then the disk is full
            handle.write(b"the first bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, handle, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", save_filling_the_disk)
        with pytest.raises(UserError, match=r"cannot write .*last\.ckpt \(No space left on dev"):
            train(["trainer.max_epochs=1", "dataset.source.num_samples=128"])
    folder = tmp_path / "run" / "checkpoints"
    assert [path.name for path in folder.iterdir()] == ["best.ckpt"]
    assert torch.load(folder / "best.ckpt", weights_only=False)["epoch"] == 0


def test_a_full_disk_leaves_results_as_they_were(tmp_path, monkeypatch):
    results = tmp_path / "results.json"
    results.write_text("{}\n")

    def no_space(self, text):
        with open(self, "w") as handle:
            handle.write(text[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        write_text_atomically(results, '{"new": 1}\n')
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]
    monkeypatch.undo()
    assert results.read_text() == "{}\n"


def test_a_checkpoint_over_quota_leaves_the_previous_one(tmp_path, monkeypatch):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"the previous checkpoint")

    def over_quota(obj, handle):
        handle.write(b"the first bytes")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(torch, "save", over_quota)
    with pytest.raises(UserError, match=r"last.ckpt \(Disk quota exceeded\)"):
        AtomicCheckpointIO().save_checkpoint({}, last)
    assert list(tmp_path.iterdir()) == [last]
    assert last.read_bytes() == b"the previous checkpoint"


def test_a_run_folder_is_held_by_one_run_at_a_time(tmp_path):
    (tmp_path / RUN_LOCK).write_text("99999\n")  # a stale lock file of a dead run: no flock
    with run_folder_held(tmp_path):
        assert (tmp_path / RUN_LOCK).read_text() == f"{os.getpid()}\n"
        busy = rf"another run \(pid {os.getpid()}\) is using"
        with pytest.raises(UserError, match=busy), run_folder_held(tmp_path):
            pass
    with run_folder_held(tmp_path):  # released with the run
        pass


def test_a_second_run_into_a_folder_in_use_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "busy"
    results = run_dir / "results.json"
    results.parent.mkdir()
    results.write_text('{"of": "the first run"}\n')
    with run_folder_held(run_dir):
        proc = cli([*TINY, f"hydra.run.dir={run_dir}"], tmp_path)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert error_lines(err) == [
        f"error: another run (pid {os.getpid()}) is using {run_dir}: wait for it to end, or "
        "start this one in another folder (hydra.run.dir=...)"
    ]
    assert results.read_text() == '{"of": "the first run"}\n'
    assert sorted(path.name for path in run_dir.iterdir()) == [RUN_LOCK, "results.json"]


# --- the command line: Hydra's own errors in one line too --------------------------------------
@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("foo=1", "error: Could not override 'foo'. To append to your config use +foo=1 (Key"),
        ("method.foo=1", "error: Could not override 'method.foo'."),
        ("optimizer@method.optimizer=adam", "Could not find 'optimizer/adam' Available options"),
        ("hydra.run.dir=file/run", "error: cannot write file/run (Not a directory)"),
    ],
)
def test_cli_hydra_errors_are_one_line_and_exit_2(tmp_path, override: str, line: str):
    (tmp_path / "file").write_text("not a folder")
    proc = cli([*TINY, override], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = error_lines(err)
    assert len(lines) == 1 and line in lines[0], err
    assert not (tmp_path / "outputs").exists()  # no run folder: nothing was started


# --- faults -----------------------------------------------------------------------------------
def test_a_multirun_goes_on_past_a_failed_job_and_names_it(tmp_path):
    proc = cli(["-m", *TINY, "method.temperature=0.2,0,0.5", "hydra.sweep.dir=sweep"], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    sweep = tmp_path / "sweep"
    assert [(sweep / job / "results.json").is_file() for job in "012"] == [True, False, True]
    record = json.loads((sweep / "1" / "failed.json").read_text())
    assert record["status"] == 2 and "method.temperature=0 is not" in record["error"]
    assert error_lines(err) == [
        "error: " + record["error"],
        "error: 1 job(s) of the multirun failed: #1 (method.temperature=0); each error is above "
        "and in the job's failed.json under sweep",
    ]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def workers_of(pid: int) -> list[int]:
    """The spawned multiprocessing workers among the children of `pid`."""
    found = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def signal_while_generating(proc: subprocess.Popen, folder: Path, signum: int) -> list[int]:
    """Wait until the generator's workers run and its temp file exists, then send `signum`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = workers_of(proc.pid)
        if len(workers) == 2 and list(folder.glob(".*.tmp")):
            proc.send_signal(signum)
            return workers
        time.sleep(0.2)
    pytest.fail("the generator did not start: " + proc.communicate()[1][-3000:])


def assert_stopped_cleanly(workers: list[int], folder: Path) -> None:
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert not list(folder.glob("*.h5")) and not list(folder.glob(".*.tmp"))


def test_sigterm_to_the_jet_generator_ends_its_workers_and_temp_file(tmp_path):
    args = ["--num-jets", "4000", "--seed", "0", "--out", "jets.h5", "--workers", "2"]
    proc = cli(args, tmp_path, module="ssl_lightning.generator")
    workers = signal_while_generating(proc, tmp_path, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert error_lines(err) == [
        "error: stopped by SIGTERM; jets.h5 was not written (worker processes ended, temp file "
        "removed)"
    ]
    assert_stopped_cleanly(workers, tmp_path)


def test_ctrl_c_while_ssl_train_generates_jets(tmp_path):
    data = tmp_path / "data"
    args = [
        "logger=none",
        "dataset.source.num_jets=4000",
        "dataset.source.workers=2",
        f"paths.data_dir={data}",
        "hydra.run.dir=run",
    ]
    proc = cli(args, tmp_path)
    deadline = time.monotonic() + 120
    while not (data / "jets").is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = signal_while_generating(proc, data / "jets", signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert error_lines(err) == [
        "error: stopped by a signal (before training, nothing to save); rerun the same command "
        f"with hydra.run.dir={tmp_path / 'run'} to resume"
    ]
    assert_stopped_cleanly(workers, data / "jets")
    shutil.rmtree(data)
