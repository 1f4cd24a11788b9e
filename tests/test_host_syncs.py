"""A training step never waits on the host: nothing on its path forces a device -> host sync.

On a GPU the host queues kernels ahead of the device. An op whose result the host must read (a
data-dependent output size, a Python number, a blocking copy) drains that queue, and a ResNet-15
step of a few milliseconds stalls on every one. A CPU shows no stall, so the test counts the aten
ops that force one on a GPU, in a whole in-process `ssl-train` run, between successive batch
reads: what one step costs (transfer, views, forward, backward, optimizer, callbacks), while
setup, the first step's one-time work, epoch ends and checkpoints stay out. On a CPU every tensor
is on the host, so copies between host and device (a constant created on the host and moved each
step) only count on a GPU; the rules below are written for one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data.dataloader import _BaseDataLoaderIter

import ssl_lightning.data.augment.jets as jets
import ssl_lightning.methods.simclr as simclr_module
from ssl_lightning.data.random_keys import sample_keys
from ssl_lightning.errors import UserError
from ssl_lightning.train import build, compose_run, run

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"

aten = torch.ops.aten


def _bool_index(args: tuple, kwargs: dict) -> bool:
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])


def _no_output_size(args: tuple, kwargs: dict) -> bool:
    return kwargs.get("output_size") is None


def _always(args: tuple, kwargs: dict) -> bool:
    return True


def _crosses_blocking(source: torch.Tensor, target: torch.device, non_blocking: bool) -> bool:
    """Device -> host copies always wait; host -> device ones unless non-blocking and pinned."""
    if source.device.type == target.type:
        return False
    if target.type == "cpu":
        return True
    return not (non_blocking and source.is_pinned())


def _to_copy_blocks(args: tuple, kwargs: dict) -> bool:
    target = kwargs.get("device") or args[0].device
    return _crosses_blocking(args[0], torch.device(target), kwargs.get("non_blocking", False))


def _copy_blocks(args: tuple, kwargs: dict) -> bool:
    if not isinstance(args[1], torch.Tensor):  # copy_ of a number: a fill
        return False
    non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    return _crosses_blocking(args[1], args[0].device, non_blocking)


# The ops that make the host wait for the device on a GPU, and when (overload packet -> test).
# Not listed: _assert_async (a device-side assert, raised later without a wait), nonzero_static
# and repeat_interleave with output_size (sizes known up front).
SYNCING_OPS: dict[Any, tuple[Callable[[tuple, dict], bool], str]] = {
    aten.nonzero: (_always, "output size = the number of hits: the host reads the count"),
    aten.masked_select: (_always, "output size = the number of selected elements"),
    aten._unique: (_always, "output size = the number of distinct values"),
    aten._unique2: (_always, "output size = the number of distinct values"),
    aten.unique_dim: (_always, "output size = the number of distinct values"),
    aten.unique_consecutive: (_always, "output size = the number of runs"),
    aten.unique_dim_consecutive: (_always, "output size = the number of runs"),
    aten.bincount: (_always, "output size = the largest value + 1"),
    aten.repeat_interleave: (_no_output_size, "output size = the sum of the repeats"),
    aten.index: (_bool_index, "x[mask]: a nonzero of the mask"),
    aten.index_put: (_bool_index, "x[mask] = y: a nonzero of the mask"),
    aten.index_put_: (_bool_index, "x[mask] = y: a nonzero of the mask"),
    aten._local_scalar_dense: (_always, "item(), float(), bool(t), `if t:`: a value for Python"),
    aten.is_nonzero: (_always, "bool(t): a value for Python"),
    aten.equal: (_always, "torch.equal returns a Python bool"),
    aten.lift_fresh: (_always, "torch.tensor / from_numpy of host data: a blocking H2D copy"),
    aten.lift_fresh_copy: (_always, "torch.tensor of host data: a blocking H2D copy"),
    aten._to_copy: (_to_copy_blocks, ".to(device): D2H, or H2D from pageable memory"),
    aten.copy_: (_copy_blocks, "copy_ across devices: D2H, or H2D from pageable memory"),
}


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops of SYNCING_OPS that run while it is active, by op and why they sync."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.paused = False

    def __torch_dispatch__(
        self, func: OpOverload, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        syncs, why = SYNCING_OPS.get(func.overloadpacket, (None, ""))
        if syncs is not None and not self.paused and syncs(args, kwargs):
            self.counts[f"{func}: {why}"] += 1
        return func(*args, **kwargs)

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Host-side work that a GPU run does in loader worker processes is not counted."""
        self.paused, before = True, self.paused
        try:
            yield
        finally:
            self.paused = before


