"""Physics-safe view augmentations for calorimeter jet images, as one batched module."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.data.augment.common import check_probability, pixel_centres, views_per_sample
from ssl_lightning.data.random_keys import grid_seeds, keyed_uniform, uniform_at

_DIRECTIONS = 8  # split moves: to the cells of the 3x3 block around a pixel, row-major


def _on_host(t: Tensor) -> bool:
    """Whether `t` lies where the host reads it at no cost (a CPU), which decides two things.

    Lists of hits: on the host they hold the hits only (cutting them needs a length the host
    must read) and the pixel operations then cost what the hits do. On an accelerator the read
    would make the host wait for the device (`nonzero` does that), so there a list keeps every
    entry and a mask of the hits: fixed shapes, no sync.
    Sorting: on the host through NumPy, whose sort of ~10^4 int64 keys took a tenth of the time
    of torch's CPU sort here (0.08 vs 0.8 ms, a tenth of a jets batch's views).
    """
    return t.device.type == "cpu"


def _positions(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Where 1-d `keep` is non-zero, in order (every position, off the host), and the mask
    of those entries."""
    if _on_host(keep):
        index = keep.nonzero()[:, 0]
        return index, torch.ones_like(index, dtype=torch.bool)
    return torch.arange(len(keep), device=keep.device), keep != 0


