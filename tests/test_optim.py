"""LARS and the warm-up + cosine schedule."""

import math

import pytest
import torch

from ssl_lightning.optim import (
    LARS,
    build_optimizer,
    split_decay_groups,
    warmup_cosine,
    warmup_length,
)


def test_warmup_then_cosine_shape():
    values = [
        warmup_cosine(s, warmup_steps=10, total_steps=110, final_factor=0.01) for s in range(110)
    ]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.01 + 0.99 * 0.5)
    assert values[-1] == pytest.approx(0.01, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


@pytest.mark.parametrize(
    ("warmup_epochs", "total_steps", "epochs", "expected"),
    [
        (10, 3000, 200, 150),  # a long run: its own 10 epochs (5 %), below the cap
        (10, 900, 30, 90),  # the default run: 10 of 30 epochs would be a third; capped at 3
        (1, 48, 4, 4),  # a short probe: its 1 epoch (12 steps) is a quarter; capped at 4 steps
        (10, 3, 1, 1),  # debug=fast: 3 steps, full LR from the first
    ],
)
def test_warmup_never_exceeds_a_tenth_of_the_run(warmup_epochs, total_steps, epochs, expected):
    steps = warmup_length(warmup_epochs, total_steps, epochs)
    assert steps == expected
    schedule = [warmup_cosine(s, steps, total_steps, 0.01) for s in range(total_steps)]
    peak = schedule.index(max(schedule))
    assert peak <= max(0, total_steps // 10 - 1)  # the peak LR is reached within the first tenth
    assert schedule[-1] < schedule[peak]  # and the cosine decays before the end


def test_lars_step_uses_the_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.6, 0.8])  # |g| = 1
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, trust_coefficient=0.01)
    opt.step()
    # step = lr * trust * g = 1 * (0.01 * 5 / 1) * g
    assert torch.allclose(w.detach(), torch.tensor([3.0 - 0.03, 4.0 - 0.04]))


def test_lars_excluded_group_takes_plain_sgd_steps():
    b = torch.nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS(
        [{"params": [b], "lars": False}],
        lr=0.5,
        momentum=0.0,
        weight_decay=0.0,
        trust_coefficient=0.001,
    )
    opt.step()
    assert math.isclose(b.item(), 1.0 - 0.5 * 2.0)


def test_biases_and_norms_are_split_from_weights():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = split_decay_groups(net)
    assert [p.shape for p in decay] == [torch.Size([4, 3])]
    assert len(no_decay) == 3


def test_unknown_optimizer_name_is_rejected():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam9", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], 0.1, {})
