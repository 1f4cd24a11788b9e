"""SimCLR's view augmentations for natural images in [0, 1], as one batched module."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.data.augment.common import (
    check_probability,
    check_range,
    pixel_centres,
    views_per_sample,
)
from ssl_lightning.data.random_keys import keyed_uniform

_CROP_TRIES = 10  # RandomResizedCrop's attempts before falling back to the whole image
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights: grayscale, contrast mean, YIQ luma
_RGB_TO_YIQ = (_LUMA, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _between(u: Tensor, lo: float, hi: float) -> Tensor:
    """Uniforms in [0, 1) mapped onto [lo, hi): every draw comes from the keyed uniforms."""
    return lo + (hi - lo) * u


def _factor(u: Tensor, strength: float) -> Tensor:
    """A colour factor uniform in [max(0, 1 - strength), 1 + strength], as torchvision draws."""
    return _between(u, max(0.0, 1.0 - strength), 1.0 + strength)


class NaturalAugment(nn.Module):
    """SimCLR views of natural images in [0, 1], in SimCLR's order.

    Random resized crop and horizontal flip are one per-sample affine sampled bilinearly (output
    keeps H, W). Colour jitter (fixed order brightness, contrast, saturation, hue), grayscale and
    the contrast mean are all affine in RGB, so they fold into one per-sample 3x3 matrix plus
    offset, clamped to [0, 1] once instead of after each factor. Hue is a rotation of the chroma
    plane of YIQ. Then Gaussian blur (separable, per-sample kernels via grouped convolution) and
    solarize (x >= 0.5 -> 1 - x). Saturation, hue and grayscale need RGB: for C != 3 only
    brightness and contrast (mean over all channels) are jittered; crop, flip, blur and solarize
    work for any C.
    """

    def __init__(
        self,
        crop_scale: Sequence[float],
        crop_ratio: Sequence[float],
        flip_p: float,
        jitter_p: float,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        grayscale_p: float,
        blur_p: float,
        blur_sigma: Sequence[float],
        solarize_p: float,
    ) -> None:
        super().__init__()
        self.crop_scale = check_range("crop_scale", crop_scale)
        if self.crop_scale[1] > 1.0:
            raise ValueError(f"crop_scale={list(crop_scale)} is a fraction of the area: <= 1")
        self.crop_ratio = check_range("crop_ratio", crop_ratio)
        self.flip_p = check_probability("flip_p", flip_p)
        self.jitter_p = check_probability("jitter_p", jitter_p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue={hue} is a fraction of a turn: it must lie in [0, 0.5]")
        self.hue = float(hue)
        self.grayscale_p = check_probability("grayscale_p", grayscale_p)
        self.blur_p = check_probability("blur_p", blur_p)
        self.blur_sigma = check_range("blur_sigma", blur_sigma)
        self.solarize_p = check_probability("solarize_p", solarize_p)
        to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        self.register_buffer("to_yiq", to_yiq.float(), persistent=False)
        self.register_buffer("from_yiq", torch.linalg.inv(to_yiq).float(), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA), persistent=False)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        if self.luma.device != x.device:
            # once: the data module holds this module and Lightning moves only the model, so
            # the constants would otherwise cross to the device in every call (blocking on a GPU)
            self.to(x.device)
        x = x.repeat(views_per_sample(x, keys), 1, 1, 1)
        u = keyed_uniform(keys, 2 * _CROP_TRIES + 12).to(x.dtype)
        crop_u = u[:, : 2 * _CROP_TRIES]
        (pos_x, pos_y, flip_u, jitter_u, b_u, c_u, s_u, h_u, gray_u, blur_u, sigma_u, sol_u) = u[
            :, 2 * _CROP_TRIES :
        ].unbind(1)
        x = self._crop_flip(x, crop_u, pos_x, pos_y, flip_u < self.flip_p)
        if self.jitter_p > 0 or self.grayscale_p > 0:
            jitter = jitter_u < self.jitter_p
            x = self._colour(x, jitter, b_u, c_u, s_u, h_u, gray_u < self.grayscale_p)
        if self.blur_p > 0:  # every sample, kept where drawn: picking some would need a sync
            blurred = self._blur(x, _between(sigma_u, *self.blur_sigma))
            x = torch.where((blur_u < self.blur_p)[:, None, None, None], blurred, x)
        if self.solarize_p > 0:
            solarize = (sol_u < self.solarize_p)[:, None, None, None]
            x = torch.where(solarize & (x >= 0.5), 1.0 - x, x)
        return x.clamp_(0.0, 1.0)  # bilinear and blur are convex mixes: only rounding leaves [0,1]

    def _crop_flip(
        self, x: Tensor, crop_u: Tensor, pos_x: Tensor, pos_y: Tensor, flip: Tensor
    ) -> Tensor:
        """Samples the first of the tries whose box fits (else the whole image), mirrored."""
        n, c, h, w = x.shape
        area = _between(crop_u[:, :_CROP_TRIES], *self.crop_scale)
        log_lo, log_hi = (math.log(r) for r in self.crop_ratio)
        ratio = torch.exp(_between(crop_u[:, _CROP_TRIES:], log_lo, log_hi))
        width = torch.sqrt(area * ratio * (h / w))  # box sides as fractions of the image sides
        height = torch.sqrt(area / ratio * (w / h))
        fits = (width <= 1) & (height <= 1)
        first = fits.to(x.dtype).argmax(1, keepdim=True)  # argmax returns the first maximum
        found = fits.any(1)
        width = torch.where(found, width.gather(1, first)[:, 0], 1.0)
        height = torch.where(found, height.gather(1, first)[:, 0], 1.0)
        # box centre in grid_sample's [-1, 1] coordinates: left edge at pos * (1 - side)
        centre_x = 2 * pos_x * (1 - width) + width - 1
        centre_y = 2 * pos_y * (1 - height) + height - 1
        # The map is axis-aligned, so the grid is an outer sum of per-column x and per-row y
        # (cheaper than affine_grid's batched matrix product).
        sign = 1 - 2 * flip.to(x.dtype)
        grid_x = (width * sign)[:, None] * pixel_centres(w, x) + centre_x[:, None]
        grid_y = height[:, None] * pixel_centres(h, x) + centre_y[:, None]
        grid = torch.stack(
            [grid_x[:, None, :].expand(n, h, w), grid_y[:, :, None].expand(n, h, w)], 3
        )
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _colour(
        self,
        x: Tensor,
        jitter: Tensor,
        b_u: Tensor,
        c_u: Tensor,
        s_u: Tensor,
        h_u: Tensor,
        gray: Tensor,
    ) -> Tensor:
        """Applies jitter then grayscale as y = A x + t with one batched matrix product.

        Brightness b and contrast k give k b x + (1 - k) b m, m the mean luma of x; saturation,
        hue and grayscale are 3x3 matrices M applied after, so A = k b M, t = (1 - k) b m M 1.
        """
        n, c, h, w = x.shape
        pixels = x.reshape(n, c, h * w)
        one = torch.ones_like(b_u)
        bright = torch.where(jitter, _factor(b_u, self.brightness), one)
        contrast = torch.where(jitter, _factor(c_u, self.contrast), one)
        if c == 3:
            mean = pixels.mean(2) @ self.luma.to(x)
            saturation = torch.where(jitter, _factor(s_u, self.saturation), one)
            turn = torch.where(jitter, _between(h_u, -self.hue, self.hue), 0.0)
            matrix = self._chroma_matrix(saturation, 2 * math.pi * turn, gray)
        else:
            mean = pixels.mean((1, 2))
            matrix = torch.eye(c, dtype=x.dtype, device=x.device).expand(n, c, c)
        offset = ((1 - contrast) * bright * mean)[:, None] * matrix.sum(2)
        scale = (contrast * bright)[:, None, None]
        out = torch.baddbmm(offset[:, :, None], matrix * scale, pixels)
        return out.clamp_(0.0, 1.0).view(n, c, h, w)

    def _chroma_matrix(self, saturation: Tensor, angle: Tensor, gray: Tensor) -> Tensor:
        """Per-sample grayscale . hue . saturation as [N, 3, 3] matrices acting on RGB."""
        luma = self.luma.to(saturation)
        eye = torch.eye(3, dtype=saturation.dtype, device=saturation.device)
        to_gray = torch.ones(3, 1, dtype=luma.dtype, device=luma.device) * luma  # rows = luma
        s = saturation[:, None, None]
        sat = s * eye + (1 - s) * to_gray
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = eye.repeat(len(angle), 1, 1)
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        hue = self.from_yiq.to(saturation) @ rot @ self.to_yiq.to(saturation)
        grayscale = torch.where(gray[:, None, None], to_gray, eye)
        return grayscale @ hue @ sat

    def _blur(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Separable Gaussian blur, one kernel per sample, reaching 3 sigma_max (reflect pad)."""
        n, c, h, w = x.shape
        radius = min(math.ceil(3 * self.blur_sigma[1]), min(h, w) - 1)
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
        y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
        y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
        y = F.conv2d(y, kernel[:, None, :, None], groups=n * c)
        return y.view(n, c, h, w)
