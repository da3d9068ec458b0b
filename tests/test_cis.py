"""CIS (Yang et al. 2020): the segmentation network, the inpainter, the losses and the game."""

from __future__ import annotations

import torch
import torchvision

from objdecomp.nn.segmentation import SegmentationNet, dilated_resnet50_trunk


def test_resnet50_trunk_is_torchvisions_dilated_resnet50():
    trunk = dilated_resnet50_trunk()
    ref = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[True, True, True])
    ref_convs = [m for m in ref.modules() if isinstance(m, torch.nn.Conv2d)]
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.weight.shape, c.stride, c.dilation) for c in convs] == \
        [(c.weight.shape, c.stride, c.dilation) for c in ref_convs]
    assert trunk.out_channels == 2048


def test_segmentation_masks_are_a_partition_at_input_size():
    torch.manual_seed(0)
    for backbone, width in (("resnet8", 8), ("resnet50", 4)):
        net = SegmentationNet(num_masks=5, backbone=backbone, width=width, input_size=48)
        masks = net.masks(torch.rand(2, 3, 32, 32))
        assert masks.shape == (2, 5, 32, 32)
        torch.testing.assert_close(masks.sum(1), torch.ones(2, 32, 32))
        assert masks.std() > 0
