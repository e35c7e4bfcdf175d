"""Zoo models own their preprocessing and first layer; weight loading is safe and its errors are clear."""

import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nonxfer_bench.core.errors import UserError
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import build_model

RESNET = dict(
    arch="resnet18",
    kwargs={"in_chans": 1, "layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10},
    preprocess={"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]},
)


def spec(**changes) -> ModelSpec:
    return ModelSpec(**{"name": "m", **RESNET, **changes})


def test_model_resizes_and_converts_channels_itself():
    model = build_model(spec())
    prepared = model.prepare(torch.rand(2, 3, 32, 40))
    assert prepared.shape == (2, 1, 16, 16)
    assert model(torch.rand(2, 3, 32, 40)).shape == (2, 10)


def test_first_conv_comes_from_timm_and_can_be_overridden():
    assert build_model(spec()).first_conv_name == "conv1"
    deep = spec(kwargs={**RESNET["kwargs"], "stem_type": "deep", "stem_width": 8})
    assert build_model(deep).first_conv_name == "conv1.0"  # a Sequential stem resolves to its first Conv2d
    with pytest.raises(UserError, match="not a module"):
        build_model(spec(first_conv="stem.nope"))


def test_flat_input_path_with_the_images_own_patches_equals_the_plain_forward():
    torch.manual_seed(0)
    model = build_model(spec())
    x = torch.rand(3, 1, 16, 16)
    conv = model.first_conv
    patches = F.unfold(model.normalize(x), kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding)
    with torch.no_grad():
        assert torch.allclose(model.forward_first_layer(x, conv.weight.flatten(1) @ patches), model(x), atol=1e-5)


def test_weights_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    source = build_model(spec())
    save_file(source.net.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = build_model(spec(weights={"source": "file", "path": tmp_path / "w.safetensors"}))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_corrupt_wrong_shape_and_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read weights"):
        build_model(spec(weights={"source": "file", "path": tmp_path / "corrupt.safetensors"}))
    other = build_model(spec(kwargs={**RESNET["kwargs"], "num_classes": 5}))
    torch.save(other.net.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="do not fit the architecture"):
        build_model(spec(weights={"source": "file", "path": tmp_path / "wrong.pth"}))

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(UserError, match="cannot read weights"):
        build_model(spec(weights={"source": "file", "path": tmp_path / "evil.pth"}))


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserError, match="cannot create 'not_a_model'"):
        build_model(spec(arch="not_a_model"))


def test_pixel_weight_is_the_first_layer_over_std_in_unfold_order():
    """W_eff = W diag(1/std), built directly from the 4-D weight; W_eff times unfolded [0, 1] pixel changes is
    the first layer's output change (the mean and the bias cancel)."""
    rgb = spec(
        kwargs={**RESNET["kwargs"], "in_chans": 3},
        preprocess={"input_size": [3, 16, 16], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.45]},
    )
    model = build_model(rgb)
    conv = model.first_conv
    mean, std = model.mean.double(), model.std.double()  # the float32 buffers the model normalizes with
    weight = conv.weight.detach().double()
    direct = (weight / std.view(1, 3, 1, 1)).flatten(1)
    pixel_weight = model.pixel_weight()
    assert pixel_weight.dtype == torch.float64 and pixel_weight.shape == (conv.out_channels, 3 * 7 * 7)
    assert torch.allclose(pixel_weight, direct, rtol=1e-12, atol=0)
    assert model.pixel_weight(torch.float32).dtype == torch.float32
    a, b = torch.rand(2, 1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).double().unbind(0)
    layer = F.conv2d((a - mean) / std, weight, None, conv.stride, conv.padding) - F.conv2d(
        (b - mean) / std, weight, None, conv.stride, conv.padding
    )
    patches = F.unfold(a - b, **model.geometry.unfold_kwargs())
    assert torch.allclose(pixel_weight @ patches[0], layer.flatten(2)[0], atol=1e-10)
