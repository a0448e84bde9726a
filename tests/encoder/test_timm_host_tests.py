"""timm's own model tests, run against our registered timm names as timm runs them on its models.

timm's wheel ships no tests, so each test here restates one function of timm 1.0.31's ``tests/test_models.py``
(named in its docstring) in our words, with the same calls and assertions, parametrized over every registered
``ddpm_ct_unet*`` name. Sizes follow timm's (``_get_input_size`` with timm's targets); the real-tensor tests run
the CPU-sized variants, and the 553 M-parameter ``adm256`` runs where timm runs on the ``meta`` device.
timm's own file also passes for these names (``pytest tests/test_models.py -k ddpm_ct -p smp_diffusion_encoder``
in a timm 1.0.31 source tree); it only selects the tests parametrized over ``list_models()``, so the
intermediates and pruning tests, which timm runs on a fixed list of its own models, are covered here only.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules
from timm.models._features import FeatureGetterNet
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import smp_diffusion_encoder  # noqa: F401  (registers the names)
from smp_diffusion_encoder.registry import all_records

ALL = [r.timm_name for r in all_records() if r.timm_name]
CPU = [r.timm_name for r in all_records() if r.timm_name and r.spec.unet.model_channels <= 32]  # tiny, small
TINY = [n for n in CPU if n.endswith("_tiny")]
SLOW_ON_CPU = {"ddpm_ct_unet": pytest.mark.slow, "ddpm_ct_unet_adm256": pytest.mark.slow}


def params(names: list[str]) -> list:
    return [pytest.param(n, marks=SLOW_ON_CPU[n]) if n in SLOW_ON_CPU else n for n in names]


def input_size(model: torch.nn.Module, target: int) -> tuple[int, ...]:
    """timm's ``_get_input_size``: the default input size, each side capped at ``target``."""
    size = model.default_cfg["input_size"]
    return tuple(min(s, target) for s in size) if max(size) > target else size


@pytest.fixture(autouse=True)
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*is deprecated", category=FutureWarning)
        yield


@pytest.mark.parametrize("name", params(CPU))
def test_model_forward(name: str) -> None:
    """``test_model_forward``: one forward at the default size (capped at 384), no NaN."""
    model = timm.create_model(name, pretrained=False).eval()
    inputs = torch.randn(1, *input_size(model, 384))
    outputs = model(inputs)
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", params(CPU))
def test_model_backward(name: str) -> None:
    """``test_model_backward``: ``num_classes=42``, training mode, every parameter gets a gradient."""
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    outputs = model(torch.randn(2, *input_size(model, 128)))
    outputs.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in model.parameters()) == num_params
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


@pytest.mark.parametrize("name", params(ALL))
def test_model_default_cfgs(name: str) -> None:
    """``test_model_default_cfgs`` (with ``_assert_model_api_contract``, ``_assert_dtype_change_after_forward``,
    ``_assert_reset_classifier_preserves_parent_device_dtype``, ``_assert_factory_device`` and
    ``_assert_frozen_survives_reset_and_resize``), on the ``meta`` device as timm runs it."""
    device = "meta"
    with torch.device(device):
        model = timm.create_model(name, pretrained=False, device=device, dtype=torch.float32).eval()
    with torch.device(device), pytest.raises(TypeError):
        timm.create_model(name, pretrained=False, device=device, not_a_model_arg=1)
    assert inspect.signature(model.reset_classifier).parameters["global_pool"].default is None
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    assert model.in_chans == cfg["input_size"][0]
    pool_size = cfg["pool_size"]
    spatial, feat_axis = get_spatial_dim("NCHW"), get_channel_dim("NCHW")
    x = torch.randn(1, *(min(s, 448) for s in cfg["input_size"]), device=device)

    outputs = model.forward_features(x)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert (outputs.shape[spatial[0]], outputs.shape[spatial[1]]) == tuple(pool_size)
    assert outputs.shape[feat_axis] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size
    model.to(torch.bfloat16)  # _assert_dtype_change_after_forward
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.to(torch.float32)

    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(x)
    assert outputs.ndim == 2 and outputs.shape[1] == model.head_hidden_size and outputs.shape == outputs_pre.shape
    model.reset_classifier(0, "")
    outputs = model.forward(x)
    assert outputs.ndim == 4 and (outputs.shape[spatial[0]], outputs.shape[spatial[1]]) == tuple(pool_size)

    model = timm.create_model(name, pretrained=False, num_classes=0, device=device, dtype=torch.float32).eval()
    outputs = model.forward(x)
    assert outputs.shape == outputs_pre.shape and outputs.shape[1] == model.head_hidden_size
    model = timm.create_model(
        name, pretrained=False, num_classes=0, global_pool="", device=device, dtype=torch.float32
    ).eval()
    outputs = model.forward(x)
    assert outputs.ndim == 4 and (outputs.shape[spatial[0]], outputs.shape[spatial[1]]) == tuple(pool_size)

    first_conv = cfg["first_conv"]
    for fc in (first_conv,) if isinstance(first_conv, str) else first_conv:
        assert fc + ".weight" in state_dict

    # _assert_reset_classifier_preserves_parent_device_dtype
    model.to(device="meta", dtype=torch.float64)
    model.reset_classifier(0)
    model.reset_classifier(2)
    head = list(model.get_classifier().parameters())
    assert head and all(p.device.type == "meta" and p.dtype == torch.float64 for p in head)
    assert all(not m.training for m in model.modules())
    # _assert_factory_device: every parameter and buffer on the requested device, without a device context
    model = timm.create_model(name, pretrained=False, device=device, dtype=torch.float32)
    misplaced = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != device]
    assert not misplaced, misplaced[:5]
    # _assert_frozen_survives_reset_and_resize
    model.requires_grad_(False)
    model.reset_classifier(0)
    model.reset_classifier(0, "")
    assert not [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("name", params(CPU))
def test_model_forward_torchscript(name: str) -> None:
    """``test_model_forward_torchscript`` (and, ours, the scripted output equals eager)."""
    with timm.set_scriptable(True):
        model = timm.create_model(name, pretrained=False).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, *input_size(model, 128))
    with torch.no_grad():
        outputs = scripted(x)
        torch.testing.assert_close(outputs, model(x))
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


