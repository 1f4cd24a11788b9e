"""The package as `pip install .` makes it: the wheel carries every config and module, and its
console scripts work from a folder with no checkout around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "ssl_lightning", "conf")
RUN = [
    "debug=fast",
    "dataset=synthetic",
    "augment=natural",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def files_under(root: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(pattern))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (a build in the checkout would leave build/)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(out), str(source)], check=True, capture_output=True)
    (built,) = out.glob("ssl_lightning-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a folder of its own (its console scripts in `bin/`)."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    return target


def start(site: Path, cwd: Path, *command: str, **env: str) -> subprocess.Popen:
    """A console script of the installed wheel, started in `cwd`; its package shadows the
    checkout's. Started, not run: two at a time halve the wait for imports."""
    return subprocess.Popen(
        [str(site / "bin" / command[0]), *command[1:]],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(site), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def test_the_wheel_carries_every_config_and_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(
        n.removeprefix("ssl_lightning/conf/")
        for n in names
        if n.startswith("ssl_lightning/conf/") and n.endswith(".yaml")
    )
    assert configs == files_under(REPO / "conf", "*.yaml")
    modules = sorted(n.removeprefix("ssl_lightning/") for n in names if n.endswith(".py"))
    expected = files_under(REPO / "ssl_lightning", "*.py")
    assert modules == sorted(
        [*expected, *(f"conf/{f}" for f in files_under(REPO / "conf", "*.py"))]
    )


def test_the_installed_commands_work_from_any_folder(site, tmp_path):
    located = subprocess.run(
        [sys.executable, "-c", "import ssl_lightning.train as t; print(t.__file__, t.CONFIG_DIR)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(Path(p).is_relative_to(site) for p in located.stdout.split())

    data = tmp_path / "data"
    training = start(
        site, tmp_path, "ssl-train", *RUN, "hydra.run.dir=run", SSL_LIGHTNING_DATA=str(data)
    )
    missing = f"method.pretrained={tmp_path / 'missing.ckpt'}"
    failing = start(
        site, tmp_path, "ssl-train", *RUN, "method=probe", missing, "hydra.run.dir=failed"
    )
    status, out, err = finish(training)
    assert status == 0, err
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    assert Path(results["checkpoints"]["last"]) == run_dir / "checkpoints" / "last.ckpt"
    created = f"data folder: {data} (created; set SSL_LIGHTNING_DATA to move it)"
    assert out.count(created) == 1 and data.is_dir()
    log = (run_dir / "train.log").read_text()  # the run's log: ours, Lightning's, the summary
    assert created in log and "][lightning." in log and "results:    " in log
    assert (out + err).count("GPU available:") == 1  # Lightning's lines once, not twice

    last = results["checkpoints"]["last"]
    embedding = start(site, tmp_path, "ssl-embed", "--checkpoint", last, "--out", "emb.npz")
    helping = start(site, tmp_path, "ssl-make-jets", "--help")
    status, _, err = finish(failing)  # a failed run keeps its error line in its log too
    error = err.strip().splitlines()[-1]
    assert status == 2 and error.startswith("error: ")
    assert error in (tmp_path / "failed" / "train.log").read_text()
    status, _, err = finish(embedding)
    assert status == 0 and (tmp_path / "emb.npz").is_file(), err
    status, out, _ = finish(helping)
    assert status == 0 and "--num-jets" in out


def test_help_and_tab_completion_import_neither_torch_nor_lightning(tmp_path):
    """What makes `ssl-train --help` and each TAB answer at once (they took 5-13 s)."""
    probe = (
        "import atexit, sys\n"
        "heavy = {'torch', 'lightning', 'wandb'}\n"
        "atexit.register(lambda: print('heavy:', sorted(heavy & set(sys.modules))))\n"
        "from ssl_lightning.train import cli\n"
        "cli()\n"
    )
    for args in (["--help"], ["-sc", "query=bash"]):
        shown = subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=tmp_path,
            env={**os.environ, "COMP_LINE": "ssl-train meth"},
            capture_output=True,
            text=True,
        )
        assert shown.stdout.strip().endswith("heavy: []"), shown.stdout + shown.stderr
