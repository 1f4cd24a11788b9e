"""View augmentations: each asserts a property the SSL views rely on (exactness, range, keys)."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssl_lightning.data.augment import JetAugment, NaturalAugment
from ssl_lightning.data.random_keys import sample_keys

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"
OFF = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
NO_CROP = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0])
PIXEL_OPS_OFF = dict(smear=0.0, noise=0.0, drop_soft_p=0.0, split_p=0.0)


def natural(**overrides) -> NaturalAugment:
    """The module as the config builds it, with some arguments overridden."""
    return instantiate(OmegaConf.load(CONF / "natural.yaml"), **overrides)


def jet(**overrides) -> JetAugment:
    return instantiate(OmegaConf.load(CONF / "jets.yaml"), **overrides)


def keys(n: int, view: int = 0, epoch: int = 0) -> torch.Tensor:
    return sample_keys(0, epoch, torch.arange(n), view)


def images(n: int, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(n + c))


def jet_images(n: int, size: int = 16, occupancy: float = 0.2) -> torch.Tensor:
    """Sparse, steeply falling pT deposits like calorimeter jet images."""
    g = torch.Generator().manual_seed(n)
    pt = torch.empty(n, 3, size, size).exponential_(generator=g) ** 3
    return pt * (torch.rand(n, 3, size, size, generator=g) < occupancy)


def rows_sorted(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).sort(2).values


# --- NaturalAugment ------------------------------------------------------------------------------
def test_natural_config_holds_simclr_cifar_values():
    aug = natural()
    assert isinstance(aug, NaturalAugment)
    assert aug.crop_scale == (0.08, 1.0) and aug.jitter_p == 0.8 and aug.blur_p == 0.0


def test_natural_keeps_shape_dtype_and_range():
    x = images(16, size=32)
    out = natural(blur_p=0.5, solarize_p=0.2)(x, keys(16))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x, atol=0.05)


def test_natural_with_everything_off_is_the_identity():
    x = images(4)
    out = natural(**OFF, **NO_CROP)(x, keys(4))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def ramps(n: int, size: int = 16) -> torch.Tensor:
    """Channel 0 holds each pixel's x centre, channel 1 its y centre, both in (0, 1)."""
    centres = (torch.arange(size) + 0.5) / size
    x = torch.zeros(n, 3, size, size)
    x[:, 0], x[:, 1] = centres[None, :], centres[:, None]
    return x


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_natural_crop_zooms_into_a_box_of_the_drawn_area_and_ratio(flip_p: float):
    x = ramps(8)
    aug = natural(**{**OFF, "flip_p": flip_p}, crop_scale=[0.32, 0.32], crop_ratio=[2.0, 2.0])
    out = aug(x, keys(8))
    # bilinear reproduces a ramp (constant steps) away from the border, where it clamps
    step_x = out[:, 0].diff(dim=2)[:, :, 1:-1]
    step_y = out[:, 1].diff(dim=1)[:, 1:-1]
    width, height = 0.8, 0.4  # sqrt(0.32 * 2), sqrt(0.32 / 2)
    sign = -1 if flip_p else 1
    torch.testing.assert_close(step_x, torch.full_like(step_x, sign * width / 16))
    torch.testing.assert_close(step_y, torch.full_like(step_y, height / 16))
    assert (out[:, 0].amin((1, 2)) >= 0).all() and (out[:, 0].amax((1, 2)) <= 1).all()
    assert out[:, 1].amin((1, 2)).std() > 0.01  # the box moves


def test_natural_crop_falls_back_to_the_whole_image_when_no_box_fits():
    x = images(4)
    out = natural(**OFF, crop_scale=[1.0, 1.0], crop_ratio=[2.0, 2.0])(x, keys(4))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_natural_draws_differ_between_samples_of_a_batch():
    x = images(1).expand(6, -1, -1, -1)  # one image, six keys
    out = natural()(x, keys(6))
    for i in range(6):
        for j in range(i):
            assert not torch.allclose(out[i], out[j], atol=1e-3)


