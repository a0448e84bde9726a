"""Procedural abdominal CT phantom: the offline stand-in for FLARE 2022 in the demo and the tests.

:func:`generate_case` draws one contrast-enhanced (portal-venous) abdominal CT from a seed: body wall (skin,
subcutaneous fat, muscle ring), spine, ribs, lung bases, psoas and paraspinal muscles, bowel loops with air,
and the 13 FLARE 2022 organs (label ids as in :data:`smp_diffusion_encoder.data.remap.FLARE_ORGANS`) with
plausible positions, sizes, z-extents and HU values, organ texture and correlated scanner noise (~12 HU).
Each seed changes body habitus, organ positions/sizes and a small in-plane rotation; the same seed always
gives the same voxels.

Arrays follow the :class:`~smp_diffusion_encoder.data.volume.Volume` contract: ``(Z, Y, X)``, axial slice
``k = array[k]``, z from inferior (k=0) to superior, anterior at the top rows, the patient's right on the
image's left (radiological display). Anatomy lives in millimetres: x (columns) from the patient's right to
left, y (rows) from anterior to posterior, z upwards, centred in-plane; the field of view always covers the
same anatomy (iliac crest to lung bases, :data:`ANATOMY_Z_MM` mm) unless ``spacing_mm`` is given.

Example:
    >>> image, labels = generate_case(0)
    >>> image.shape, image.dtype, int(labels.max())
    ((48, 192, 192), dtype('int16'), 13)
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from smp_diffusion_encoder._io import atomic_path, atomic_write_bytes

DEFAULT_SHAPE: tuple[int, int, int] = (48, 192, 192)
ANATOMY_Z_MM = 240.0  # iliac crest -> lung bases
FOV_XY_MM = 384.0  # typical abdominal reconstruction field of view
AIR, FAT, MUSCLE, SKIN = -1000.0, -100.0, 50.0, 30.0
# (label id, HU) of the labeled organs: liver, RK, spleen, pancreas, aorta, IVC, RAG, LAG, GB, eso, stomach, duo, LK
ORGAN_HU: dict[int, float] = {
    1: 110,
    2: 175,
    3: 120,
    4: 90,
    5: 175,
    6: 130,
    7: 50,
    8: 50,
    9: 10,
    10: 45,
    11: 60,
    12: 55,
    13: 175,
}


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm, (x, y) centred, z from the bottom of the anatomy."""

    z: np.ndarray  # (Z,)
    y: np.ndarray  # (Y,)
    x: np.ndarray  # (X,)
    spacing: tuple[float, float, float]

    def box(self, c: Sequence[float], r: Sequence[float]) -> tuple[slice, slice, slice]:
        """Index box covering centre ``c`` (x, y, z) mm +- radius ``r`` (x, y, z) mm, clipped to the grid."""
        out = []
        for axis, (cc, rr, sp) in zip(
            (self.z, self.y, self.x),
            ((c[2], r[2], self.spacing[0]), (c[1], r[1], self.spacing[1]), (c[0], r[0], self.spacing[2])),
        ):
            lo = int(np.searchsorted(axis, cc - rr - sp))
            hi = int(np.searchsorted(axis, cc + rr + sp))
            out.append(slice(lo, max(lo, hi)))
        return out[0], out[1], out[2]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z (n,1,1), y (1,n,1), x (1,1,n)) mm coordinates of a box."""
        return self.z[box[0], None, None], self.y[None, box[1], None], self.x[None, None, box[2]]


class _Painter:
    """Paints HU and labels into the volume; later paint wins (organs last, vessels on top)."""

    def __init__(self, grid: _Grid, rng: np.random.Generator, rot_deg: float, shift: np.ndarray) -> None:
        shape = (grid.z.size, grid.y.size, grid.x.size)
        self.grid, self.rng = grid, rng
        self.hu = np.full(shape, AIR, np.float32)
        self.labels = np.zeros(shape, np.uint8)
        self.cavity = np.ones(shape, bool)  # organs stay inside the abdominal wall
        self.bump = _smooth_field(rng, shape, (4, 8, 8))  # shape deformation, std 1
        self.rot = np.deg2rad(rot_deg)
        self.shift = shift  # (x, y, z) mm

    def place(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Anatomical point -> grid mm after this case's rotation and shift."""
        c, s = np.cos(self.rot), np.sin(self.rot)
        return c * x - s * y + self.shift[0], s * x + c * y + self.shift[1], z + self.shift[2]

    def paint(
        self, box: tuple[slice, slice, slice], mask: np.ndarray, hu: float | np.ndarray, label: int | None = None
    ) -> None:
        if label is not None:
            mask = mask & self.cavity[box]
        sub = self.hu[box]
        sub[mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        if label is not None:
            self.labels[box][mask] = label

    def ellipsoid(
        self, c: Sequence[float], r: Sequence[float], angle_deg: float = 0.0, wobble: float = 0.12
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Ellipsoid at anatomical centre ``c`` (x, y, z) mm with radii ``r`` mm, rotated about z.

        Returns the box and ``f`` (normalised squared radius, deformed by smooth noise): inside is ``f <= 1``.
        """
        cx, cy, cz = self.place(*c)
        grow = np.sqrt(1 + 3 * wobble)  # the noise term reaches at most 3 * wobble
        reach = max(r[0], r[1]) * grow
        box = self.grid.box((cx, cy, cz), (reach, reach, r[2] * grow))
        z, y, x = self.grid.coords(box)
        a = np.deg2rad(angle_deg) + self.rot
        dx, dy = x - cx, y - cy
        u, v = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
        f = (u / r[0]) ** 2 + (v / r[1]) ** 2 + ((z - cz) / r[2]) ** 2
        return box, f + wobble * self.bump[box]

    def tube(
        self, points: Sequence[Sequence[float]], radius: Sequence[float] | float, n: int = 200
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Tube along a smooth curve through anatomical ``points`` (x, y, z) mm; returns box and dist/radius."""
        pts = np.array([self.place(*p) for p in points], np.float64)
        rad = np.broadcast_to(np.asarray(radius, np.float64), (len(pts),))
        t = np.linspace(0, 1, len(pts))
        ts = np.linspace(0, 1, n)
        curve = np.stack([np.interp(ts, t, pts[:, i]) for i in range(3)], 1)
        curve = ndimage.gaussian_filter1d(curve, 6, axis=0, mode="nearest")  # round the polyline's corners
        rads = np.interp(ts, t, rad)
        lo, hi = curve.min(0) - rads.max() - 4, curve.max(0) + rads.max() + 4
        box = self.grid.box((lo + hi) / 2, (hi - lo) / 2)
        seeds = np.zeros([s.stop - s.start for s in box], bool)
        sp = np.array(self.grid.spacing)
        origin = np.array([self.grid.z[box[0].start], self.grid.y[box[1].start], self.grid.x[box[2].start]])
        idx = np.round((curve[:, ::-1] - origin) / sp).astype(int)
        keep = np.all((idx >= 0) & (idx < np.array(seeds.shape)), 1)
        if not seeds.size or not keep.any():
            return box, np.full(seeds.shape, np.inf, np.float32)
        rmap = np.zeros(seeds.shape, np.float32)
        seeds[tuple(idx[keep].T)] = True
        rmap[tuple(idx[keep].T)] = rads[keep]
        dist, nearest = ndimage.distance_transform_edt(~seeds, sampling=sp, return_indices=True)
        return box, (dist / rmap[tuple(nearest)] + 0.08 * self.bump[box]).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Smooth random field of ``shape`` (std 1, clipped to +-3): coarse white noise, Gaussian-interpolated."""
    coarse = tuple(max(2, min(c, s)) for c, s in zip(coarse, shape))
    field = rng.standard_normal(coarse).astype(np.float32)
    for axis, (n, c) in enumerate(zip(shape, coarse)):  # separable: one small matrix product per axis
        d = (np.arange(n) + 0.5) / n * c - 0.5 - np.arange(c)[:, None]
        weights = np.exp(-0.5 * (d / 0.7) ** 2).astype(np.float32)
        field = np.moveaxis(np.tensordot(field, weights / weights.sum(0), axes=([axis], [0])), -1, axis)
    return np.clip(field / max(float(field.std()), 1e-6), -3, 3)


def _body_wall(p: _Painter, rx: float, ry: float, fat: float, muscle: float) -> tuple[float, float]:
    """Skin, subcutaneous fat, abdominal wall muscle and a fat-filled cavity; returns cavity radii (mm)."""
    g = p.grid
    z, y, x = g.coords((slice(None),) * 3)
    expo = np.where(y > 0, 2.6, 2.0)  # flatter back: the patient lies supine on the table
    ang = np.arctan2(y, x)
    wob = 1 + 0.025 * np.sin(3 * ang + p.rng.uniform(0, 6)) + 0.01 * p.bump
    rho = ((np.abs(x) / rx) ** expo + (np.abs(y) / ry) ** expo) ** (1 / expo) / wob  # 1 on the skin
    mean_r = (rx + ry) / 2
    cav_rx, cav_ry = rx - fat - muscle, ry - fat - muscle
    rho_cav = ((np.abs(x) / cav_rx) ** expo + (np.abs(y) / cav_ry) ** expo) ** (1 / expo) / wob
    p.hu[:] = np.where(rho <= 1, FAT, AIR)
    p.hu[(rho <= 1) & (rho > 1 - 2.5 / mean_r)] = SKIN
    p.hu[(rho_cav > 1) & (rho_cav <= 1 + muscle / mean_r) & (rho <= 1)] = MUSCLE
    p.cavity = np.broadcast_to(rho_cav <= 1, p.hu.shape).copy()
    table = (y > ry + 12) & (y < ry + 18) & (np.abs(x) < 0.8 * FOV_XY_MM / 2)
    p.hu[np.broadcast_to(table, p.hu.shape)] = 150.0
    return cav_rx, cav_ry


def _skeleton_and_muscles(p: _Painter, cav: tuple[float, float], muscle: float, top: float) -> None:
    """Vertebrae, spinal canal, ribs, psoas and paraspinal muscles, lung bases (unlabeled)."""
    cav_rx, cav_ry = cav
    vy = 0.5 * cav_ry  # vertebral body centre (mm, posterior of centre)
    for side in (-1, 1):
        box, f = p.ellipsoid((side * 38, vy + 38, top / 2), (26, 22, top), 0, 0.05)
        p.paint(box, f <= 1, MUSCLE)  # paraspinal
        box, f = p.ellipsoid((side * 95, vy - 5, top + 20), (60, 58, 70), side * 20, 0.08)
        p.paint(box, f <= 1, -860.0)  # lung base in the costophrenic recess
        box, f = p.ellipsoid((side * 36, vy, 0), (22, 18, 0.45 * top), side * 15, 0.05)
        p.paint(box, f <= 1, MUSCLE)  # psoas, growing towards the pelvis
    box, f = p.ellipsoid((0, vy, top / 2), (21, 18, top), 0, 0.02)
    disc = np.broadcast_to(((p.grid.coords(box)[0] + p.rng.uniform(0, 34)) % 34) < 7, f.shape)  # 34 mm levels
    p.paint(box, f <= 1, np.where(disc, 90.0, np.where(f > 0.6, 800.0, 260.0)).astype(np.float32))
    for c, r, hu in (
        ((0, vy + 33, top / 2), (12, 7, top), 700.0),
        ((0, vy + 55, top / 2), (5, 17, top), 650.0),
        ((0, vy + 27, top / 2), (8, 7, top), 15.0),
    ):  # lamina, spinous process, canal
        box, f = p.ellipsoid(c, r, 0, 0.0)
        p.paint(box, f <= 1, hu)
    # ribs: small bone sections around the wall, sloping in z so a slice cuts a different set each time
    phase = p.rng.uniform(0, 1, 16)
    for i, theta in enumerate(np.deg2rad(np.r_[np.linspace(40, 160, 8), -np.linspace(40, 160, 8)])):
        for zc in np.arange(0.4 * top + 30 * phase[i], top + 40, 30.0):
            lift = 0.55 if abs(theta) < np.deg2rad(70) else 0.42  # anterior ribs only in the upper slices
            if zc < lift * top:
                continue
            x, y = (cav_rx + muscle / 2) * np.sin(theta), -(cav_ry + muscle / 2) * np.cos(theta)
            box, f = p.ellipsoid((x, y, zc), (6, 6, 6), np.rad2deg(theta), 0.0)
            p.paint(box, f <= 1, np.where(f > 0.5, 700.0, 300.0).astype(np.float32))


def _bowel(p: _Painter, cav: tuple[float, float], top: float) -> None:
    """Colon and small-bowel loops (fluid, wall, gas) in the lower anterior cavity (unlabeled)."""
    cav_rx, cav_ry = cav
    colon = [
        ((-0.75 * cav_rx, 0.05 * cav_ry, 0.0), (-0.72 * cav_rx, -0.1 * cav_ry, 0.42 * top)),
        ((0.75 * cav_rx, 0.15 * cav_ry, 0.0), (0.72 * cav_rx, 0.05 * cav_ry, 0.55 * top)),
        ((-0.72 * cav_rx, -0.3 * cav_ry, 0.42 * top), (0.72 * cav_rx, -0.25 * cav_ry, 0.55 * top)),
    ]
    for a, b in colon:
        box, f = p.tube([a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 - 10, (a[2] + b[2]) / 2), b], 22.0)
        hu = np.where(f < 0.7, np.where(p.bump[box] > 0, -1000.0, 10.0), 40.0).astype(np.float32)
        p.paint(box, f <= 1, hu)
    for _ in range(26):
        c = (p.rng.uniform(-0.55, 0.55) * cav_rx, p.rng.uniform(-0.75, 0.0) * cav_ry, p.rng.uniform(0.0, 0.4) * top)
        r = p.rng.uniform(11, 17)
        box, f = p.ellipsoid(c, (r, r * p.rng.uniform(0.7, 1.0), r * 1.5), p.rng.uniform(0, 180), 0.1)
        gas = p.rng.random() < 0.25
        hu = np.where(f < 0.55, -1000.0 if gas else p.rng.uniform(5, 35), 45.0).astype(np.float32)
        p.paint(box, f <= 1, hu)


def _organs(p: _Painter, cav: tuple[float, float], top: float) -> None:
    """The 13 FLARE organs, painted in order of priority (later wins)."""
    sx, sy = cav[0] / 130.0, cav[1] / 88.0  # organ positions follow the size of the cavity
    vy = 0.5 * cav[1]
    s = lambda: p.rng.uniform(0.88, 1.12)  # noqa: E731 - per-organ size factor
    z = lambda w: w * top  # noqa: E731 - anatomical height fraction -> mm

    liver_s = s()
    for c, r, a in (((-72 * sx, 4 * sy, z(0.74)), (84, 80, 60), 10), ((15 * sx, -50 * sy, z(0.8)), (55, 30, 36), 15)):
        box, f = p.ellipsoid(c, tuple(v * liver_s for v in r), a, 0.18)
        p.paint(box, f <= 1, ORGAN_HU[1], 1)
    box, f = p.tube([(-5 * sx, 0, z(0.5)), (-30 * sx, -12 * sy, z(0.6)), (-70 * sx, -5 * sy, z(0.66))], 7.0)
    p.paint(box, (f <= 1) & (p.labels[box] == 1), 165.0)  # portal vein inside the liver (labeled liver)
    box, f = p.ellipsoid((-48 * sx, -48 * sy, z(0.52)), (14 * s(), 21 * s(), 30), -35)
    p.paint(box, f <= 1, ORGAN_HU[9], 9)  # gallbladder under the liver
    box, f = p.ellipsoid((92 * sx, 0.85 * vy, z(0.76)), (24 * s(), 48 * s(), 46), 40)
    p.paint(box, f <= 1, ORGAN_HU[3], 3)  # spleen, left posterolateral

    box, f = p.ellipsoid((50 * sx, -35 * sy, z(0.74)), (50 * s(), 38 * s(), 56), 30, 0.1)
    cy = p.place(50 * sx, -35 * sy, 0)[1]
    _, y, _ = p.grid.coords(box)
    content = np.where(y < cy - 14, AIR, 20.0)  # gas rises anteriorly in a supine patient
    p.paint(box, f <= 1, np.where(f > 0.65, ORGAN_HU[11], content).astype(np.float32), 11)
    box, f = p.tube(
        [
            (8, 0.4 * vy, z(1.08)),
            (14 * sx, 0.1 * vy, z(0.93)),
            (30 * sx, -12 * sy, z(0.84)),
            (45 * sx, -22 * sy, z(0.79)),
        ],
        7.5,
    )
    p.paint(box, f <= 1, ORGAN_HU[10], 10)  # esophagus, GE junction into the stomach

    for label, side, w, a in ((2, -1, 0.30, -30), (13, 1, 0.36, 30)):  # right kidney lower than left
        box, f = p.ellipsoid((side * 72 * sx, 0.95 * vy, z(w)), (27 * s(), 31 * s(), 52 * s()), a, 0.06)
        _, _, x = p.grid.coords(box)
        hilum = (f < 0.3) & (side * (x - p.place(side * 72 * sx, 0, 0)[0]) < -8)
        hu = np.where(hilum, 15.0, np.where(f < 0.55, 135.0, ORGAN_HU[label])).astype(np.float32)
        p.paint(box, f <= 1, hu, label)
    for label, side, w in ((7, -1, 0.57), (8, 1, 0.6)):  # adrenals: thin limbs above/medial to the kidneys
        box, f = p.ellipsoid((side * 42 * sx, 0.62 * vy, z(w)), (4.5, 15 * s(), 16), side * 35, 0.05)
        p.paint(box, f <= 1, ORGAN_HU[label], label)

    box, f = p.tube(
        [
            (-35 * sx, -12 * sy, z(0.44)),
            (-5 * sx, -22 * sy, z(0.48)),
            (35 * sx, -16 * sy, z(0.52)),
            (78 * sx, 0.25 * vy, z(0.58)),
        ],
        [15 * s(), 11, 10, 9 * s()],
    )
    p.paint(box, f <= 1, ORGAN_HU[4], 4)  # pancreas: head by the duodenum, tail at the splenic hilum
    box, f = p.tube(
        [
            (-22 * sx, -42 * sy, z(0.54)),
            (-52 * sx, -30 * sy, z(0.5)),
            (-64 * sx, -8 * sy, z(0.44)),
            (-58 * sx, 2, z(0.36)),
            (-30 * sx, -4, z(0.32)),
            (5 * sx, -12 * sy, z(0.33)),
            (28 * sx, -16 * sy, z(0.38)),
            (30 * sx, -22 * sy, z(0.45)),
        ],
        10.0,
    )
    p.paint(
        box, (f <= 1) & (p.labels[box] != 4), np.where(f < 0.6, 25.0, ORGAN_HU[12]).astype(np.float32), 12
    )  # duodenum: C around the head

    box, f = p.tube(
        [(14, 0.3 * vy, z(-0.05)), (15, 0.28 * vy, z(0.5)), (20, 0.5 * vy, z(0.85)), (22, 0.75 * vy, z(1.1))],
        11.0 * s(),
    )
    p.paint(box, f <= 1, ORGAN_HU[5], 5)  # aorta, left-anterior of the spine
    box, f = p.tube(
        [(-22, 0.26 * vy, z(-0.05)), (-26, 0.2 * vy, z(0.5)), (-32, 0.15 * vy, z(0.75)), (-26, 0.3 * vy, z(0.95))],
        11.0 * s(),
    )
    p.paint(box, f <= 1, ORGAN_HU[6], 6)  # IVC, right of the aorta, intrahepatic at the top


def default_spacing(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """(z, y, x) spacing in mm giving a 384 mm in-plane field of view and the full anatomy in z."""
    return ANATOMY_Z_MM / shape[0], FOV_XY_MM / shape[1], FOV_XY_MM / shape[2]


def generate_case(
    seed: int, *, shape: tuple[int, int, int] = DEFAULT_SHAPE, spacing_mm: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom CT and its 13-organ label map, fully determined by ``seed``.

    Args:
        seed: any non-negative int; same seed -> identical arrays.
        shape: ``(Z, Y, X)`` voxels.
        spacing_mm: ``(z, y, x)`` voxel size in mm; default :func:`default_spacing` (whole anatomy in view).

    Returns:
        ``image_hu`` int16 ``(Z, Y, X)`` in HU and ``labels`` uint8 ``(Z, Y, X)`` in FLARE ids (0 background),
        in the canonical orientation described in the module docstring.
    """
    spacing = tuple(float(s) for s in (spacing_mm or default_spacing(shape)))
    rng = np.random.default_rng([int(seed), 0x5EED])
    centre = lambda n, d: (np.arange(n) - (n - 1) / 2) * d  # noqa: E731
    z_offset = rng.uniform(-0.04, 0.04) * ANATOMY_Z_MM
    grid = _Grid(
        (np.arange(shape[0]) + 0.5) * spacing[0] + z_offset,
        centre(shape[1], spacing[1]),
        centre(shape[2], spacing[2]),
        spacing,
    )  # type: ignore[arg-type]
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-6, 6), 0.0])
    p = _Painter(grid, rng, rot_deg=rng.uniform(-5, 5), shift=shift)
    rx, ry = rng.uniform(140, 178), rng.uniform(102, 128)
    muscle = rng.uniform(9, 14)
    cav = _body_wall(p, rx, ry - 8, fat=rng.uniform(10, 32), muscle=muscle)
    _skeleton_and_muscles(p, cav, muscle, ANATOMY_Z_MM)
    _bowel(p, cav, ANATOMY_Z_MM)
    _organs(p, cav, ANATOMY_Z_MM)

    soft = (p.hu > -300) & (p.hu < 300)
    p.hu += np.where(soft, 7.0, 3.0) * _smooth_field(rng, shape, (shape[0] // 2, shape[1] // 6, shape[2] // 6))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, 0.7, 0.7))
    p.hu += noise * (13.0 / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(p.hu), -1024, 3071).astype(np.int16), p.labels


def phantom_affine(spacing_mm: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """NIfTI affine for data stored as ``array.transpose(2, 1, 0)`` (i: R->L, j: A->P, k: I->S; RAS+ world)."""
    sz, sy, sx = spacing_mm
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [sx * (shape[2] - 1) / 2, sy * (shape[1] - 1) / 2, -sz * (shape[0] - 1) / 2]
    return aff


def write_nifti(path: str | Path, array: np.ndarray, spacing_mm: tuple[float, float, float]) -> Path:
    """Atomically write a canonical ``(Z, Y, X)`` array as ``.nii.gz`` (dtype kept) with :func:`phantom_affine`."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), phantom_affine(spacing_mm, array.shape))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=4, mtime=0))
    return Path(path)


def write_phantom_dataset(
    root: str | Path,
    *,
    n_labeled: int = 4,
    n_unlabeled: int = 8,
    n_tuning: int = 0,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write phantom cases in the FLARE 2022 layout under ``root`` and return ``root``.

    Layout: ``Training/FLARE22_LabeledCase50/{images/PHANTOM_Tr_0001_0000.nii.gz, labels/PHANTOM_Tr_0001.nii.gz}``,
    ``Training/FLARE22_UnlabeledCase1-1000/PHANTOM_Un_0001_0000.nii.gz``, ``Tuning/{images,labels}/PHANTOM_Ts_*``.
    Images are int16 HU, labels uint8; case ``i`` of a group uses seed ``seed * 100003 + offset + i`` so
    groups never share a case. Every file is written atomically.
    """
    root = Path(root)
    spacing = spacing or default_spacing(shape)
    groups = (
        ("Training/FLARE22_LabeledCase50", "PHANTOM_Tr", n_labeled, True, 0),
        ("Training/FLARE22_UnlabeledCase1-1000", "PHANTOM_Un", n_unlabeled, False, 10_000),
        ("Tuning", "PHANTOM_Ts", n_tuning, True, 20_000),
    )
    for folder, prefix, count, labeled, offset in groups:
        for i in range(1, count + 1):
            image, labels = generate_case(seed * 100_003 + offset + i, shape=shape, spacing_mm=spacing)
            case = f"{prefix}_{i:04d}"
            if labeled:
                write_nifti(root / folder / "images" / f"{case}_0000.nii.gz", image, spacing)
                write_nifti(root / folder / "labels" / f"{case}.nii.gz", labels, spacing)
            else:
                write_nifti(root / folder / f"{case}_0000.nii.gz", image, spacing)
    return root


def render_preview(
    image: np.ndarray,
    labels: np.ndarray | None,
    path: str | Path,
    *,
    spacing_mm: tuple[float, float, float] | None = None,
    window: tuple[float, float] = (-160.0, 240.0),
    n_axial: int = 4,
) -> Path:
    """Save a PNG of ``n_axial`` axial slices and one coronal slice, windowed to ``window`` HU.

    ``image`` (and ``labels``) are canonical ``(Z, Y, X)``; with ``labels`` a second row shows the organ
    overlay. ``spacing_mm`` (z, y, x) sets the coronal aspect ratio. Written atomically; returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    z_max = image.shape[0] - 1
    picks = np.linspace(0.15 * z_max, 0.85 * z_max, n_axial).round().astype(int)
    y_cor = int(image.shape[1] * 0.55)  # through the kidneys and the aorta
    views = [(f"axial z={k}", np.s_[k], 1.0) for k in picks]
    coronal_aspect = spacing_mm[0] / spacing_mm[2] if spacing_mm else "auto"
    views.append((f"coronal y={y_cor}", np.s_[::-1, y_cor], coronal_aspect))
    rows = 1 if labels is None else 2
    fig, axes = plt.subplots(rows, len(views), figsize=(3.2 * len(views), 3.3 * rows), squeeze=False)
    cmap = ListedColormap(plt.get_cmap("tab20")(np.linspace(0, 1, 14))[1:])
    for col, (title, index, aspect) in enumerate(views):
        for row in range(rows):
            ax = axes[row, col]
            ax.imshow(image[index], cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
            if row == 1 and labels is not None:
                ax.imshow(
                    np.ma.masked_equal(labels[index], 0),
                    cmap=cmap,
                    vmin=1,
                    vmax=13,
                    alpha=0.45,
                    interpolation="nearest",
                    aspect=aspect,
                )
            ax.set_axis_off()
            ax.set_title(title if row == 0 else "labels", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
