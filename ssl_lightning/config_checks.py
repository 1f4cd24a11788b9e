"""A run's config, checked before anything is built: a wrong value ends in one line naming the key
and a valid value, instead of a traceback from deep inside Lightning or torch minutes later,
after a W&B run was made for nothing.

Hydra composes whatever the YAML files and the command line give: struct mode refuses unknown
keys, but not `method.batch_size=0`, `dataset.label_fraction=abc` or `method.temperature=0`.
`check_config` runs first in `run()`: values left unset (`???`), each key of `RULES` (key, what a
valid value is, an example), the rules that tie keys together, the output folder, and the
checkpoint the run would resume from. What Hydra itself refuses before a run starts (an unknown
key, a missing option, an output folder it cannot make) `hydra_errors_in_one_line` turns into
one line too.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_lightning.errors import UNWRITABLE, UserError, error_line, writing

LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves


@dataclass(frozen=True)
class Check:
    """Whether a value is valid, and what a valid one is, in words."""

    accepts: Callable[[Any], bool]
    wants: str


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole(minimum: int) -> Check:
    return Check(lambda v: _integer(v) and v >= minimum, f"a whole number >= {minimum}")


def number(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Check:
    """A finite number between `low` and `high`, each end included unless open."""

    def accepts(v: Any) -> bool:
        if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    if high == math.inf:
        return Check(accepts, f"a number {'>' if low_open else '>='} {low:g}")
    ends = ("(" if low_open else "[", ")" if high_open else "]")
    return Check(accepts, f"a number in {ends[0]}{low:g}, {high:g}{ends[1]}")


def one_of(*choices: str) -> Check:
    return Check(lambda v: v in choices, f"one of {', '.join(choices)}")


def optional(check: Check) -> Check:
    return Check(lambda v: v is None or check.accepts(v), f"{check.wants}, or null")


POSITIVE = number(0, low_open=True)
FRACTION = number(0, 1, high_open=True)

# (key, check, an example of a valid value); a key the config lacks (another method's) is skipped
RULES: tuple[tuple[str, Check, str], ...] = (
    ("seed", whole(0), "0"),
    ("method.batch_size", whole(1), "64"),
    ("method.optimizer.name", one_of("lars", "sgd", "adamw"), "adamw"),
    ("method.optimizer.lr", POSITIVE, "0.001"),
    ("method.optimizer.weight_decay", number(0), "0.0001"),
    ("method.scheduler.warmup_epochs", whole(0), "1"),
    ("method.temperature", POSITIVE, "0.1"),
    ("method.lambd", number(0), "0.0051"),
    ("method.lp_epochs", whole(0), "10"),
    ("method.backbone_lr_scale", number(0), "0.1"),
    ("dataset.channels", whole(1), "3"),
    ("dataset.num_classes", optional(whole(2)), "2"),
    ("dataset.label_fraction", number(0, 1, low_open=True), "0.01"),
    ("dataset.val_fraction", FRACTION, "0.1"),
    ("dataset.test_fraction", FRACTION, "0.1"),
    ("hardware.loader_workers", whole(0), "4"),
    ("hardware.loader_prefetch", whole(1), "2"),
    ("loader.num_workers", whole(0), "4"),
    ("loader.prefetch_factor", whole(1), "2"),
    ("loader.eval_batch_size", whole(1), "512"),
    ("hardware.devices", whole(1), "1"),
    ("hardware.num_nodes", whole(1), "1"),
    ("trainer.max_epochs", whole(1), "30"),
    ("trainer.log_every_n_steps", whole(1), "10"),
    ("trainer.check_val_every_n_epoch", whole(1), "1"),
    ("preemption.max_requeues", whole(0), "3"),
)
_ABSENT = object()


def check_config(cfg: DictConfig) -> None:
    """Raise a one-line UserError for the first problem found in `cfg`; return if none."""
    _check_set(cfg)
    for key, check, example in RULES:
        value = _value(cfg, key)
        if value is not _ABSENT and not check.accepts(value):
            raise UserError(f"{key}={_shown(value)} is not {check.wants}: set e.g. {key}={example}")
    _check_probe_has_backbone(cfg)
    _check_output_folder(Path(cfg.paths.output_dir))
    _check_resume(cfg)


def _shown(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_set(cfg: DictConfig) -> None:
    """Values a config leaves to the user (`???`, such as dataset=hdf5's file)."""
    key = next(_unset(cfg), None)
    if key is not None:
        raise UserError(
            f"{key} is not set: add {key}=... to the command (the config leaves it to you)"
        )


def _unset(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[str]:
    """Keys of the values left unset, found without resolving interpolations (a part's custom
    resolver may be registered only when the part is built)."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif not OmegaConf.is_interpolation(node, key) and OmegaConf.is_config(node[key]):
            yield from _unset(node[key], f"{prefix}{key}.")


def _value(cfg: DictConfig, key: str) -> Any:
    """The value at `key` with its interpolations resolved; _ABSENT where the config has none."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT)
    except OmegaConfBaseException as err:
        raise UserError(f"{key} does not resolve ({_first_line(err)}): fix its value") from None


def _first_line(err: BaseException) -> str:
    """The gist of an error message: its first sentence (torch's and OmegaConf's run on)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text.split(". ")[0]


def _check_probe_has_backbone(cfg: DictConfig) -> None:
    """A probe without a checkpoint would probe random frozen features and report them."""
    mode = OmegaConf.select(cfg, "method.mode")
    if mode is not None and mode != "scratch" and not cfg.method.pretrained:
        raise UserError(
            f"method.mode={mode} probes a pretrained backbone but method.pretrained is not set: "
            "set method.pretrained=<pretraining run>/checkpoints/last.ckpt, or method.mode=scratch "
            "to train from random weights"
        )


def _check_output_folder(run_dir: Path) -> None:
    with writing(run_dir, fix="choose another output folder (hydra.run.dir=...)"):
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass


def _check_resume(cfg: DictConfig) -> None:
    """The checkpoint `fit` would resume from: given as `ckpt_path`, or the folder's own newest.
    It must exist, load, and hold this run's model: else Lightning fails inside `fit` with a
    traceback (a foreign file, a copy cut short) after the W&B run was made."""
    from ssl_lightning.train import resume_checkpoint  # the very choice fit() makes

    run_dir = Path(cfg.paths.output_dir)
    found = resume_checkpoint(cfg, run_dir)
    if found is None or found in LIGHTNING_CKPT_NAMES:
        return
    path = Path(found).expanduser()
    if cfg.ckpt_path:
        what, fix = f"ckpt_path={cfg.ckpt_path}", "give another checkpoint, or drop ckpt_path"
    else:
        what = f"{path}, the checkpoint this run folder would resume from,"
        fix = (
            f"move it away (mv {path} {path}.bad) and rerun: the run then resumes from the "
            "folder's next newest checkpoint, or starts afresh"
        )
    if not path.is_file():
        raise UserError(f"{what} not found: {fix}")
    saved = _saved_hyperparameters(path, what, fix)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    method.pop("_target_", None)
    if _another_model(saved, method):
        raise UserError(
            f"{what} holds another model than this run's (method or backbone settings differ): "
            f"resume with the settings it was trained with, or {fix}"
        )


def _saved_hyperparameters(path: Path, what: str, fix: str) -> dict[str, Any]:
    import torch

    if not zipfile.is_zipfile(path):  # a checkpoint is a zip archive; a cut copy lacks its end
        raise UserError(f"{what} is truncated or corrupt (not a whole torch archive): {fix}")
    try:  # memory-mapped: the hyper-parameters are read, the tensors are not
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # any unreadable archive: damaged inside, another program's
        reason = f"{type(err).__name__}: {_first_line(err)}"
        raise UserError(f"{what} is truncated or corrupt ({reason}): {fix}") from None
    saved = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or "state_dict" not in ckpt:
        raise UserError(f"{what} is not an ssl-train checkpoint (no model settings): {fix}")
    return dict(saved)


def _another_model(saved: dict[str, Any], method: dict[str, Any]) -> bool:
    """Another method has settings this one lacks and lacks some of its (SimCLR's temperature
    against Barlow Twins' lambd), or another backbone differs in a setting both have. A
    one-way difference is a setting a newer version of the code added: such a run resumes."""
    if set(saved) - set(method) and set(method) - set(saved):
        return True
    old, new = saved.get("backbone") or {}, method.get("backbone") or {}
    return any(old[key] != new[key] for key in set(old) & set(new))


@contextmanager
def hydra_errors_in_one_line() -> Iterator[None]:
    """Around `ssl-train`'s Hydra entry point: a config Hydra cannot compose (an unknown key, a
    missing option) and an output folder it cannot make end in one line and exit status 2.
    Hydra would print them in several lines, with status 1; HYDRA_FULL_ERROR=1 makes it raise
    them to here instead (and shows a bug's traceback whole)."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        yield
    except (ConfigCompositionException, OverrideParseException) as err:
        message = str(err).split("Config search path:")[0]  # a missing option's list of folders
        cause = f" ({_first_line(err.__cause__)})" if err.__cause__ else ""
        print(error_line(f"{message}{cause}"), file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        place = _unwritable_cause(err)
        if place is None:
            raise
        print(
            error_line(
                f"cannot write {place.filename} ({place.strerror}): choose another output "
                "folder (hydra.run.dir=..., or hydra.sweep.dir=... for a multirun)"
            ),
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def _unwritable_cause(err: BaseException | None) -> OSError | None:
    """The OSError behind `err` that says a place cannot be written (Hydra's logging setup
    wraps the one of the log file in a ValueError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in UNWRITABLE:
            return err
        err = err.__cause__ or err.__context__
    return None