def test_natural_same_keys_same_views_other_view_other_output():
    x, aug = images(8), natural(blur_p=0.5)
    assert torch.equal(aug(x, keys(8)), aug(x, keys(8)))
    assert not torch.allclose(aug(x, keys(8, view=0)), aug(x, keys(8, view=1)), atol=1e-3)


def test_natural_sample_does_not_depend_on_its_batch():
    x, k, aug = images(8), keys(8), natural(blur_p=0.5, solarize_p=0.5)
    batch = aug(x, k)
    for i in (0, 5):
        torch.testing.assert_close(aug(x[i : i + 1], k[i : i + 1]), batch[i : i + 1])


def test_natural_grayscale_makes_equal_channels():
    out = natural(grayscale_p=1.0)(images(8), keys(8))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], atol=1e-6, rtol=0)


def test_natural_solarize_inverts_the_bright_values():
    x = images(4)
    out = natural(**{**OFF, "solarize_p": 1.0}, **NO_CROP)(x, keys(4))
    torch.testing.assert_close(out, torch.where(x >= 0.5, 1 - x, x), atol=1e-5, rtol=0)


def test_natural_brightness_scales_each_image_by_one_factor_in_range():
    x = 0.5 * images(8)  # no clipping at 1
    aug = natural(**{**OFF, "jitter_p": 1.0}, **NO_CROP, contrast=0.0, saturation=0.0, hue=0.0)
    out = aug(x, keys(8))
    factor = (out.sum((1, 2, 3)) / x.sum((1, 2, 3)))[:, None, None, None]
    torch.testing.assert_close(out, factor * x, atol=1e-5, rtol=0)
    assert (factor >= 0.6).all() and (factor <= 1.4).all() and factor.std() > 0.05


def test_natural_hue_rotation_keeps_luma():
    x = 0.4 + 0.2 * images(8)  # dull colours: no rotation of their chroma clips
    only_hue = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5)
    aug = natural(**{**OFF, "jitter_p": 1.0}, **NO_CROP, **only_hue)
    out = aug(x, keys(8))
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    torch.testing.assert_close((out * luma).sum(1), (x * luma).sum(1), atol=1e-5, rtol=0)
    assert not torch.allclose(out, x, atol=1e-2)


def test_natural_blur_smooths_and_keeps_flat_images_flat():
    x = images(4)
    aug = natural(**{**OFF, "blur_p": 1.0}, **NO_CROP)
    out = aug(x, keys(4))
    roughness = (out.diff(dim=3).abs().mean(), x.diff(dim=3).abs().mean())
    assert roughness[0] < 0.8 * roughness[1]
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(aug(flat, keys(2)), flat)


def test_natural_crop_flip_only_for_other_channel_counts():
    x = images(4, c=1)
    out = natural()(x, keys(4))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


# --- JetAugment ----------------------------------------------------------------------------------
def test_jet_config_holds_documented_defaults():
    aug = jet()
    assert isinstance(aug, JetAugment)
    assert (aug.rot90, aug.rotate_any, aug.max_shift, aug.smear) == (True, False, 2, 0.1)


def test_jet_flips_and_quarter_turns_keep_every_pixel_value():
    x = jet_images(32)
    out = jet(max_shift=0, **PIXEL_OPS_OFF)(x, keys(32))
    assert torch.equal(rows_sorted(out), rows_sorted(x))  # same multiset of values per channel
    torch.testing.assert_close(out.double().sum((2, 3)), x.double().sum((2, 3)), rtol=1e-6, atol=0)
    moved = [not torch.equal(out[i], x[i]) for i in range(32)]
    assert sum(moved) > 20  # 7 of 8 symmetries move a generic image


def test_jet_transforms_are_exactly_the_dihedral_group():
    x = jet_images(16)
    out = jet(max_shift=0, **PIXEL_OPS_OFF)(x, keys(16))
    for image, view in zip(x, out, strict=True):
        group = [torch.rot90(f, k, (1, 2)) for f in (image, image.flip(1)) for k in range(4)]
        assert any(torch.equal(view, g) for g in group)
    flipped = jet(flip_p=1.0, rot90=False, max_shift=0, **PIXEL_OPS_OFF)(x, keys(16))
    assert torch.equal(flipped, x.flip(2, 3))