def _check_feature_maps(outputs, channels, reductions, size, exact_reduction: bool = True) -> None:
    assert len(channels) == len(outputs)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[1] == c and o.shape[0] == 1 and not torch.isnan(o).any()
        assert o.shape[2] <= math.ceil(size[0] / r) + 1 and o.shape[3] <= math.ceil(size[1] / r) + 1
        if exact_reduction:
            assert o.shape[2] > size[0] / (2 * r) and o.shape[3] > size[1] / (2 * r)


@pytest.mark.parametrize("feature_cls", [None, "getter"])
@pytest.mark.parametrize("name", params(CPU))
def test_model_forward_features(name: str, feature_cls: str | None) -> None:
    """``test_model_forward_features`` and ``test_model_forward_intermediates_features`` (``feature_cls='getter'``)."""
    kwargs = {"feature_cls": feature_cls} if feature_cls else {}
    model = timm.create_model(name, pretrained=False, features_only=True, **kwargs).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    size = input_size(model, 96)
    _check_feature_maps(model(torch.randn(1, *size)), channels, reductions, size[-2:])


@pytest.mark.parametrize("name", params(CPU))
def test_model_forward_intermediates(name: str) -> None:
    """``test_model_forward_intermediates``: a plain model gives every feature level and its final features."""
    model = timm.create_model(name, pretrained=False).eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    channels, reductions = feature_info.channels(), feature_info.reduction()
    assert len(channels) >= 3
    size = input_size(model, 96)
    x = torch.randn(1, *size)
    output, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
    _check_feature_maps(intermediates, channels, reductions, size[-2:], exact_reduction=False)
    torch.testing.assert_close(output, model.forward_features(x), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", TINY)
def test_prune_intermediate_layers_params_used(name: str) -> None:
    """``test_prune_intermediate_layers_params_used``: pruning as FeatureGetterNet does leaves no unused
    parameter, and a pruned eval model stays deterministic."""
    model = timm.create_model(name, drop_rate=0.5)
    x = torch.randn(2, *input_size(model, 96))
    last = len(model.feature_info) - 1
    for indices, prune_norm in (([0], False), ([last], False), (list(range(last + 1)), True)):
        pruned = copy.deepcopy(model).train()
        take = pruned.prune_intermediate_layers(indices, prune_norm=prune_norm)
        features = pruned.forward_intermediates(x, indices=take, norm=not prune_norm, intermediates_only=True)
        sum(f.sum() for f in features).backward()
        assert not [n for n, p in pruned.named_parameters() if p.grad is None]
        pruned = copy.deepcopy(model).eval()
        pruned.prune_intermediate_layers(indices, prune_norm=prune_norm)
        with torch.no_grad():
            pruned.forward_intermediates(x, indices=take)
            assert torch.equal(pruned(x), pruned(x))


@pytest.mark.parametrize("name", TINY)
def test_prune_intermediate_layers_contract(name: str) -> None:
    """``test_prune_intermediate_layers_contract`` (unmarked and off timm's CI for its cost; tiny here): pruned
    and ``stop_early`` taps equal the unpruned model's, ``prune_head=False`` keeps the output, pruned models
    train with every parameter used."""
    model = timm.create_model(name).eval()
    x = torch.randn(2, *input_size(model, 96))
    last = len(model.feature_info) - 1
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        pruned = copy.deepcopy(model)
        pruned.prune_intermediate_layers([last], prune_head=False)
        torch.testing.assert_close(pruned(x), expected)
    for i in range(last + 1):
        with torch.no_grad():
            selected = model.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
            torch.testing.assert_close(selected[0], taps[i])
            pruned = copy.deepcopy(model)
            take = pruned.prune_intermediate_layers([i])
            torch.testing.assert_close(
                pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0], taps[i]
            )
            pruned = copy.deepcopy(model)
            take = pruned.prune_intermediate_layers([i], prune_norm=True)
            features = pruned.forward_features(x)
            if i < last:
                torch.testing.assert_close(features, taps[i])  # without the norm, the features end at the tap
        pruned.train()
        selected = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
        sum(f.sum() for f in selected + [pruned.forward_features(x)]).backward()
        assert not [n for n, p in pruned.named_parameters() if p.requires_grad and p.grad is None], i


