"""Analytic solids with exact chord lengths: ellipsoid and finite (capped) cylinder.

Coordinates are the sample frame (x, y, z) in metres, z the rotation axis. Each solid carries
increments (d_delta, d_beta, d_eps) of delta, beta and the linear diffusion coefficient eps [1/m];
a phantom is the sum of its solids, so its line integral is the sum of increment x chord length
(projection approximation, docs/physics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Stand-in for an infinite ray parameter [m]; far beyond any sample.
_FAR_M = 1.0e3
#: Below this |cos| a ray counts as parallel to a cylinder axis (or perpendicular to it).
_PARALLEL_EPS = 1.0e-12


def _as_vector(value: object, name: str) -> FloatArray:
    vec = np.asarray(value, dtype=np.float64)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return vec


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """Solid ellipsoid {p : |diag(1/a) R^T (p - c)| <= 1}.

    ``rotation`` has the principal axes (unit vectors in the sample frame) as its columns, in the
    order of ``semi_axes`` [m].
    """

    centre: FloatArray
    semi_axes: FloatArray
    rotation: FloatArray
    d_delta: float
    d_beta: float
    d_eps: float = 0.0
    label: str = "ellipsoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _as_vector(self.centre, "centre"))
        object.__setattr__(self, "semi_axes", _as_vector(self.semi_axes, "semi_axes"))
        rot = np.asarray(self.rotation, dtype=np.float64)
        if rot.shape != (3, 3) or not np.allclose(rot.T @ rot, np.eye(3), atol=1e-9):
            raise ValueError("rotation must be an orthonormal 3x3 matrix")
        object.__setattr__(self, "rotation", rot)
        if np.any(self.semi_axes <= 0):
            raise ValueError(f"semi_axes must be > 0, got {self.semi_axes}")

    def support(self, direction: FloatArray) -> float:
        """Half-extent [m] of the solid along the unit vector ``direction``."""
        return float(np.linalg.norm(self.semi_axes * (direction @ self.rotation)))

    def chord(self, origins: FloatArray, direction: FloatArray) -> FloatArray:
        """Chord length [m] of lines ``origins + t direction``; origins (..., 3), unit direction."""
        q = ((origins - self.centre) @ self.rotation) / self.semi_axes
        w = (direction @ self.rotation) / self.semi_axes
        a = float(w @ w)
        b = 2.0 * (q @ w)
        c = np.einsum("...i,...i->...", q, q) - 1.0
        disc = b * b - 4.0 * a * c
        return np.sqrt(np.maximum(disc, 0.0)) / a

    def contains(self, points: FloatArray) -> NDArray[np.bool_]:
        """Whether points (..., 3) [m] lie inside (boolean (...))."""
        q = ((points - self.centre) @ self.rotation) / self.semi_axes
        return np.einsum("...i,...i->...", q, q) <= 1.0


@dataclass(frozen=True, eq=False)
class Cylinder:
    """Solid finite cylinder: radius ``radius`` around the unit ``axis`` through ``centre``,
    |(p - c).axis| <= ``half_length`` (flat caps)."""

    centre: FloatArray
    axis: FloatArray
    radius: float
    half_length: float
    d_delta: float
    d_beta: float
    d_eps: float = 0.0
    label: str = "cylinder"

    def __post_init__(self) -> None:
        object.__setattr__(self, "centre", _as_vector(self.centre, "centre"))
        axis = _as_vector(self.axis, "axis")
        norm = float(np.linalg.norm(axis))
        if norm == 0:
            raise ValueError("axis must be non-zero")
        object.__setattr__(self, "axis", axis / norm)
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0, got {self.radius!r}")
        if not self.half_length > 0:
            raise ValueError(f"half_length must be > 0, got {self.half_length!r}")

    @property
    def start(self) -> FloatArray:
        """Centre of the cap at -half_length [m]."""
        return self.centre - self.half_length * self.axis

    @property
    def end(self) -> FloatArray:
        """Centre of the cap at +half_length [m]."""
        return self.centre + self.half_length * self.axis

    def support(self, direction: FloatArray) -> float:
        """Half-extent [m] of the solid along the unit vector ``direction``."""
        ca = abs(float(direction @ self.axis))
        return self.half_length * ca + self.radius * float(np.sqrt(max(0.0, 1.0 - ca * ca)))

    def chord(self, origins: FloatArray, direction: FloatArray) -> FloatArray:
        """Chord length [m] of lines ``origins + t direction``; origins (..., 3), unit direction.

        Intersection of the infinite-cylinder quadratic interval with the slab between the caps.
        """
        d = origins - self.centre
        h0 = d @ self.axis
        ua = float(direction @ self.axis)
        dperp = d - h0[..., None] * self.axis
        w = direction - ua * self.axis
        a = float(w @ w)
        c = np.einsum("...i,...i->...", dperp, dperp) - self.radius**2
        if a > _PARALLEL_EPS:
            b = 2.0 * (dperp @ w)
            disc = b * b - 4.0 * a * c
            root = np.sqrt(np.maximum(disc, 0.0))
            t1 = np.where(disc > 0, (-b - root) / (2.0 * a), 0.0)
            t2 = np.where(disc > 0, (-b + root) / (2.0 * a), 0.0)
        else:
            inside = c < 0
            t1 = np.where(inside, -_FAR_M, 0.0)
            t2 = np.where(inside, _FAR_M, 0.0)
        if abs(ua) > _PARALLEL_EPS:
            ta = (-self.half_length - h0) / ua
            tb = (self.half_length - h0) / ua
            c1 = np.minimum(ta, tb)
            c2 = np.maximum(ta, tb)
        else:
            inside = np.abs(h0) <= self.half_length
            c1 = np.where(inside, -_FAR_M, 0.0)
            c2 = np.where(inside, _FAR_M, 0.0)
        return np.maximum(np.minimum(t2, c2) - np.maximum(t1, c1), 0.0)

    def contains(self, points: FloatArray) -> NDArray[np.bool_]:
        """Whether points (..., 3) [m] lie inside (boolean (...))."""
        d = points - self.centre
        h = d @ self.axis
        r2 = np.einsum("...i,...i->...", d, d) - h * h
        return (r2 <= self.radius**2) & (np.abs(h) <= self.half_length)


Primitive = Ellipsoid | Cylinder