def test_jet_shift_is_an_integer_translation_with_zero_fill():
    x = jet_images(16)
    out = jet(flip_p=0.0, rot90=False, max_shift=2, **PIXEL_OPS_OFF)(x, keys(16))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        shifts = [
            padded[i, :, 2 - dy : 18 - dy, 2 - dx : 18 - dx]
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        ]
        assert any(torch.equal(out[i], s) for s in shifts)


def test_jet_smearing_keeps_zeros_and_signs_and_has_the_set_width():
    x = jet_images(32)
    out = jet(flip_p=0.0, rot90=False, max_shift=0, drop_soft_p=0.0, split_p=0.0, smear=0.2)(
        x, keys(32)
    )
    active = x > 0
    assert (out[~active] == 0).all() and (out >= 0).all()
    ratio = out[active] / x[active]
    assert abs(ratio.mean().item() - 1) < 0.02 and abs(ratio.std().item() - 0.2) < 0.02


def test_jet_noise_touches_active_pixels_only():
    x = jet_images(8)
    out = jet(flip_p=0.0, rot90=False, max_shift=0, **{**PIXEL_OPS_OFF, "noise": 0.5})(x, keys(8))
    assert (out[x == 0] == 0).all() and (out >= 0).all()
    assert (out[x > 0] != x[x > 0]).float().mean() > 0.9


def test_jet_split_conserves_pt_and_adds_hits():
    x = jet_images(32)
    aug = jet(
        flip_p=0.0, rot90=False, max_shift=0, **{**PIXEL_OPS_OFF, "split_p": 1.0}, split_frac=0.5
    )
    out = aug(x, keys(32))
    torch.testing.assert_close(out.double().sum((2, 3)), x.double().sum((2, 3)), rtol=1e-6, atol=0)
    hits_before, hits_after = (x > 0).sum((2, 3)), (out > 0).sum((2, 3))
    assert (hits_after >= hits_before).all() and (hits_after > hits_before).float().mean() > 0.9
    assert (out >= 0).all()


def test_jet_drop_soft_removes_only_soft_pixels():
    x = jet_images(32)
    aug = jet(flip_p=0.0, rot90=False, max_shift=0, **{**PIXEL_OPS_OFF, "drop_soft_p": 1.0})
    out = aug(x, keys(32))
    kept = out > 0
    assert torch.equal(out[kept], x[kept])  # survivors untouched
    dropped = (x > 0) & ~kept
    hits = (x > 0).sum((2, 3))
    assert ((hits - kept.sum((2, 3))) <= aug.drop_soft_max_frac * hits).all()
    hardest = x.amax((2, 3), keepdim=True)
    soft_kept = torch.where(kept, x, torch.inf).amin((2, 3), keepdim=True)
    assert (x[dropped] < hardest.expand_as(x)[dropped]).all()
    assert (x[dropped] < soft_kept.expand_as(x)[dropped]).all()  # the softest ones go
    assert dropped.sum() > 0.05 * (x > 0).sum()


def test_jet_draws_differ_between_samples_of_a_batch():
    x = jet_images(1).expand(6, -1, -1, -1).contiguous()
    out = jet()(x, keys(6))
    for i in range(6):
        for j in range(i):
            assert not torch.equal(out[i], out[j])


def test_jet_views_are_a_pure_function_of_the_keys():
    x, aug = jet_images(16), jet(noise=0.1)
    assert torch.equal(aug(x, keys(16)), aug(x, keys(16)))
    assert not torch.equal(aug(x, keys(16, epoch=0)), aug(x, keys(16, epoch=1)))
    batch = aug(x, keys(16))
    for i in (0, 9):
        assert torch.equal(aug(x[i : i + 1], keys(16)[i : i + 1]), batch[i : i + 1])