@pytest.mark.parametrize("name", TINY)
def test_forward_after_prune_intermediate_layers(name: str) -> None:
    """``test_forward_after_prune_intermediate_layers``: after pruning to any index, the final features of
    ``forward_intermediates`` are ``forward_features`` (and the tap), ``model(x)`` runs, training works."""
    model = timm.create_model(name).eval()
    x = torch.randn(1, *input_size(model, 128))
    for index in range(len(model.feature_info)):
        pruned = copy.deepcopy(model)
        pruned.prune_intermediate_layers([index])
        with torch.no_grad():
            final, intermediates = pruned.forward_intermediates(x, indices=[index])
            torch.testing.assert_close(pruned.forward_features(x), final, rtol=0, atol=0)
            if final.shape == intermediates[0].shape:
                torch.testing.assert_close(final, intermediates[0], rtol=0, atol=0)
            pruned(x)
        pruned.train().forward_features(x).sum().backward()


@pytest.mark.parametrize("name", TINY)
def test_head_hidden_size(name: str) -> None:
    """``test_head_hidden_size``: the pre-logits width without a classifier, after ``reset_classifier`` (also with
    concatenated pooling) and after pruning the last stage (then the width of the tap)."""
    model = timm.create_model(name, num_classes=0).eval()
    x = torch.randn(2, 1, 64, 64)

    def check_width(num_classes: int) -> None:
        features = model.forward_features(x)
        assert model.forward_head(features, pre_logits=True).shape[1] == model.head_hidden_size
        assert model(x).shape[1] == (num_classes or model.head_hidden_size)

    with torch.no_grad():
        check_width(0)
        for pool in ("avg", "catavgmax"):
            model.reset_classifier(7, pool)
            check_width(7)
        index = len(model.feature_info) - 2
        tap_chs = model.feature_info[index]["num_chs"]
        model.prune_intermediate_layers([index], prune_norm=True)
        model.reset_classifier(7, "avg")
        check_width(7)
        assert model.head_hidden_size == tap_chs


@pytest.mark.parametrize("name", TINY)
def test_feature_getter_torchscript(name: str) -> None:
    """``test_feature_getter_stage_ends_torchscript`` and ``test_pruned_features_torchscript``: the getter over
    ``forward_intermediates`` (pruned or not) scripts and gives the eager maps."""
    model = timm.create_model(name).eval()
    x = torch.randn(1, 1, 96, 96)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=(0, 1, 2), intermediates_only=True)
        getter = FeatureGetterNet(model, out_indices=(0, 1, 2)).eval()
        torch.testing.assert_close(getter(x), expected)
        torch.testing.assert_close(torch.jit.script(getter)(x), expected)
        pruned = timm.create_model(name, features_only=True, feature_cls="getter", out_indices=(3,)).eval()
        torch.testing.assert_close(torch.jit.script(pruned)(x), pruned(x))


def _create_fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    """timm's ``_create_fx_model``: a torchvision feature extractor returning the traced output node(s)."""
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )


@pytest.mark.parametrize("name", params(CPU))
def test_model_forward_fx_and_fx_torchscript(name: str) -> None:
    """``test_model_forward_fx`` and ``test_model_forward_fx_torchscript``: traced with torch.fx (timm's leaf
    modules and functions), the output equals eager; the traced module also scripts."""
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, *input_size(model, 128))
    with torch.inference_mode():
        outputs = model(x)
        fx_model = _create_fx_model(model)
        torch.testing.assert_close(torch.cat(tuple(fx_model(x).values())), outputs, rtol=1e-4, atol=1e-5)
    with timm.set_scriptable(True):
        model = timm.create_model(name, pretrained=False).eval()
    scripted = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        assert not torch.isnan(torch.cat(tuple(scripted(x).values()))).any()


@pytest.mark.parametrize("name", params(CPU))
def test_model_backward_fx(name: str) -> None:
    """``test_model_backward_fx``: the traced training-mode model gives every parameter a gradient."""
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(torch.randn(2, *input_size(model, 128))).values()))
    outputs.mean().backward()
    for n, p in fx_model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params and outputs.shape[-1] == 42


def test_every_registered_name_is_parametrized() -> None:
    assert set(ALL) == set(timm.list_models("ddpm_ct_unet*"))
