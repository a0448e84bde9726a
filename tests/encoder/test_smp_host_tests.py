"""segmentation_models_pytorch's own encoder and model testers, run against our encoder as smp runs them.

smp's wheel and sdist ship no ``tests/encoders`` or ``tests/models``; each test here restates one method of
smp's ``tests/encoders/base.py::BaseEncoderTester`` or ``tests/models/base.py::BaseModelTester`` (named in its
docstring) in our words, with the same calls, samples (``torch.rand``, 64 x 64, 3 channels) and assertions, for
``ddpm-ct-tiny`` and every smp architecture it supports. Per-architecture sample sizes are those of smp's
subclasses (``tests/models/test_*.py``: PAN 2 x 128 x 128; PSPNet, DeepLabV3(+), UPerNet batch 2).
One deviation: smp's model tests build with the default ``encoder_weights="imagenet"`` (downloaded); here it is
``None`` (``ddpm-ct-tiny`` ships no weights and tests never touch the network). UnetPlusPlus declares itself
not scriptable (``_is_torch_scriptable = False``), so its ``test_torch_script`` expects the ``RuntimeError``.

``torch.compile`` and ``torch.export`` of a whole model take 20-50 s each on a 2-core CPU (Dynamo tracing our
encoder). smp itself runs those tests only where a change touches the model, or with ``RUN_ALL=1``
(``tests/utils.py::check_run_test_on_diff_or_main``); here they run for every architecture with ``RUN_ALL=1``
and otherwise for :data:`TRACED_BY_DEFAULT`: ``unet`` (the encoder's full-depth features) and ``deeplabv3``
(output stride 8: the encoder's ``output_stride`` cap). The encoder alone is compiled and exported in every run.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch

import smp_diffusion_encoder  # noqa: F401  (registers the names)
from smp_diffusion_encoder.encoder import DDPMEncoder

ENCODER = "ddpm-ct-tiny"
# BaseEncoderTester's configuration
num_output_features = 6
output_strides = [1, 2, 4, 8, 16, 32]
in_channels_to_test = [1, 3, 4]
depth_to_test = [3, 4, 5]
strides_to_test = [8, 16]
#: smp architecture -> (batch, height = width) of smp's tester subclass; DPT needs a ViT-style ``tu-`` encoder
ARCHITECTURES = {
    "unet": (1, 64),
    "unetplusplus": (1, 64),
    "fpn": (1, 64),
    "pspnet": (2, 64),
    "deeplabv3": (2, 64),
    "deeplabv3plus": (2, 64),
    "linknet": (1, 64),
    "manet": (1, 64),
    "pan": (2, 128),
    "upernet": (2, 64),
    "segformer": (1, 64),
}


#: Architectures whose compile and export tests run without ``RUN_ALL=1`` (smp's variable and truthy values).
TRACED_BY_DEFAULT = ("unet", "deeplabv3")
RUN_ALL = os.getenv("RUN_ALL", "false").lower() in ("true", "1", "y", "yes")


@pytest.fixture(autouse=True)
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*is deprecated", category=FutureWarning)
        yield


def sample(batch: int = 1, channels: int = 3, height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(0))


def tiny_encoder() -> torch.nn.Module:
    """``BaseEncoderTester.get_tiny_encoder``."""
    return smp.encoders.get_encoder(ENCODER, encoder_weights=None).eval()


def strides_of(x: torch.Tensor, features: list[torch.Tensor]) -> tuple[list[int], list[int]]:
    return [x.shape[2] // f.shape[2] for f in features], [x.shape[3] // f.shape[3] for f in features]


# ----- tests/encoders/base.py::BaseEncoderTester ------------------------------------------------------------------
def test_encoder_forward_backward() -> None:
    """``BaseEncoderTester.test_forward_backward``."""
    encoder = smp.encoders.get_encoder(ENCODER, in_channels=3, encoder_weights=None)
    features = encoder.forward(sample())
    assert len(features) == num_output_features
    features[-1].mean().backward()


@pytest.mark.parametrize("in_channels", in_channels_to_test)
def test_encoder_in_channels(in_channels: int) -> None:
    """``BaseEncoderTester.test_in_channels``."""
    encoder = smp.encoders.get_encoder(ENCODER, in_channels=in_channels, encoder_weights=None).eval()
    with torch.inference_mode():
        encoder.forward(sample(channels=in_channels))


@pytest.mark.parametrize("depth", depth_to_test)
def test_encoder_depth(depth: int) -> None:
    """``BaseEncoderTester.test_depth``: ``depth + 1`` maps at strides 1..2**depth, ``output_stride``, channels."""
    encoder = smp.encoders.get_encoder(ENCODER, in_channels=3, encoder_weights=None, depth=depth).eval()
    x = sample()
    with torch.inference_mode():
        features = encoder.forward(x)
    assert len(features) == depth + 1
    assert strides_of(x, features) == (output_strides[: depth + 1], output_strides[: depth + 1])
    assert encoder.output_stride == output_strides[depth]
    assert len(encoder.out_channels) == depth + 1


def test_encoder_invalid_depth() -> None:
    """``BaseEncoderTester.test_invalid_depth``."""
    for depth in (6, 0):
        with pytest.raises(ValueError):
            smp.encoders.get_encoder(ENCODER, depth=depth)


@pytest.mark.parametrize("stride", strides_to_test)
def test_encoder_dilated(stride: int) -> None:
    """``BaseEncoderTester.test_dilated``: maps deeper than ``output_stride`` stay at it."""
    encoder = smp.encoders.get_encoder(ENCODER, in_channels=3, encoder_weights=None, output_stride=stride).eval()
    x = sample()
    with torch.inference_mode():
        h, w = strides_of(x, encoder.forward(x))
    assert h == [min(stride, s) for s in h] and w == [min(stride, s) for s in w]
    assert h == [min(stride, s) for s in output_strides]


@pytest.mark.slow
def test_encoder_compile() -> None:
    """``BaseEncoderTester.test_compile``: ``torch.compile(fullgraph=True, dynamic=True)`` as the flag says."""
    encoder, x = tiny_encoder(), sample()
    torch.compiler.reset()
    compiled = torch.compile(encoder, fullgraph=True, dynamic=True, backend="eager")
    assert encoder._is_torch_compilable
    for a, b in zip(compiled(x), encoder(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_encoder_torch_export() -> None:
    """``BaseEncoderTester.test_torch_export``: exported (strict) as the flag says, outputs equal eager."""
    encoder, x = tiny_encoder(), sample()
    assert encoder._is_torch_exportable
    exported = torch.export.export(encoder, args=(x,), strict=True)
    with torch.inference_mode():
        for a, b in zip(encoder(x), exported.module().forward(x)):
            torch.testing.assert_close(a, b)


def test_encoder_torch_script() -> None:
    """``BaseEncoderTester.test_torch_script``: scripted as the flag says, outputs equal eager."""
    encoder, x = tiny_encoder(), sample()
    assert isinstance(encoder, DDPMEncoder) and encoder._is_torch_scriptable
    scripted = torch.jit.script(encoder)
    with torch.inference_mode():
        for a, b in zip(encoder(x), scripted(x)):
            torch.testing.assert_close(a, b)


# ----- tests/models/base.py::BaseModelTester, one run per architecture ----------------------------------------------
def create(arch: str, **kwargs) -> torch.nn.Module:
    return smp.create_model(arch, ENCODER, encoder_weights=None, **kwargs)


@pytest.fixture(params=list(ARCHITECTURES), ids=list(ARCHITECTURES))
def arch(request) -> str:
    return request.param


def arch_sample(arch: str, **kwargs) -> torch.Tensor:
    batch, size = ARCHITECTURES[arch]
    return sample(**{"batch": batch, "height": size, "width": size, **kwargs})


def test_model_forward_backward(arch: str) -> None:
    """``BaseModelTester.test_forward_backward``: default ``in_channels=3`` and ``classes=1``, backward."""
    output = create(arch)(arch_sample(arch))
    assert output.shape[1] == 1
    output.mean().backward()


def test_model_in_channels_and_depth_and_out_classes(arch: str) -> None:
    """``BaseModelTester.test_in_channels_and_depth_and_out_classes`` (``in_channels=1, depth=3, classes=7``)."""
    in_channels, depth, classes = 1, 3, 7
    kwargs = {}
    if arch in ("unet", "unetplusplus", "manet"):
        default = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[arch]).parameters["decoder_channels"].default
        kwargs["decoder_channels"] = default[:depth]
    model = create(arch, encoder_depth=depth, in_channels=in_channels, classes=classes, **kwargs).eval()
    with torch.inference_mode():
        assert model(arch_sample(arch, channels=in_channels)).shape[1] == classes


def test_model_classification_head(arch: str) -> None:
    """``BaseModelTester.test_classification_head``."""
    model = create(arch, aux_params={"pooling": "avg", "classes": 10, "dropout": 0.5, "activation": "sigmoid"})
    model = model.eval()
    head = model.classification_head
    assert isinstance(head[0], torch.nn.AdaptiveAvgPool2d) and isinstance(head[1], torch.nn.Flatten)
    assert isinstance(head[2], torch.nn.Dropout) and head[2].p == 0.5 and isinstance(head[3], torch.nn.Linear)
    assert isinstance(head[4].activation, torch.nn.Sigmoid)
    with torch.inference_mode():
        _, cls_probs = model(arch_sample(arch))
    assert cls_probs.shape[1] == 10


def test_model_any_resolution(arch: str) -> None:
    """``BaseModelTester.test_any_resolution``: +3, +7 pixels work, or raise where smp requires divisible sizes."""
    model = create(arch).eval()
    _, size = ARCHITECTURES[arch]
    x = arch_sample(arch, height=size + 3, width=size + 7)
    if model.requires_divisible_input_shape:
        with pytest.raises(RuntimeError, match="Wrong input shape"):
            model(x)
        return
    with torch.inference_mode():
        assert model(x).shape[2:] == (size + 3, size + 7)


def test_model_save_load_with_hub_mixin(arch: str) -> None:
    """``BaseModelTester.test_save_load_with_hub_mixin``: ``save_pretrained`` -> ``smp.from_pretrained``."""
    model = create(arch).eval()
    with tempfile.TemporaryDirectory() as tmpdir:
        model.save_pretrained(tmpdir, dataset="test_dataset", metrics={"my_awesome_metric": 0.99})
        restored = smp.from_pretrained(tmpdir).eval()
        readme = (Path(tmpdir) / "README.md").read_text()
    x = arch_sample(arch)
    with torch.inference_mode():
        output, restored_output = model(x), restored(x)
    assert output.shape == restored_output.shape and output.shape[1] == 1
    assert "test_dataset" in readme and "my_awesome_metric" in readme


def test_model_torch_script(arch: str) -> None:
    """``BaseModelTester.test_torch_script``: every architecture that smp marks scriptable scripts with our
    encoder and matches eager; the others raise ``RuntimeError``."""
    model = create(arch).eval()
    x = arch_sample(arch)
    if not model._is_torch_scriptable:
        with pytest.raises(RuntimeError):
            torch.jit.script(model)
        return
    scripted = torch.jit.script(model)
    with torch.inference_mode():
        scripted_output, eager_output = scripted(x), model(x)
    assert scripted_output.shape == eager_output.shape
    torch.testing.assert_close(scripted_output, eager_output, rtol=1e-3, atol=1e-3)


def traced_only(arch: str) -> None:
    if not RUN_ALL and arch not in TRACED_BY_DEFAULT:
        pytest.skip(f"compile/export of {arch}: RUN_ALL=1 runs it (by default: {', '.join(TRACED_BY_DEFAULT)})")


@pytest.mark.slow
def test_model_compile(arch: str) -> None:
    """``BaseModelTester.test_compile`` (``fullgraph=True, dynamic=True``, eager backend)."""
    traced_only(arch)
    model = create(arch).eval()
    assert model._is_torch_compilable
    torch.compiler.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="eager")
    with torch.inference_mode():
        compiled(arch_sample(arch))


@pytest.mark.slow
def test_model_torch_export(arch: str) -> None:
    """``BaseModelTester.test_torch_export`` (strict; UPerNet's subclass loosens eps to 1e-3)."""
    traced_only(arch)
    eps = 1e-3 if arch == "upernet" else 1e-5
    torch.manual_seed(42)
    x = arch_sample(arch)
    model = create(arch).eval()
    exported = torch.export.export(model, args=(x,), strict=True)
    with torch.inference_mode():
        eager_output, exported_output = model(x), exported.module().forward(x)
    assert eager_output.shape == exported_output.shape
    torch.testing.assert_close(eager_output, exported_output, rtol=eps, atol=eps)
