"""The one first-layer geometry: unfold windows, the layer's own output grid, and timm's TF-same padding."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import nn

from nonxfer_bench.linalg.geometry import ConvGeometry


def test_a_plain_conv_reads_its_arguments():
    geometry = ConvGeometry.of(nn.Conv2d(3, 64, 7, stride=2, padding=3))
    assert geometry == ConvGeometry((7, 7), (2, 2), (3, 3), (1, 1), 1, "zeros", same=False)
    assert geometry.overlapping and geometry.same_padding(224, 224) == (0, 0, 0, 0)
    assert geometry.windows(224, 224) == geometry.output_size(224, 224) == (112, 112)
    assert not ConvGeometry.of(nn.Conv2d(3, 768, 16, stride=16)).overlapping
    with pytest.raises(ValueError, match="padding='same'"):
        ConvGeometry.of(nn.Conv2d(3, 8, 3, padding="same"))


def test_a_conv2dsame_stem_has_same_padding_as_a_field():
    """tf_efficientnet_lite's stem: 3x3/s2, padding 0, TF-same pads one row/column at the bottom/right on 224."""
    conv = Conv2dSame(3, 8, 3, stride=2)
    geometry = ConvGeometry.of(conv)
    assert geometry.same and geometry.padding == (0, 0)
    assert geometry != ConvGeometry.of(nn.Conv2d(3, 8, 3, stride=2))
    assert geometry.same_padding(224, 224) == (0, 1, 0, 1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert tuple(conv(x).shape[-2:]) == geometry.output_size(224, 224) == (112, 112)
    assert geometry.windows(224, 224) == (111, 111)  # F.unfold's windows: the last output row/column is padding's
    assert F.unfold(x, **geometry.unfold_kwargs()).shape[-1] == 111 * 111
    assert geometry.window_offset(224, 224) == (0, 0)


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 2, 1), (5, 2, 1), (4, 4, 1), (3, 1, 2), (7, 3, 1)])
@pytest.mark.parametrize("size", [(16, 16), (17, 15), (9, 12)])
def test_same_padding_and_output_grid_equal_timms_forward(kernel, stride, dilation, size):
    conv = Conv2dSame(2, 4, kernel, stride=stride, dilation=dilation)
    geometry = ConvGeometry.of(conv)
    x = torch.randn(1, 2, *size)
    padded = pad_same(x, conv.kernel_size, conv.stride, conv.dilation)
    left, right, top, bottom = geometry.same_padding(*size)
    assert torch.equal(F.pad(x, (left, right, top, bottom)), padded)
    with torch.no_grad():
        assert tuple(conv(x).shape[-2:]) == geometry.output_size(*size)


def test_windows_pushed_off_the_stride_grid_are_refused():
    geometry = ConvGeometry.of(Conv2dSame(3, 8, 5, stride=2))  # 224: 3 pad rows, 1 on top, odd for stride 2
    assert geometry.same_padding(224, 224) == (1, 2, 1, 2)
    with pytest.raises(ValueError, match="off the unfold grid"):
        geometry.window_offset(224, 224)


def test_tiling_is_kernel_sized_tiles_at_the_padding_offset():
    tiling = ConvGeometry.of(nn.Conv2d(1, 8, 7, stride=2, padding=3, dilation=1)).tiling()
    assert tiling == ConvGeometry((7, 7), (7, 7), (3, 3)) and not tiling.overlapping
