"""`ssl-eval`: a probe checkpoint reproduces its run's test metrics, an SSL checkpoint its online
probe and kNN metrics; other data is scored on its own split; bad input is one line."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ssl_lightning.data.splits import make_split
from ssl_lightning.embed import main as embed_main
from ssl_lightning.evaluate import main
from ssl_lightning.train import run
from tests.conftest import with_fast
from tests.helpers import compose_run
from tests.test_physics_data import write_task_2g


def save_hydra_files(cfg: DictConfig, hydra_dir: Path) -> Path:
    """What hydra.main writes to <run_dir>/.hydra/ and in-process runs do not: config.yaml with
    its `${hydra:...}` interpolations unresolved, and hydra.yaml. Returns config.yaml's path."""
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": HydraConfig.get()}), hydra_dir / "hydra.yaml")
    return hydra_dir / "config.yaml"


def run_with_hydra_files(overrides: list[str], run_dir: Path) -> dict:
    """`ssl-train <overrides>` in-process into `run_dir`, leaving the .hydra/ folder it would."""
    cfg = compose_run(overrides, run_dir)
    save_hydra_files(cfg, run_dir / ".hydra")
    return run(cfg)


@pytest.fixture(scope="module")
def probe_run(pretrained, tmp_path_factory) -> dict:
    """A linear probe of the shared SimCLR checkpoint, tested on its whole test split."""
    run_dir = tmp_path_factory.mktemp("probe")
    ckpt = pretrained["checkpoints"]["last"]
    return run_with_hydra_files(
        with_fast(
            [
                "method=probe",
                "method.mode=linear",
                f"method.pretrained={ckpt}",
                "trainer.max_epochs=1",
            ]
        ),
        run_dir,
    )


@pytest.fixture(scope="module")
def ssl_config(pretrained, tmp_path_factory) -> Path:
    """The shared SimCLR run's config.yaml (its run folder has none: it ran in-process)."""
    cfg = compose_run(with_fast(["method=simclr"]), Path(pretrained["run_dir"]))
    return save_hydra_files(cfg, tmp_path_factory.mktemp("simclr") / ".hydra")


def evaluate(checkpoint: str, out: Path, *args: str) -> dict:
    main(["--checkpoint", checkpoint, "--out", str(out), "--device", "cpu", *args])
    return json.loads(out.with_name(f"{out.stem}.metrics.json").read_text())


def read_h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as handle:
        return {name: handle[name][()] for name in handle}