@pytest.mark.parametrize("height, width, rot90", [(16, 16, True), (15, 15, True), (16, 10, False)])
def test_jet_pixel_ops_move_the_hits_exactly_where_the_geometry_gathers_them(height, width, rot90):
    """With pixel operations on, only the hits are moved (forwards); the view must not change."""
    x = jet_images(32)[..., :height, :width].contiguous(memory_format=torch.channels_last)
    geometry = dict(flip_p=0.5, rot90=rot90, max_shift=3)
    gathered = jet(**geometry, **PIXEL_OPS_OFF)(x, keys(32))
    # drop_soft below the 0-quantile drops nothing: pixel operations on, pixels unchanged
    no_op = {**PIXEL_OPS_OFF, "drop_soft_p": 1.0, "drop_soft_max_frac": 0.0}
    assert torch.equal(jet(**geometry, **no_op)(x, keys(32)), gathered)


def test_jet_any_angle_rotation_keeps_total_pt():
    x = jet_images(8)
    out = jet(rotate_any=True, max_shift=0, **PIXEL_OPS_OFF)(x, keys(8))
    assert out.shape == x.shape and (out >= 0).all()
    torch.testing.assert_close(out.sum((2, 3)), x.sum((2, 3)), rtol=1e-5, atol=0)
    assert not torch.equal(rows_sorted(out), rows_sorted(x))  # resampled, not permuted


def test_jet_rotations_need_square_images():
    with pytest.raises(ValueError, match="square"):
        jet()(torch.zeros(2, 3, 8, 10), keys(2))
    out = jet(rot90=False)(jet_images(2)[:, :, :, :10].contiguous(), keys(2))
    assert out.shape == (2, 3, 16, 10)


def test_full_batches_run():
    """Smoke run at the training shape; the per-call cost is measured outside the test suite."""
    x, k = torch.rand(256, 3, 32, 32), keys(256)
    assert natural()(x, k).shape == x.shape
    assert jet()(x, k).shape == x.shape


@pytest.mark.parametrize("make", [natural, jet])
def test_the_input_batch_is_left_alone(make):
    x = jet_images(8)
    before = x.clone()
    make()(x, keys(8))
    assert torch.equal(x, before)


def test_two_half_batches_give_the_views_of_the_whole_batch():
    """What DDP relies on: 2 ranks x B samples see the views of 1 process x 2B."""
    index = torch.arange(100, 116)
    k = sample_keys(5, 3, index, 1)
    for aug, x in ((jet(noise=0.1), jet_images(16)), (natural(blur_p=0.5), images(16))):
        whole = aug(x, k)
        halves = torch.cat([aug(x[:8], k[:8]), aug(x[8:], k[8:])])
        torch.testing.assert_close(halves, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("aug", "x"),
    [
        (jet(noise=0.1), jet_images(16)),
        (jet(noise=0.1), jet_images(16).contiguous(memory_format=torch.channels_last)),
        (jet(rotate_any=True), jet_images(16)),
        (jet(**PIXEL_OPS_OFF), jet_images(16)),
        (natural(blur_p=0.5), images(16)),
    ],
)
def test_one_call_makes_every_view_as_a_call_per_view_would(aug, x):
    """The data module makes all views in one call: view-major keys, [V * N] out."""
    index = torch.arange(16)
    per_view = [aug(x, sample_keys(0, 2, index, v)) for v in range(3)]
    all_views = aug(x, torch.cat([sample_keys(0, 2, index, v) for v in range(3)]))
    assert torch.equal(all_views, torch.cat(per_view))


@pytest.mark.parametrize("make", [natural, jet])
def test_a_key_count_that_is_not_a_multiple_of_the_batch_is_refused(make):
    with pytest.raises(ValueError, match="17 keys for 8 images"):
        make()(jet_images(8), keys(17))


def test_jet_views_do_not_depend_on_the_memory_layout():
    """A channels-last batch (hardware.channels_last) is read in its own order, not copied."""
    x = jet_images(16)
    aug = jet(noise=0.1)
    channels_last = aug(x.contiguous(memory_format=torch.channels_last), keys(16))
    assert torch.equal(channels_last, aug(x.contiguous(), keys(16)))