def _select(keep: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The entries of 1-d tensors that `_positions(keep)` lists, and last the mask."""
    index, live = _positions(keep)
    return (*(t.index_select(0, index) for t in tensors), live)


def _sorted(key: Tensor) -> Tensor:
    """The values of 1-d `key` in ascending order (values only: every sort agrees on them)."""
    if _on_host(key):
        return torch.from_numpy(np.sort(key.numpy()))
    return torch.sort(key).values


class JetAugment(nn.Module):
    """Physics-safe views of calorimeter jet images (pixel = summed pT >= 0, jet-axis centred).

    In order, per sample:
    - rotate_any (optional): a bilinear rotation by a uniform angle about the centre, rescaled
      per channel so total pT is kept; images must be square.
    - geometry: eta (row) and phi (column) flips, a rotation by k * 90 degrees about the centre
      (rot90; square images) and an integer shift up to max_shift pixels (zero fill), composed
      into one exact pixel permutation: pixel values are kept bit for bit, and so is total pT
      except what the shift pushes out of the frame.
    - smear and noise, on active pixels (> 0) only: v * max(0, 1 + smear * z1) + noise * z2,
      clamped at 0, with z1, z2 normal from Box-Muller on per-pixel keyed uniforms.
    - drop_soft (probability drop_soft_p): in each channel, pixels below the q-quantile of the
      channel's active values are zeroed, q ~ U(0, drop_soft_max_frac) per sample. A quantile,
      not a fraction of the maximum, because pixel pT spans decades: it removes up to that share
      of the hits, always the softest, never the hardest.
    - split (probability split_p): each active pixel is picked with probability split_frac and
      moves a fraction z ~ U(0, 0.5) of its pT (the softer side of a collinear splitting) to one
      of its 8 neighbours; moves that would leave the image are skipped, so per-channel total pT
      is conserved and the hit count never drops.
    No colour or zoom augmentations: they would change the physics (pT scale, jet mass).

    The pixel operations work on the list of hits and draw their per-pixel uniforms with
    `uniform_at` there only: jet images are sparse (about 1% of pixels), so on a CPU their
    cost follows the hit count, not the image size. On an accelerator the lists hold every pixel
    (`_on_host`) with a mask of the hits, and what is written through an entry that is not a
    hit lands in a spare row past the image: no op waits for the device to tell the host a size
    or a value, so on a GPU the views never stall the step. Split adds one neighbour direction
    at a time, so no two writes hit the same pixel at once and the result is deterministic on
    GPUs too.
    """

    def __init__(
        self,
        flip_p: float,
        rot90: bool,
        rotate_any: bool,
        max_shift: int,
        smear: float,
        noise: float,
        drop_soft_p: float,
        drop_soft_max_frac: float,
        split_p: float,
        split_frac: float,
    ) -> None:
        super().__init__()
        self.flip_p = check_probability("flip_p", flip_p)
        self.rot90 = bool(rot90)
        self.rotate_any = bool(rotate_any)
        if max_shift < 0:
            raise ValueError(f"max_shift={max_shift} must be >= 0")
        self.max_shift = int(max_shift)
        if smear < 0 or noise < 0:
            raise ValueError(f"smear={smear} and noise={noise} are widths: they must be >= 0")
        self.smear = float(smear)
        self.noise = float(noise)
        self.drop_soft_p = check_probability("drop_soft_p", drop_soft_p)
        if not 0.0 <= drop_soft_max_frac < 1.0:
            raise ValueError(f"drop_soft_max_frac={drop_soft_max_frac} must lie in [0, 1)")
        self.drop_soft_max_frac = float(drop_soft_max_frac)
        self.split_p = check_probability("split_p", split_p)
        self.split_frac = check_probability("split_frac", split_frac)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        if x.dtype != torch.float32:  # the soft-deposit ranking reads float32 bit patterns
            return self.forward(x.float(), keys).to(x.dtype)
        views = views_per_sample(x, keys)
        c, h, w = x.shape[1:]
        if (self.rot90 or self.rotate_any) and h != w:
            raise ValueError(f"rotations need square images, got {h}x{w}")
        u = keyed_uniform(keys, 9)
        eta_u, phi_u, turn_u, angle_u, dy_u, dx_u, drop_u, quantile_u, split_u = u.unbind(1)
        if self.rotate_any:
            x = self._rotate(x.repeat(views, 1, 1, 1), 2 * math.pi * angle_u)
        eta_sign = 1 - 2 * (eta_u < self.flip_p).long()
        phi_sign = 1 - 2 * (phi_u < self.flip_p).long()
        quarter_turns = (4 * turn_u).long() if self.rot90 else torch.zeros_like(eta_sign)
        shift = torch.stack([dy_u, dx_u], 1).mul_(2 * self.max_shift + 1).long() - self.max_shift
        signed_turns = self._signed_turns(eta_sign, phi_sign, quarter_turns)
        if not (self.smear or self.noise or self.drop_soft_p or self.split_p):
            return self._permute(x.repeat(len(keys) // len(x), 1, 1, 1), signed_turns, shift)
        # the pixel operations need the hits anyway: move only those (a fresh buffer, so the
        # edits below leave the input alone)
        pixels, sample, position, live = self._move_hits(x, signed_turns, shift)
        seeds = grid_seeds(keys)  # the per-pixel streams, drawn from where the hits are
        if self.smear or self.noise:
            self._smear(pixels, sample, position, live, seeds)
        if self.drop_soft_p:
            chosen = drop_u < self.drop_soft_p
            live = self._drop_soft(pixels, sample, position, live, chosen, quantile_u, c)
        if self.split_p:
            self._split(pixels, sample, position, live, seeds, split_u < self.split_p, (h, w))
        return pixels[:-1].view(len(keys), c, h, w)

    @staticmethod
    def _signed_turns(eta_sign: Tensor, phi_sign: Tensor, quarter_turns: Tensor) -> Tensor:
        """[N, 2, 2] integer matrices diag(signs) @ R^k: flips and turns of centred coordinates.

        R = [[0, 1], [-1, 0]] acts on centred (row, column) coordinates: R^1 is torch.rot90(k=1)
        read backwards (output pixel <- source pixel). R^k = [[cos, sin], [-sin, cos]] of k
        quarter turns, from integer arithmetic on the device (no table to copy there).
        """
        k = quarter_turns
        cos = (1 - k) * (1 - k % 2)  # 1, 0, -1, 0
        sin = (2 - k) * (k % 2)  # 0, 1, 0, -1
        m = torch.stack([cos, sin, -sin, cos], 1).view(-1, 2, 2)
        return m * torch.stack([eta_sign, phi_sign], 1)[:, :, None]

    def _permute(self, x: Tensor, m: Tensor, shift: Tensor) -> Tensor:
        """Flips, 90-degree turns (`m`) and shift as one gather: output pixel <- source pixel.

        Works in doubled centred coordinates (2i - (H - 1)), where turns about the image centre
        are integer matrices. Each row of such a matrix has one non-zero entry, so every term of
        the source coordinates depends on the output row or on the output column alone: the
        index arithmetic and the bounds check run on [N, H] and [N, W] pieces, not [N, H, W].
        """
        n, c, h, w = x.shape
        r = 2 * torch.arange(h, device=x.device) - (h - 1) - 2 * shift[:, :1]  # [N, H]
        q = 2 * torch.arange(w, device=x.device) - (w - 1) - 2 * shift[:, 1:]  # [N, W]
        by_r = m[:, :, :1] * r[:, None, :]  # [N, 2, H]: (source row, column) terms from r
        by_q = m[:, :, 1:] * q[:, None, :]  # [N, 2, W]: ... and from q
        ok_r = (by_r[:, 0].abs() <= h - 1) & (by_r[:, 1].abs() <= w - 1)
        ok_q = (by_q[:, 0].abs() <= h - 1) & (by_q[:, 1].abs() <= w - 1)
        # 2 (i W + j) = (row2 + H - 1) W + col2 + W - 1, split into the r and q parts
        twice_r = by_r[:, 0] * w + by_r[:, 1]
        twice_q = by_q[:, 0] * w + by_q[:, 1] + ((h - 1) * w + w - 1)
        index = twice_r[:, :, None] + twice_q[:, None, :]
        index >>= 1
        outside = ~(ok_r[:, :, None] & ok_q[:, None, :])
        index.masked_fill_(outside, 0)  # any valid source: these pixels are zeroed below
        out = x.reshape(n, c, h * w).gather(2, index.view(n, 1, h * w).expand(n, c, h * w))
        return out.masked_fill_(outside.view(n, 1, h * w), 0.0).view(n, c, h, w)

    def _move_hits(
        self, x: Tensor, m: Tensor, shift: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`_permute` run forwards on the hits only: source pixel -> output pixel.

        `m` is orthogonal with integer entries, so its inverse is its transpose: each non-zero
        pixel is written where `_permute`'s gather would fetch it from, and the image equals
        `_permute(x)` exactly while the work follows the hit count instead of the image size.
        `m` may have V rows per image (V views): the hits are found once and copied per view.
        Returns the image as [V * N + 1, C * H * W] (the last row is spare, see `_slots`) and
        its hits: sample, position in the sample (0 where not live) and the live mask (hits
        that stay in the frame).
        """
        n, c, h, w = x.shape
        outputs, size = len(m), c * h * w
        # the hits in the batch's memory order: a channels-last batch is not copied
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        flat = (x.permute(0, 2, 3, 1) if channels_last else x).reshape(-1)
        hit, live = _positions(flat)
        value = flat.index_select(0, hit)
        sample, index = hit // size, hit % size
        if channels_last:
            pixel, channel = index // c, index % c
        else:
            channel, pixel = index // (h * w), index % (h * w)
        row2 = 2 * (pixel // w) - (h - 1)  # doubled centred coordinates of the source
        col2 = 2 * (pixel % w) - (w - 1)
        if outputs > n:  # view v of image i is output sample v * n + i
            views = outputs // n
            sample = (sample + n * torch.arange(views, device=x.device)[:, None]).view(-1)
            row2, col2, channel, value, live = (
                t.repeat(views) for t in (row2, col2, channel, value, live)
            )
        m, shift = m.index_select(0, sample), shift.index_select(0, sample)
        # output doubled coordinates m^T (row2, col2), shifted; the sums are even (same parity)
        row = (m[:, 0, 0] * row2 + m[:, 1, 0] * col2 + (h - 1)) // 2 + shift[:, 0]
        col = (m[:, 0, 1] * row2 + m[:, 1, 1] * col2 + (w - 1)) // 2 + shift[:, 1]
        live &= (row >= 0) & (row < h) & (col >= 0) & (col < w)
        position = torch.where(live, channel * (h * w) + row * w + col, 0)
        out = x.new_zeros(outputs + 1, size)
        out.view(-1).index_copy_(0, _slots(out, sample, position, live), value)
        return out, sample, position, live

    def _rotate(self, x: Tensor, angle: Tensor) -> Tensor:
        """Bilinear rotation about the centre, rescaled so each channel keeps its total pT.

        Bilinear resampling of spiky images gains or loses several percent of the sum; the
        rescaling removes that artefact (and spreads what the corners lose over the rest).
        """
        h, w = x.shape[2:]
        cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        xs, ys = pixel_centres(w, x)[None, None, :], pixel_centres(h, x)[None, :, None]
        grid = torch.stack([cos * xs - sin * ys, sin * xs + cos * ys], 3)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        before, after = x.sum((2, 3), keepdim=True), out.sum((2, 3), keepdim=True)
        return out * torch.where(after > 0, before / after, 0.0)

    def _smear(
        self,
        pixels: Tensor,
        sample: Tensor,
        position: Tensor,
        live: Tensor,
        seeds: Tensor,
    ) -> None:
        """Multiplicative smearing and additive noise on the hits, in place."""
        size, hit_seeds = pixels.shape[1], seeds.index_select(0, sample)
        u1, u2 = uniform_at(hit_seeds, torch.stack([position, position + size]))
        radius = torch.sqrt(-2 * torch.log(1 - u1))  # 1 - u1 lies in (0, 1]
        phase = 2 * math.pi * u2
        flat, slots = pixels.view(-1), _slots(pixels, sample, position, live)
        value = flat.index_select(0, slots)
        if self.smear:
            value *= (1 + self.smear * radius * torch.cos(phase)).clamp_(min=0)
        if self.noise:
            value = (value + self.noise * radius * torch.sin(phase)).clamp_(min=0)
        flat.index_copy_(0, slots, value)

    def _drop_soft(
        self,
        pixels: Tensor,
        sample: Tensor,
        position: Tensor,
        live: Tensor,
        chosen: Tensor,
        quantile_u: Tensor,
        c: int,
    ) -> Tensor:
        """Zeroes the chosen samples' soft pixels in place; returns which hits still stand."""
        if not len(live):  # an exact list of no hits (a shape: the host knows it)
            return live
        size = pixels.shape[1]
        flat, slots = pixels.view(-1), _slots(pixels, sample, position, live)
        value = flat.index_select(0, slots)
        alive = live & (value > 0)  # noise may have zeroed some hits
        candidate = alive & chosen.index_select(0, sample)
        rows = len(chosen) * c
        row = sample * c + position // (size // c)
        # Sort by (row, value) in one pass: positive float32 bit patterns order like the floats.
        # Hits arrive grouped by row, which keeps the sort cheap; the others sort last (row
        # `rows`), out of every row's range.
        key = torch.where(candidate, (row << 31) | value.view(torch.int32).long(), rows << 31)
        ordered = _sorted(key)
        ordered_row = ordered >> 31
        ordered_value = (ordered & 0x7FFFFFFF).int().view(torch.float32)
        all_rows = torch.arange(rows, device=pixels.device)
        start = torch.searchsorted(ordered_row, all_rows)
        count = torch.searchsorted(ordered_row, all_rows, right=True) - start
        quantile = quantile_u.repeat_interleave(c) * self.drop_soft_max_frac
        rank = (quantile * count).long()  # < count: the hardest pixel always stays
        # (a row without candidates reads any entry: no hit compares with its threshold)
        threshold = ordered_value.index_select(0, (start + rank).clamp_(max=len(key) - 1))
        dropped = candidate & (value < threshold.index_select(0, row))
        flat.index_fill_(0, _slots(pixels, sample, position, dropped), 0.0)
        return alive & ~dropped

    def _split(
        self,
        pixels: Tensor,
        sample: Tensor,
        position: Tensor,
        live: Tensor,
        seeds: Tensor,
        chosen: Tensor,
        hw: tuple[int, int],
    ) -> None:
        """Moves part of the pT of random hits to random neighbours, in place."""
        (h, w), size = hw, pixels.shape[1]
        keep, hit_seeds = live & chosen.index_select(0, sample), seeds.index_select(0, sample)
        sample, position, hit_seeds, live = _select(keep, sample, position, hit_seeds)
        picked = uniform_at(hit_seeds, position + 2 * size) < self.split_frac
        sample, position, hit_seeds, live = _select(live & picked, sample, position, hit_seeds)
        u = uniform_at(hit_seeds, torch.stack([position + 3 * size, position + 4 * size]))
        direction, fraction = (_DIRECTIONS * u[0]).long(), 0.5 * u[1]
        cell = direction + (direction >= _DIRECTIONS // 2)  # 0..8 without the centre, 4
        step_row, step_col = cell // 3 - 1, cell % 3 - 1
        row = position % (h * w) // w + step_row
        col = position % w + step_col
        live &= (row >= 0) & (row < h) & (col >= 0) & (col < w)
        flat, hits = pixels.view(-1), _slots(pixels, sample, position, live)
        value = flat.index_select(0, hits)
        moved = fraction * value
        flat.index_copy_(0, hits, value - moved)
        neighbour = position + step_row * w + step_col
        for d in range(_DIRECTIONS):  # one direction at a time: its targets are distinct
            index = _slots(pixels, sample, neighbour, live & (direction == d))
            flat.index_copy_(0, index, flat.index_select(0, index) + moved)


def _slots(pixels: Tensor, sample: Tensor, position: Tensor, live: Tensor) -> Tensor:
    """Where hits sit in `pixels` [V * N + 1, C * H * W] read flat. Entries that are not live
    point into the spare last row, so what is written through them lands outside the image."""
    size = pixels.shape[1]
    return torch.where(live, sample * size + position, (len(pixels) - 1) * size)
