"""CE + soft Dice loss and the fine-tuning steps (probe, decoder with a later-unfrozen encoder)."""

import pytest
import segmentation_models_pytorch as smp
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune import DecoderStep, ProbeStep, ce_dice_loss, decoder_param_groups, soft_dice_present
from smp_diffusion_encoder.heads import LinearProbe


def test_soft_dice_perfect_and_only_present_classes() -> None:
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = 3
    logits = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float() * 50
    # classes 1, 2, 4 are absent: they do not pull the score down
    assert soft_dice_present(logits, labels).item() == pytest.approx(1.0, abs=1e-4)
    loss, parts = ce_dice_loss(logits, labels)
    assert loss.item() < 1e-3 and parts["dice"].item() == pytest.approx(1.0, abs=1e-4)
    uniform = torch.zeros(2, 5, 8, 8)
    assert soft_dice_present(uniform, labels).item() < 0.5


def test_loss_gradient_and_bad_labels() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss, _ = ce_dice_loss(logits, torch.randint(0, 3, (1, 4, 4)))
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="labels must lie"):
        ce_dice_loss(logits, torch.full((1, 4, 4), 3))


def test_probe_step_needs_features() -> None:
    probe = LinearProbe((4,), (1,), num_classes=3)
    labels = torch.randint(0, 3, (2, 8, 8))
    loss, metrics = ProbeStep()(probe, {"labels": labels, "step": 0, "features": [torch.randn(2, 4, 8, 8).half()]})
    assert loss.ndim == 0 and set(metrics) == {"ce", "dice"}
    with pytest.raises(ConfigError, match="cached features"):
        ProbeStep()(probe, {"labels": labels, "step": 0})


def test_decoder_step_unfreezes_encoder_from_the_given_step() -> None:
    torch.manual_seed(0)
    model = smp.Unet(
        "ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=3, encoder_depth=3, decoder_channels=(8, 8, 8)
    )
    groups = decoder_param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    step = DecoderStep(unfreeze_at=3)
    batch = {"labels": torch.randint(0, 3, (1, 32, 32)), "step": 2, "image": torch.rand(1, 1, 32, 32) * 2 - 1}
    for at, trainable in ((2, False), (3, True)):
        model.zero_grad(set_to_none=True)
        loss, metrics = step(model, {**batch, "step": at})
        loss.backward()
        enc_grads = [p.grad for p in model.encoder.parameters()]
        assert any(g is not None for g in enc_grads) == trainable  # frozen: no encoder gradient at all
        assert all(p.grad is not None for p in model.segmentation_head.parameters())
        assert metrics["encoder_trainable"].item() == float(trainable)
    with pytest.raises(ConfigError, match="needs batch"):
        step(model, {"labels": batch["labels"], "step": 5})


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus"])
def test_decoder_step_computes_what_the_saved_model_computes(arch: str) -> None:
    torch.manual_seed(0)
    model = smp.create_model(arch, encoder_name="ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=3).eval()
    x, y = torch.rand(1, 1, 64, 64) * 2 - 1, torch.randint(0, 3, (1, 64, 64))
    with torch.no_grad():
        expected, _ = ce_dice_loss(model(x), y)
        features = [f.half() for f in model.encoder(x)]
    loss, _ = DecoderStep()(model, {"labels": y, "step": 0, "image": x})
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    cached, _ = DecoderStep()(model, {"labels": y, "step": 0, "features": features})
    assert cached.item() == pytest.approx(expected.item(), rel=1e-2)  # fp16 feature cache
