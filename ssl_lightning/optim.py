"""Optimizers and the per-step learning-rate schedule shared by every method."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017), as used by SimCLR.

    Groups with `lars=False` (biases, norms, the online probe) take plain SGD steps: adapting
    the LR of 1-D parameters destabilises large-batch SSL.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float,
        weight_decay: float,
        trust_coefficient: float,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            lars=True,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * p_norm / g_norm,
                        torch.ones_like(p_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def split_decay_groups(module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """(weights, biases-and-norms): the second list gets no weight decay and no LARS scaling."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(name: str, groups: list[dict], lr: float, cfg: dict) -> Optimizer:
    """One of lars | sgd | adamw over param groups that may carry their own lr / weight_decay."""
    if name == "lars":
        return LARS(
            groups,
            lr=lr,
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
            trust_coefficient=cfg["trust_coefficient"],
        )
    for g in groups:
        g.pop("lars", None)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {name!r}: use lars, sgd or adamw")


def warmup_length(warmup_epochs: float, total_steps: int, epochs: int) -> int:
    """Warm-up steps for `warmup_epochs` of a `total_steps`-step run of `epochs` epochs, capped at
    a tenth of the run: a run shorter than its warm-up (debug=fast, a short probe) would
    otherwise never reach its peak LR nor decay. At least 1 (no warm-up: full LR from step 0)."""
    return max(1, min(round(warmup_epochs * total_steps / epochs), total_steps // 10))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final_factor: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to `final_factor`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
