"""Feature cache: hits and misses, encoder/slice identity, fp16 accuracy, on-disk reuse and damage."""

import torch

from smp_diffusion_encoder.encoder import DiffusionFeatureEncoder, FeatureConfig
from smp_diffusion_encoder.heads import FeatureCache, encoder_fingerprint
from smp_diffusion_encoder.models import DiffusionUNet


def _encoder(seed=0, timesteps=(50, 150)):
    torch.manual_seed(seed)
    unet = DiffusionUNet("tiny")
    with torch.no_grad():  # fresh U-Nets zero their residual outputs; perturb so features depend on weights
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return DiffusionFeatureEncoder(unet, FeatureConfig(timesteps=timesteps)).eval()


def _slices(n=3, seed=0):
    return torch.rand(n, 1, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_hits_misses_and_fp16_close_to_fp32(tmp_path):
    enc, x = _encoder(), _slices()
    cache = FeatureCache(enc)
    maps = cache.features(["a:0", "a:1", "a:2"], x)
    assert (cache.hits, cache.misses) == (0, 3)
    assert [m.shape[1] for m in maps] == list(enc.channels) and all(m.dtype == torch.float16 for m in maps)
    with torch.no_grad():
        ref = enc(x)
    for m, r in zip(maps, ref):
        assert m.shape == r.shape
        torch.testing.assert_close(m.float(), r, atol=2e-3 * r.abs().max().item(), rtol=2e-3)
    again = cache.features(["a:2", "a:0"], x[[2, 0]])
    assert (cache.hits, cache.misses) == (2, 3)
    assert all(torch.equal(a, m[[2, 0]]) for a, m in zip(again, maps))
    cache.features(["a:0"], x[1:2])  # same id, other content: a different slice
    assert (cache.hits, cache.misses, len(cache)) == (2, 4, 4)


def test_encoder_identity():
    a, b = _encoder(seed=0), _encoder(seed=0)
    assert encoder_fingerprint(a) == encoder_fingerprint(b)
    assert encoder_fingerprint(_encoder(seed=1)) != encoder_fingerprint(a)
    assert encoder_fingerprint(_encoder(seed=0, timesteps=(50,))) != encoder_fingerprint(a)


def test_disk_cache_is_reused_and_damage_recomputed(tmp_path):
    enc, x = _encoder(), _slices(2)
    first = FeatureCache(enc, tmp_path).features(["c:0", "c:1"], x)
    files = sorted((tmp_path / encoder_fingerprint(enc)[:16]).glob("*.safetensors"))
    assert len(files) == 2 and not list(tmp_path.rglob(".*tmp*"))
    second_cache = FeatureCache(enc, tmp_path)
    second = second_cache.features(["c:0", "c:1"], x)
    assert (second_cache.hits, second_cache.misses) == (2, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated file: recomputed and rewritten
    third_cache = FeatureCache(enc, tmp_path)
    third = third_cache.features(["c:0", "c:1"], x)
    assert third_cache.misses == 1
    for a, b in zip(first, third):  # recomputed in a batch of 1: equal up to fp16 rounding
        torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=1e-2)
    other = FeatureCache(_encoder(seed=1), tmp_path)
    other.features(["c:0"], x[:1])
    assert other.misses == 1


def test_bf16_features_are_cached_apart_and_close_to_fp32(tmp_path):
    enc, x = _encoder(), _slices(2)
    fp32 = FeatureCache(enc, tmp_path, precision="fp32")
    bf16 = FeatureCache(enc, tmp_path, precision="bf16")
    assert fp32.directory != bf16.directory and bf16.directory.name.endswith("-bf16")
    a, b = fp32.features(["a:0", "a:1"], x), bf16.features(["a:0", "a:1"], x)
    assert (bf16.hits, bf16.misses) == (0, 2)  # never served from the fp32 entries
    for m32, m16 in zip(a, b):
        assert m16.dtype == torch.float16
        torch.testing.assert_close(m16.float(), m32.float(), atol=0.05 * m32.abs().max().item(), rtol=0.05)
