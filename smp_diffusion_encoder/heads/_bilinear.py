"""Bilinear upsampling written out as weights, so parts of an upsampled map can be computed alone.

``F.interpolate(f, size=(H, W), mode="bilinear", align_corners=False)`` is separable: output row ``r``
reads input rows ``i0[r]`` and ``i1[r]`` with weights ``1 - lam[r]`` and ``lam[r]``, where
``src = (r + 0.5) * h / H - 0.5`` clamped at 0, ``i0 = floor(src)``, ``i1 = min(i0 + 1, h - 1)``,
``lam = src - i0`` (PyTorch's ``area_pixel_compute_source_index``); columns alike. The helpers below use
exactly these weights, so a band of rows or a set of pixels equals the same part of the full upsampled
map to float rounding, without ever materializing the full ``(B, D, H, W)`` stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def bilinear_taps(
    n_in: int, n_out: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(i0, i1, lam)``, each ``(n_out,)``: the two source indices and the weight of ``i1`` per output index."""
    dst = torch.arange(n_out, dtype=torch.float64, device=device)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, (src - i0).float()


def interp_matrix(n_in: int, n_out: int, device: torch.device | None = None) -> torch.Tensor:
    """``(n_out, n_in)`` float32 matrix ``M`` with ``up(v) = M @ v`` for 1-D bilinear upsampling."""
    i0, i1, lam = bilinear_taps(n_in, n_out, device)
    m = torch.zeros(n_out, n_in, device=device)
    rows = torch.arange(n_out, device=device)
    m.index_put_((rows, i0), 1.0 - lam, accumulate=True)
    m.index_put_((rows, i1), lam, accumulate=True)
    return m


def upsample_rows(f: torch.Tensor, out_size: tuple[int, int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of ``F.interpolate(f, out_size, mode="bilinear", align_corners=False)``.

    ``f``: ``(B, C, h, w)`` -> ``(B, C, len(rows), W)`` in ``f``'s dtype (computed in float32, also under autocast).
    """
    h, w = f.shape[-2:]
    rm = interp_matrix(h, out_size[0], f.device)[rows]  # (r, h)
    cm = interp_matrix(w, out_size[1], f.device)  # (W, w)
    with torch.autocast(f.device.type, enabled=False):
        return torch.einsum("rh,bchw,Ww->bcrW", rm, f.float(), cm).to(f.dtype)


def sample_pixels(
    features: Sequence[torch.Tensor], out_size: tuple[int, int], batch: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
) -> torch.Tensor:
    """Feature vectors of chosen pixels of the upsampled, concatenated maps, without upsampling anything.

    ``features``: maps ``(B, C_s, h_s, w_s)``; ``batch``, ``ys``, ``xs``: ``(N,)`` integer pixel coordinates
    in the ``out_size`` image. Returns ``(N, sum C_s)`` float32, equal to
    ``torch.cat([F.interpolate(f, out_size, mode="bilinear") for f in features], 1)[batch, :, ys, xs]``.
    """
    out = []
    for f in features:
        h, w = f.shape[-2:]
        y0, y1, ly = (t[ys] for t in bilinear_taps(h, out_size[0], f.device))
        x0, x1, lx = (t[xs] for t in bilinear_taps(w, out_size[1], f.device))
        ly, lx = ly[:, None], lx[:, None]
        top = f[batch, :, y0, x0].float() * (1 - lx) + f[batch, :, y0, x1].float() * lx
        bottom = f[batch, :, y1, x0].float() * (1 - lx) + f[batch, :, y1, x1].float() * lx
        out.append(top * (1 - ly) + bottom * ly)
    return torch.cat(out, dim=1)
