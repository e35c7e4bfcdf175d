"""Every registered attack, through one parametrized specification (a new attack is picked up here)."""

import pytest
import torch

from nonxfer_bench.attacks import ATTACKS

NAMES = ATTACKS.names()


def batch(channels: int) -> torch.Tensor:
    return torch.rand(3, channels, 20, 24, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_keeps_shape_dtype_and_is_deterministic(name, channels, strength):
    attack = ATTACKS.create(name)
    x = batch(channels)
    first = attack(x, strength, torch.Generator().manual_seed(1))
    again = attack(x, strength, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("name", NAMES)
def test_declares_typed_parameters_and_rejects_unknown_ones(name):
    cls = ATTACKS.get(name)
    assert cls.__doc__ and cls.threat_model
    with pytest.raises(Exception):
        cls.Params(not_a_parameter=1)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_strengths_outside_the_unit_interval(name):
    with pytest.raises(ValueError):
        ATTACKS.create(name)(batch(1), 1.5, torch.Generator())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "identity"])
def test_harshest_strength_changes_the_images_more_than_the_mildest(name):
    attack = ATTACKS.create(name)
    x = batch(3)
    mild = (attack(x, 0.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    harsh = (attack(x, 1.0, torch.Generator().manual_seed(1)) - x).pow(2).mean()
    assert harsh > mild


def test_strength_maps_to_each_attacks_own_parameter():
    assert ATTACKS.create("jpeg_pil").parameter(0.0) == {"quality": 95}
    assert ATTACKS.create("jpeg_pil").parameter(1.0) == {"quality": 5}
    assert ATTACKS.create("resize").parameter(1.0) == {"scale": 0.25}
    assert ATTACKS.create("quantize").parameter(0.0) == {"bits": 8}
    assert ATTACKS.create("blur", {"max_sigma": 3.0}).parameter(0.5) == {"sigma": 1.5}


def test_jpeg_minmax_range_keeps_unclipped_images_in_their_range():
    x = batch(1) * 40 - 20  # the reference encoder releases values far outside [0, 1]
    out = ATTACKS.create("jpeg_pil")(x, 0.0, torch.Generator())
    assert (out - x).abs().mean() < 0.05 * (x.max() - x.min())


def test_pil_and_kornia_jpeg_agree_roughly():
    x = torch.nn.functional.interpolate(batch(3), scale_factor=2, mode="bilinear")
    pil = ATTACKS.create("jpeg_pil")(x, 0.5, torch.Generator())
    kornia = ATTACKS.create("jpeg_kornia")(x, 0.5, torch.Generator())
    assert (pil - kornia).abs().mean() < 0.05


def test_quantize_at_8_bits_stores_what_an_8_bit_png_stores():
    x = batch(1) * 1.4 - 0.2
    out = ATTACKS.create("quantize")(x, 0.0, torch.Generator())
    assert torch.equal(out, (x.clamp(0, 1) * 255).round() / 255)
