"""Analytic bone phantom: a rod of bone matrix with osteocyte lacunae, canaliculi and halos.

Geometry after docs/physics.md (Nango et al., Bone 84, 279 (2016): mineral-depleted
zones 10-30x the canalicular diameter around canaliculi). The phantom is the SUM of its solids:

- rod: bone matrix in air, a cylinder along z through the origin (increment matrix - air);
- lacuna: triaxial ellipsoid filled with water (water - matrix), long axis along z +/- 15 deg;
- halo: coaxial cylinder around each canaliculus (halo - matrix);
- canaliculus: thin water-filled cylinder inside its halo (water - halo), carrying the dark-field
  coefficient ``canaliculus_darkfield_per_m``;
- optional vascular canal along z (water - matrix).

Frame and units: sample frame (x, y, z) [m], z = rotation axis. At rotation angle theta a ray hits
the detector at s = x cos(theta) + y sin(theta), v = z, and runs along (-sin theta, cos theta, 0).
Volumes are (z, y, x) arrays with voxel centres x_j = (j - (nx - 1)/2) voxel (y, z likewise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from contracts.instrument import Geometry
from contracts.simulation import Phantom
from sim.materials import BoneMaterials, bone_materials
from sim.primitives import Cylinder, Ellipsoid, FloatArray, Primitive

#: Clearance [m] kept between features and the rod surface.
_CLEARANCE_M = 1.0e-6
#: Maximum tilt of a lacuna's long axis from z [rad] and of a canaliculus out of the plane
#: perpendicular to that axis [rad].
_LACUNA_TILT_RAD = math.radians(15.0)
_CANALICULUS_TILT_RAD = math.radians(20.0)
#: Canaliculi leave the lacuna within this fraction of its long semi-axis from the centre.
_CANALICULUS_ORIGIN_SPAN = 0.6
#: Rays evaluated at once per solid (bounds the memory of one chord evaluation).
_MAX_POINTS = 1_000_000
#: Shortest canaliculus kept after clipping at the rod surface [m].
_MIN_CANALICULUS_M = 1.0e-6


def _centred_axis(n: int, step: float) -> FloatArray:
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * step


def _index_range(coords: FloatArray, lo: float, hi: float) -> tuple[int, int]:
    return int(np.searchsorted(coords, lo, "left")), int(np.searchsorted(coords, hi, "right"))


@dataclass(frozen=True, eq=False)
class BonePhantom:
    """The assembled phantom; ``halos[i]`` surrounds ``canaliculi[i]``."""

    rod: Cylinder
    lacunae: tuple[Ellipsoid, ...]
    canaliculi: tuple[Cylinder, ...]
    halos: tuple[Cylinder, ...]
    vascular_canal: Cylinder | None
    materials: BoneMaterials
    wavelength_m: float

    @property
    def primitives(self) -> tuple[Primitive, ...]:
        """All solids, summed to form the phantom."""
        extra: tuple[Primitive, ...] = (
            (self.vascular_canal,) if self.vascular_canal is not None else ()
        )
        return (self.rod, *extra, *self.lacunae, *self.halos, *self.canaliculi)

    @property
    def canaliculus_axes(self) -> list[tuple[FloatArray, FloatArray]]:
        """(start, end) points [m] of every canaliculus axis, start on its lacuna's surface."""
        return [(c.start, c.end) for c in self.canaliculi]

    # ------------------------------------------------------------------ projections
    def line_integrals(
        self, theta_rad: float, s_m: FloatArray, v_m: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Exact line integrals of delta, beta [m] and eps [dimensionless] along the rays.

        ``s_m`` (ns,) detector columns and ``v_m`` (nv,) detector rows [m], both ascending; returns
        three (nv, ns) arrays. Each solid only touches the sub-grid its bounding box covers.
        """
        s = np.asarray(s_m, dtype=np.float64)
        v = np.asarray(v_m, dtype=np.float64)
        if s.ndim != 1 or v.ndim != 1:
            raise ValueError("s_m and v_m must be 1-D arrays")
        if np.any(np.diff(s) < 0) or np.any(np.diff(v) < 0):
            raise ValueError("s_m and v_m must be ascending")
        e_s = np.array([math.cos(theta_rad), math.sin(theta_rad), 0.0])
        e_z = np.array([0.0, 0.0, 1.0])
        ray = np.array([-math.sin(theta_rad), math.cos(theta_rad), 0.0])
        out = [np.zeros((v.size, s.size)) for _ in range(3)]
        for prim in self.primitives:
            sc = float(prim.centre @ e_s)
            hs = prim.support(e_s)
            i0, i1 = _index_range(s, sc - hs, sc + hs)
            vc = float(prim.centre[2])
            hv = prim.support(e_z)
            j0, j1 = _index_range(v, vc - hv, vc + hv)
            if i0 >= i1 or j0 >= j1:
                continue
            block = max(1, _MAX_POINTS // (i1 - i0))
            for jb in range(j0, j1, block):
                je = min(j1, jb + block)
                origins = s[None, i0:i1, None] * e_s + v[jb:je, None, None] * e_z
                chord = prim.chord(origins, ray)
                for arr, inc in zip(out, (prim.d_delta, prim.d_beta, prim.d_eps), strict=True):
                    if inc != 0.0:
                        arr[jb:je, i0:i1] += inc * chord
        return out[0], out[1], out[2]

    # ------------------------------------------------------------------ volumes
    def _fractions(
        self,
        prims: Iterable[Primitive],
        shape_zyx: tuple[int, int, int],
        voxel_m: float,
        supersample: int,
    ) -> Iterable[tuple[Primitive, tuple[slice, slice, slice], FloatArray]]:
        """Yield (solid, box slices, inside fraction of each voxel of the box)."""
        axes = [_centred_axis(n, voxel_m) for n in shape_zyx]
        unit = np.eye(3)
        sub = ((np.arange(supersample) + 0.5) / supersample - 0.5) * voxel_m
        for prim in prims:
            box: list[slice] = []
            for axis_index, coords in enumerate(axes):
                frame_axis = 2 - axis_index  # z, y, x -> sample axes 2, 1, 0
                centre = float(prim.centre[frame_axis])
                half = prim.support(unit[frame_axis]) + voxel_m
                lo, hi = _index_range(coords, centre - half, centre + half)
                box.append(slice(lo, hi))
            if any(b.start >= b.stop for b in box):
                continue
            zs, ys, xs = ((axes[k][box[k]][:, None] + sub).ravel() for k in range(3))
            nz, ny, nx = (b.stop - b.start for b in box)
            frac = np.empty((nz, ny, nx))
            chunk = max(1, 2_000_000 // max(1, ys.size * xs.size * supersample))
            for z0 in range(0, nz, chunk):
                z1 = min(nz, z0 + chunk)
                zz = zs[z0 * supersample : z1 * supersample]
                pts = np.empty((zz.size, ys.size, xs.size, 3))
                pts[..., 0] = xs[None, None, :]
                pts[..., 1] = ys[None, :, None]
                pts[..., 2] = zz[:, None, None]
                inside = prim.contains(pts).reshape(
                    z1 - z0, supersample, ny, supersample, nx, supersample
                )
                frac[z0:z1] = inside.mean(axis=(1, 3, 5))
            yield prim, (box[0], box[1], box[2]), frac

    def voxelize(
        self, shape_zyx: Sequence[int], voxel_m: float, supersample: int = 2
    ) -> dict[str, NDArray[np.float32]]:
        """Ground-truth volumes by sub-voxel averaging (``supersample``^3 samples per voxel).

        Returns float32 (z, y, x) arrays: "delta" [1], "beta" [1], "mu" = 4 pi beta / lambda
        [1/m] and "darkfield" = eps [1/m]; values relative to air (air = 0).
        """
        shape = _check_volume(shape_zyx, voxel_m, supersample)
        delta = np.zeros(shape)
        beta = np.zeros(shape)
        eps = np.zeros(shape)
        for prim, box, frac in self._fractions(self.primitives, shape, voxel_m, supersample):
            delta[box] += prim.d_delta * frac
            beta[box] += prim.d_beta * frac
            if prim.d_eps:
                eps[box] += prim.d_eps * frac
        mu = 4.0 * math.pi * beta / self.wavelength_m
        return {
            "delta": delta.astype(np.float32),
            "beta": beta.astype(np.float32),
            "mu": mu.astype(np.float32),
            "darkfield": eps.astype(np.float32),
        }

    def region_masks(
        self,
        shape_zyx: Sequence[int],
        voxel_m: float,
        margin_voxels: int = 2,
        supersample: int = 2,
    ) -> dict[str, NDArray[np.bool_]]:
        """Boolean (z, y, x) ROI masks for scoring reconstructions.

        "matrix": inside the rod, at least ``margin_voxels`` voxels from the rod surface and from
        every feature; "halo": wholly inside one halo and touching no other halo, canaliculus or
        lacuna; "lacuna": wholly inside a lacuna and touching no halo or canaliculus.
        """
        shape = _check_volume(shape_zyx, voxel_m, supersample)
        if margin_voxels < 0:
            raise ValueError(f"margin_voxels must be >= 0, got {margin_voxels}")

        def union(prims: Iterable[Primitive], full: bool) -> NDArray[np.bool_]:
            mask = np.zeros(shape, dtype=bool)
            for _, box, frac in self._fractions(prims, shape, voxel_m, supersample):
                mask[box] |= frac >= 1.0 if full else frac > 0.0
            return mask

        features: list[Primitive] = [*self.lacunae, *self.halos, *self.canaliculi]
        if self.vascular_canal is not None:
            features.append(self.vascular_canal)
        touched = union(features, full=False)
        far = ndimage.distance_transform_edt(~touched) > margin_voxels if touched.any() else True
        _, ys, xs = (_centred_axis(n, voxel_m) for n in shape)
        radius = np.hypot(xs[None, :], ys[:, None])
        inner = radius <= self.rod.radius - margin_voxels * voxel_m - voxel_m / 2
        rod_full = union([self.rod], full=True)
        matrix = rod_full & inner[None, :, :] & far
        canal_any = union(self.canaliculi, full=False)
        lacuna_any = union(self.lacunae, full=False)
        halo_any = union(self.halos, full=False)
        halo_count = np.zeros(shape, dtype=np.int32)
        for _, box, frac in self._fractions(self.halos, shape, voxel_m, supersample):
            halo_count[box] += frac > 0.0
        halo = union(self.halos, full=True) & (halo_count == 1) & ~canal_any & ~lacuna_any
        lacuna = union(self.lacunae, full=True) & ~halo_any
        return {"matrix": matrix, "halo": halo, "lacuna": lacuna}


def _check_volume(
    shape_zyx: Sequence[int], voxel_m: float, supersample: int
) -> tuple[int, int, int]:
    if len(shape_zyx) != 3 or any(int(n) < 1 for n in shape_zyx):
        raise ValueError(f"shape_zyx must be 3 positive ints, got {shape_zyx!r}")
    if not voxel_m > 0:
        raise ValueError(f"voxel_m must be > 0, got {voxel_m!r}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    return int(shape_zyx[0]), int(shape_zyx[1]), int(shape_zyx[2])


def _rotation_with_axis(axis: FloatArray, spin: float) -> FloatArray:
    """Orthonormal matrix whose first column is ``axis``, the others spun by ``spin`` rad."""
    a = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    b = np.cross(a, helper)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    b2 = math.cos(spin) * b + math.sin(spin) * c
    c2 = np.cross(a, b2)
    return np.column_stack([a, b2, c2])


def _exit_distance(ell: Ellipsoid, origin: FloatArray, direction: FloatArray) -> float:
    """Distance from ``origin`` (inside the ellipsoid) along ``direction`` to its surface [m]."""
    q = ((origin - ell.centre) @ ell.rotation) / ell.semi_axes
    w = (direction @ ell.rotation) / ell.semi_axes
    a, b, c = float(w @ w), 2.0 * float(q @ w), float(q @ q) - 1.0
    return (-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)


def _rod_exit_distance(radius: float, origin: FloatArray, direction: FloatArray) -> float:
    """Distance from ``origin`` inside the z-axis cylinder of ``radius`` to its surface [m]."""
    ox, oy = float(origin[0]), float(origin[1])
    dx, dy = float(direction[0]), float(direction[1])
    a = dx * dx + dy * dy
    if a < 1e-12:
        return math.inf
    b = 2.0 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - radius * radius
    return (-b + math.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)


def _horizontal_reach(ell: Ellipsoid) -> float:
    angles = np.linspace(0.0, math.pi, 37)
    return max(ell.support(np.array([math.cos(a), math.sin(a), 0.0])) for a in angles)


def make_bone_phantom(
    phantom: Phantom,
    geometry: Geometry,
    seed: int,
    *,
    fov_height_m: float | None = None,
) -> BonePhantom:
    """Build the bone phantom deterministically from ``seed``.

    Lacunae are placed inside the rod away from its surface, with centres within
    +/- ``fov_height_m``/2 of z = 0 (less the long semi-axis where room allows; default height:
    the rod diameter). Canaliculi leave the lacuna surface roughly perpendicular to its long axis
    and are clipped to stay inside the rod.
    """
    # One generator, drawn in a fixed order (canal, lacunae, canaliculi): a seed is one phantom.
    rng = np.random.default_rng(seed)
    mats = bone_materials(phantom, geometry.energy_kev)
    height = phantom.rod_diameter_m if fov_height_m is None else fov_height_m
    if not height > 0:
        raise ValueError(f"fov_height_m must be > 0, got {fov_height_m!r}")
    rod = _rod(phantom, mats, half_length_m=10.0 * max(height, phantom.rod_diameter_m))
    canal = _vascular_canal(phantom, mats, rod, rng)
    lacunae = _place_lacunae(phantom, mats, height, canal, rng)
    canaliculi, halos = _grow_canaliculi(phantom, mats, lacunae, rng)
    return BonePhantom(
        rod=rod,
        lacunae=tuple(lacunae),
        canaliculi=tuple(canaliculi),
        halos=tuple(halos),
        vascular_canal=canal,
        materials=mats,
        wavelength_m=geometry.wavelength_m,
    )


def _rod(phantom: Phantom, mats: BoneMaterials, half_length_m: float) -> Cylinder:
    """The bone-matrix rod along z (matrix - air) of ``rod_diameter_m``, ``half_length_m`` [m]."""
    matrix_minus_air = mats.matrix - mats.air
    return Cylinder(
        centre=np.zeros(3),
        axis=np.array([0.0, 0.0, 1.0]),
        radius=phantom.rod_diameter_m / 2.0,
        half_length=half_length_m,
        d_delta=matrix_minus_air.delta,
        d_beta=matrix_minus_air.beta,
        label="rod",
    )


def _vascular_canal(
    phantom: Phantom, mats: BoneMaterials, rod: Cylinder, rng: np.random.Generator
) -> Cylinder | None:
    """The water-filled canal along z (water - matrix), or None without a canal radius.

    Its axis lies min(rod radius / 2, room left by the clearance) [m] off the rod axis at a
    random azimuth (one draw); as long as the rod.
    """
    rv = phantom.vascular_canal_radius_m
    if rv is None:
        return None
    radius = rod.radius
    dist = max(0.0, min(0.5 * radius, radius - rv - 2 * _CLEARANCE_M))
    if rv + dist > radius - _CLEARANCE_M:
        raise ValueError(f"vascular_canal_radius_m={rv} does not fit in the rod of radius {radius}")
    az = rng.uniform(0.0, 2.0 * math.pi)
    water_minus_matrix = mats.water - mats.matrix
    return Cylinder(
        centre=np.array([dist * math.cos(az), dist * math.sin(az), 0.0]),
        axis=np.array([0.0, 0.0, 1.0]),
        radius=rv,
        half_length=rod.half_length,
        d_delta=water_minus_matrix.delta,
        d_beta=water_minus_matrix.beta,
        label="vascular canal",
    )


def _place_lacunae(
    phantom: Phantom,
    mats: BoneMaterials,
    height_m: float,
    canal: Cylinder | None,
    rng: np.random.Generator,
) -> list[Ellipsoid]:
    """``phantom.lacunae`` water-filled ellipsoids (water - matrix) inside the rod.

    Each is drawn (at most 2000 tries) until its centre is two long semi-axes [m] from every
    other centre and it clears the canal; centres within +/- (``height_m``/2 - long semi-axis)
    of z = 0 [m].
    """
    if min(phantom.lacuna_semi_axes_m) <= 0:
        raise ValueError(f"lacuna_semi_axes_m must be > 0, got {phantom.lacuna_semi_axes_m}")
    a_long = phantom.lacuna_semi_axes_m[0]
    z_max = max(height_m / 2.0 - a_long, 0.0)
    water_minus_matrix = mats.water - mats.matrix
    lacunae: list[Ellipsoid] = []
    for index in range(phantom.lacunae):
        for _attempt in range(2000):
            probe = _draw_lacuna_pose(phantom, rng)
            centre = _draw_lacuna_centre(phantom, probe, z_max, rng)
            if not _lacuna_is_clear(centre, probe, lacunae, canal, a_long):
                continue
            lacunae.append(
                Ellipsoid(
                    centre,
                    probe.semi_axes,
                    probe.rotation,
                    water_minus_matrix.delta,
                    water_minus_matrix.beta,
                    label=f"lacuna {index}",
                )
            )
            break
        else:
            raise ValueError(f"lacunae={phantom.lacunae} do not fit in the rod")
    return lacunae


def _draw_lacuna_pose(phantom: Phantom, rng: np.random.Generator) -> Ellipsoid:
    """An empty ellipsoid at the origin: long axis within ``_LACUNA_TILT_RAD`` of z, random
    azimuth and spin [rad] (three draws), semi-axes ``lacuna_semi_axes_m`` [m]."""
    a_long, a_mid, a_short = phantom.lacuna_semi_axes_m
    tilt = rng.uniform(0.0, _LACUNA_TILT_RAD)
    az = rng.uniform(0.0, 2.0 * math.pi)
    long_axis = np.array(
        [math.sin(tilt) * math.cos(az), math.sin(tilt) * math.sin(az), math.cos(tilt)]
    )
    rot = _rotation_with_axis(long_axis, rng.uniform(0.0, 2.0 * math.pi))
    return Ellipsoid(np.zeros(3), np.array([a_long, a_mid, a_short]), rot, 0.0, 0.0)


def _draw_lacuna_centre(
    phantom: Phantom, probe: Ellipsoid, z_max_m: float, rng: np.random.Generator
) -> FloatArray:
    """A centre [m] uniform over the disc where ``probe`` stays inside the rod, z uniform in
    +/- ``z_max_m`` (three draws: radius, azimuth, z)."""
    radius = phantom.rod_diameter_m / 2.0
    r_max = radius - _horizontal_reach(probe) - _CLEARANCE_M
    if r_max < 0:
        raise ValueError(
            f"lacuna_semi_axes_m={phantom.lacuna_semi_axes_m} do not fit in "
            f"rod_diameter_m={phantom.rod_diameter_m}"
        )
    r = r_max * math.sqrt(rng.uniform())
    phi = rng.uniform(0.0, 2.0 * math.pi)
    return np.array([r * math.cos(phi), r * math.sin(phi), rng.uniform(-z_max_m, z_max_m)])


def _lacuna_is_clear(
    centre: FloatArray,
    probe: Ellipsoid,
    placed: Sequence[Ellipsoid],
    canal: Cylinder | None,
    a_long_m: float,
) -> bool:
    """True if ``probe`` at ``centre`` [m] is 2 ``a_long_m`` from every placed lacuna's centre
    and its horizontal reach keeps the clearance from the canal."""
    if any(np.linalg.norm(centre - o.centre) < 2 * a_long_m for o in placed):
        return False
    if canal is not None:
        gap = float(np.hypot(*(centre[:2] - canal.centre[:2])))
        if gap < canal.radius + _horizontal_reach(probe) + _CLEARANCE_M:
            return False
    return True


def _grow_canaliculi(
    phantom: Phantom, mats: BoneMaterials, lacunae: Sequence[Ellipsoid], rng: np.random.Generator
) -> tuple[list[Cylinder], list[Cylinder]]:
    """(canaliculi, halos), ``halos[i]`` around ``canaliculi[i]``, lacuna by lacuna.

    Each lacuna draws its count in ``canaliculi_per_lacuna`` and an azimuth offset [rad]; the
    canaliculi spread evenly (with jitter) around its long axis.
    """
    halo_minus_matrix = mats.halo - mats.matrix
    water_minus_halo = mats.water - mats.halo
    canaliculi: list[Cylinder] = []
    halos: list[Cylinder] = []
    lo_n, hi_n = phantom.canaliculi_per_lacuna
    for ell in lacunae:
        count = int(rng.integers(lo_n, hi_n + 1))
        offset = rng.uniform(0.0, 2.0 * math.pi)
        for k in range(count):
            az = offset + 2.0 * math.pi * (k + rng.uniform(-0.35, 0.35)) / count
            drawn = _draw_canaliculus(phantom, ell, az, rng)
            if drawn is None:
                continue
            centre, direction, diameter, halo_d, length = drawn
            canaliculi.append(
                Cylinder(
                    centre,
                    direction,
                    diameter / 2,
                    length / 2,
                    water_minus_halo.delta,
                    water_minus_halo.beta,
                    phantom.canaliculus_darkfield_per_m,
                    label="canaliculus",
                )
            )
            halos.append(
                Cylinder(
                    centre,
                    direction,
                    max(halo_d, diameter) / 2,
                    length / 2,
                    halo_minus_matrix.delta,
                    halo_minus_matrix.beta,
                    label="halo",
                )
            )
    return canaliculi, halos


def _draw_canaliculus(
    phantom: Phantom, ell: Ellipsoid, az_rad: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray, float, float, float] | None:
    """One canaliculus of lacuna ``ell`` at azimuth ``az_rad`` around its long axis.

    Returns (centre [m], unit direction, diameter [m], halo diameter [m], length [m]), or None
    when clipping at the rod surface leaves less than ``_MIN_CANALICULUS_M``. Draws, in order:
    tilt, origin along the long axis, log-uniform diameter, halo factor (only without a fixed
    ``halo_diameter_m``), length.
    """
    a_long = phantom.lacuna_semi_axes_m[0]
    lo_d, hi_d = phantom.canaliculus_diameter_m
    lo_l, hi_l = phantom.canaliculus_length_m
    lo_f, hi_f = phantom.halo_factor
    e_long, e2, e3 = ell.rotation.T
    tilt = rng.uniform(-_CANALICULUS_TILT_RAD, _CANALICULUS_TILT_RAD)
    direction = math.cos(tilt) * (math.cos(az_rad) * e2 + math.sin(az_rad) * e3)
    direction = direction + math.sin(tilt) * e_long
    direction /= np.linalg.norm(direction)
    origin = ell.centre + rng.uniform(-1, 1) * _CANALICULUS_ORIGIN_SPAN * a_long * e_long
    start = origin + _exit_distance(ell, origin, direction) * direction
    diameter = math.exp(rng.uniform(math.log(lo_d), math.log(hi_d)))
    halo_d = phantom.halo_diameter_m or rng.uniform(lo_f, hi_f) * diameter
    radius = phantom.rod_diameter_m / 2.0
    room = _rod_exit_distance(radius, start, direction) - halo_d / 2 - _CLEARANCE_M
    length = min(rng.uniform(lo_l, hi_l), room)
    if length < _MIN_CANALICULUS_M:
        return None
    centre = start + 0.5 * length * direction
    return centre, direction, diameter, halo_d, length
