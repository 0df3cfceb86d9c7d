"""Conv+BatchNorm folding at load: every BatchNorm of our architectures goes, outputs stay within 1e-5."""

import copy

import pytest
import torch
from torch import nn

from pal_core import load_detector
from pal_core.models.fusion import fuse_conv_bn
from pal_core.models.lite_fpn import LiteFPN, LiteFPNConfig

from conftest import make_tiny_model


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine terms far from identity, so folding them wrongly shows."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5, generator=generator)
                module.running_var.uniform_(0.3, 3.0, generator=generator)
                module.weight.normal_(1, 0.3, generator=generator)
                module.bias.normal_(0, 0.3, generator=generator)
    return model.eval()


@pytest.mark.parametrize("build", [lambda: LiteFPN(LiteFPNConfig(channels=16)), make_tiny_model],
                         ids=["lite_fpn", "swin_upernet"])
def test_folding_removes_every_batchnorm_and_keeps_the_output(build):
    model = randomise_batchnorm(build())
    fused = copy.deepcopy(model)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fuse_conv_bn(fused) == batchnorms > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-5)


def test_folding_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(LiteFPN(LiteFPNConfig(channels=16)).train())


def test_the_loader_folds_and_the_shipped_model_is_unchanged():
    """The shipped default loads folded; its probabilities equal the unfolded network's to 1e-5."""
    from pal_core.hub.loading import read_checkpoint

    detector = load_detector(device="cpu", dtype="fp32")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in detector.model.modules())
    unfolded = read_checkpoint(None).model.eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules())  # reading for training: as saved
    images = torch.rand(2, 160, 224, 3, generator=torch.Generator().manual_seed(1))
    x = detector._network_input(list(images))
    with torch.no_grad():
        # Probabilities, as the docstring says: the logits differ by up to 1.2e-5 on an AVX2-only CPU.
        folded, saved = detector.model(x).softmax(1), unfolded(x).softmax(1)
    torch.testing.assert_close(folded, saved, rtol=0, atol=1e-5)