def syncs_per_batch(
    overrides: list[str], output_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> list[Counter[str]]:
    """Syncing ops of an in-process `ssl-train` run between successive batch reads, the reads
    themselves left out (a GPU run reads in loader workers): Lightning reads one batch ahead,
    so entry k >= 1 holds all of step k - 1."""
    counter = HostSyncCounter()
    marks: list[Counter[str]] = []
    read_batch = _BaseDataLoaderIter.__next__

    def next_batch(self: _BaseDataLoaderIter) -> Any:
        marks.append(counter.counts.copy())
        with counter.pause():
            return read_batch(self)

    cfg = compose_run(overrides, output_dir)
    with monkeypatch.context() as patch:
        patch.setattr(_BaseDataLoaderIter, "__next__", next_batch)
        with counter:
            run(cfg)
    return [after - before for before, after in zip(marks, marks[1:], strict=False)]


def accelerator_lists(keep: torch.Tensor) -> bool:
    """`jets._on_host` as on an accelerator, where cutting a list to its hits would sync."""
    return False


STEPS = 5
COMMON = [
    "logger=none",
    "trainer.max_epochs=1",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",  # the TQDM bar reads the logged loss every step
    "trainer.log_every_n_steps=1000",  # no logged step: those may read values
    "method.batch_size=16",
]
DATA = {
    "jets": ["dataset=jets", "augment=jets", "dataset.source.num_jets=120"],
    "natural": ["dataset=synthetic", "augment=natural", "augment.blur_p=0.5"],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated jets file, made before any count starts."""
    path = tmp_path_factory.mktemp("data")
    cfg = compose_run([*DATA["jets"], f"paths.data_dir={path}"], path / "unused")
    build(cfg.dataset.source).prepare()
    return path


@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("method", ["simclr", "barlow_twins"])
def test_a_training_step_never_waits_on_the_host(method, data, data_dir, tmp_path, monkeypatch):
    # jet views as on a GPU: a CPU cuts its lists of hits to length, which it reads for free
    monkeypatch.setattr(jets, "_on_host", accelerator_lists)
    overrides = [*COMMON, *DATA[data], f"method={method}", f"paths.data_dir={data_dir}"]
    batches = syncs_per_batch(overrides, tmp_path, monkeypatch)
    steady = batches[2:]  # the first step pays one-time costs (lazy constants, caches)
    assert len(steady) >= 2
    per_step = sum(sum(c.values()) for c in steady) / len(steady)
    print(f"{method} {data}: {per_step:g} syncs per step")
    assert per_step == 0, dict(sum(steady, Counter()))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"noise": 0.3, "drop_soft_p": 1.0, "split_p": 1.0, "split_frac": 0.5, "max_shift": 4},
        {"drop_soft_p": 1.0, "drop_soft_max_frac": 0.9, "smear": 0.0},
        {"rot90": False, "split_p": 1.0, "split_frac": 1.0},
    ],
)
def test_jet_views_made_as_on_an_accelerator_equal_the_exact_ones(settings, monkeypatch):
    """The lists an accelerator keeps (every pixel, the hits masked) change no bit of a view."""
    g = torch.Generator().manual_seed(len(settings))
    x = torch.empty(12, 3, 16, 16).exponential_(generator=g) ** 3
    x *= torch.rand(12, 3, 16, 16, generator=g) < 0.1
    x[3] = 0  # an empty image
    keys = torch.cat([sample_keys(0, 1, torch.arange(12), v) for v in range(2)])
    aug = instantiate(OmegaConf.load(CONF / "jets.yaml"), **settings)
    exact = aug(x.contiguous(memory_format=torch.channels_last), keys)
    monkeypatch.setattr(jets, "_on_host", accelerator_lists)
    assert torch.equal(aug(x.contiguous(memory_format=torch.channels_last), keys), exact)
    assert torch.equal(aug(x, keys), exact)


def test_a_nan_loss_between_logged_steps_stops_before_a_checkpoint(train, monkeypatch, tmp_path):
    """The NaN guard reads its record on logged steps and before validation and checkpoints: a
    NaN at an unlogged step lets the epoch run on, but its weights never reach last.ckpt."""
    calls = {"n": 0}
    real_loss = simclr_module.nt_xent_loss

    def loss_turning_nan(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(z1, z2, temperature)
        return loss * float("nan") if calls["n"] > 4 else loss  # 3 train + 1 val batch, then NaN

    monkeypatch.setattr(simclr_module, "nt_xent_loss", loss_turning_nan)
    overrides = [
        "dataset.source.num_samples=128",  # 3 training batches of 32
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=50",
    ]
    with pytest.raises(UserError, match=r"non-finite loss \(nan\) at epoch 1, step 3"):
        train(overrides, "nan")
    assert calls["n"] == 4 + 3  # epoch 1 ran to its end, then validation did not start
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