def test_a_probe_checkpoint_reproduces_its_runs_test_metrics(probe_run, tmp_path):
    report = evaluate(probe_run["checkpoints"]["best"], tmp_path / "preds.h5")
    expected = {k: v for k, v in probe_run["metrics"].items() if k.startswith("test/")}
    assert set(expected) == set(report["metrics"]) == {"test/acc", "test/auroc", "test/loss"}
    for name, value in expected.items():
        assert report["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    split = np.load(Path(probe_run["run_dir"]) / "split.npz")
    columns = read_h5(tmp_path / "preds.h5")
    np.testing.assert_array_equal(columns["index"], split["test"])
    assert columns["prediction"].shape == (len(split["test"]), 4)  # softmax over 4 classes
    np.testing.assert_allclose(columns["prediction"].sum(axis=1), 1, rtol=1e-5)
    accuracy = (columns["prediction"].argmax(axis=1) == columns["y"]).mean()
    assert accuracy == pytest.approx(report["metrics"]["test/acc"])
    assert report["kind"] == "probe" and report["split_file"].endswith("split.npz")


def test_an_ssl_checkpoint_reproduces_its_online_probe_and_knn_metrics(
    pretrained, ssl_config, tmp_path
):
    ckpt = pretrained["checkpoints"]["last"]
    report = evaluate(ckpt, tmp_path / "val.h5", "--split", "val", "--config", str(ssl_config))
    for name in ("val/online_acc", "val/online_auroc", "val/knn_acc"):
        assert report["metrics"][name] == pytest.approx(pretrained["metrics"][name], abs=1e-5)
    columns = read_h5(tmp_path / "val.h5")
    assert not np.isnan(columns["knn_score"]).any()  # no val sample is in the training bank


def test_other_data_is_scored_on_its_own_split_saved_beside_the_output(probe_run, tmp_path):
    """Another draw of the blobs (other seed and size): its own split, not the run's."""
    out = tmp_path / "other.csv"
    overrides = ["dataset.source.seed=5", "dataset.source.num_samples=128"]
    report = evaluate(probe_run["checkpoints"]["best"], out, *overrides)
    expected = make_split(128, 0.125, 0.125, 0)["test"]
    saved = np.load(tmp_path / "other.split.npz")
    np.testing.assert_array_equal(saved["test"], expected)
    rows = np.genfromtxt(out, delimiter=",", names=True)
    np.testing.assert_array_equal(rows["index"], expected)
    assert report["split_file"] == str(tmp_path / "other.split.npz")
    assert 0 <= report["metrics"]["test/auroc"] <= 1


def test_an_ssl_checkpoint_on_new_labelled_data_fits_knn_on_its_training_split(
    pretrained, ssl_config, tmp_path
):
    """Blobs of 6 classes, which the 4-class online probe never saw: only kNN scores them, with
    the new data's own training split as the bank; `all` leaves the bank's samples unscored."""
    ckpt = pretrained["checkpoints"]["last"]
    new_data = ["dataset.num_classes=6", "dataset.source.num_samples=120", "dataset.source.seed=3"]
    args = ("--config", str(ssl_config), "--split", "all", *new_data)
    report = evaluate(ckpt, tmp_path / "new.h5", *args)
    columns = read_h5(tmp_path / "new.h5")
    train = make_split(120, 0.125, 0.125, 0)["train"]
    np.testing.assert_array_equal(np.load(tmp_path / "new.split.npz")["train"], train)
    in_bank = np.isin(columns["index"], train)
    assert np.isnan(columns["knn_score"][in_bank]).all()
    scored = columns["knn_score"][~in_bank]
    np.testing.assert_allclose(scored.sum(axis=1), 1, rtol=1e-5)  # votes over the 6 classes
    accuracy = (scored.argmax(axis=1) == columns["y"][~in_bank]).mean()
    assert report["metrics"]["all/knn_acc"] == pytest.approx(accuracy)
    assert "online_score" not in columns and "all/online_acc" not in report["metrics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing.ckpt"], "checkpoint not found"),
        (["--checkpoint", "foreign.ckpt"], "is not a ssl-lightning checkpoint"),
        (["--out", "preds.npz"], "name the file with one of .h5, .hdf5, .csv"),
        (["--dataset", "no_such_data"], "no such dataset config; choose one of"),
        (["--dataset", "e2e_2g", "dataset.source.path=x.h5"], "takes 3-channel images"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(probe_run, tmp_path, capsys, args, message):
    (tmp_path / "foreign.ckpt").write_bytes(b"not a checkpoint")
    given = {"--checkpoint": probe_run["checkpoints"]["best"], "--out": str(tmp_path / "preds.h5")}
    rest = list(args)
    for flag in ("--checkpoint", "--out"):
        if flag in rest:
            given[flag] = str(tmp_path / rest.pop(rest.index(flag) + 1))
            rest.remove(flag)
    argv = [item for pair in given.items() for item in pair]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cpu", *rest])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "preds.h5").exists()


README_SECTION = "### Applying a model to other data"
FAST_TRAIN = [
    "debug=fast",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "method.batch_size=16",
]


def readme_commands(heading: str) -> list[list[str]]:
    """The commands of the README section under `heading`, continuation lines joined."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.startswith("#")]


def test_the_readme_commands_for_other_data_run_as_written(tmp_path, monkeypatch, capsys):
    """Each command of the README section, on small files in the task-2g layouts (`<date>` is
    the run folder, ssl-train runs debug=fast-sized), and what it promises: a probe of two
    targets with metrics per target, whose predictions reproduce its test metrics; new data on
    its own split; the SSL checkpoint's kNN fit on the labelled file's training split."""
    monkeypatch.chdir(tmp_path)
    write_task_2g(tmp_path / "unlabelled.h5", labelled=False)
    write_task_2g(tmp_path / "labelled.h5", labelled=True)
    write_task_2g(tmp_path / "new_labelled.h5", labelled=True, n=64)
    commands = readme_commands(README_SECTION)
    assert [c[0] for c in commands].count("ssl-eval") == 3
    results = {}
    for program, *args in commands:
        args = [arg.replace("<date>", "run") for arg in args]
        if program == "ssl-train":
            method = next((a.split("=")[1] for a in args if a.startswith("method=")), "simclr")
            run_dir = tmp_path / "outputs" / method / "run"
            results[method] = run_with_hydra_files([*args, *FAST_TRAIN], run_dir)
        else:
            {"ssl-eval": main, "ssl-embed": embed_main}[program]([*args, "--device", "cpu"])
    probe = results["probe"]["metrics"]
    per_target = {f"test/{m}_{t}" for m in ("mae", "rmse", "resolution") for t in ("m", "pT")}
    assert per_target | {"test/mae_scaled", "val/mae_scaled"} <= set(probe)
    preds = json.loads((tmp_path / "preds.metrics.json").read_text())["metrics"]
    for name, value in probe.items():
        if name.startswith("test/"):
            assert preds[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    rows = np.genfromtxt(tmp_path / "new.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(rows["index"], np.arange(64))
    assert {"prediction_m", "prediction_pT", "m", "pT"} <= set(rows.dtype.names)
    knn = json.loads((tmp_path / "knn.metrics.json").read_text())
    assert {"test/knn_acc", "test/knn_auroc"} <= set(knn["metrics"]) and knn["kind"] == "ssl"
    test_2g = make_split(96, 0.1, 0.1, 0)["test"]
    np.testing.assert_array_equal(read_h5(tmp_path / "emb_2g.h5")["index"], test_2g)
    np.testing.assert_array_equal(np.load(tmp_path / "knn.split.npz")["test"], test_2g)
    assert "error" not in capsys.readouterr().err
