"""The fit buffer pool: reuse, one shape at a time, nothing handed out twice."""

from __future__ import annotations

import numpy as np
import pytest

from recon.fitpool import FitPool
from recon.retrieval import StepFit


def test_a_fit_given_back_is_the_next_one_taken_and_only_once() -> None:
    pool = FitPool()
    pool.use_shape((4, 6))
    fit = pool.take()
    assert (fit.a0.shape, fit.a0.dtype, fit.c1.dtype) == ((4, 6), np.float32, np.complex64)
    assert pool.free == 0
    pool.give([fit, fit])  # given twice by mistake: kept once
    assert pool.free == 1
    assert pool.take() is fit
    assert pool.take() is not fit  # the pool is empty again: a new buffer


def test_buffers_of_another_shape_or_views_are_not_kept() -> None:
    pool = FitPool()
    pool.use_shape((4, 6))
    kept = pool.take()
    pool.give([kept])
    pool.give([StepFit(np.zeros((3, 6), np.float32), np.zeros((3, 6), np.complex64))])
    big = StepFit(np.zeros((8, 6), np.float32), np.zeros((8, 6), np.complex64))
    pool.give([StepFit(big.a0[:4], big.c1[:4])])  # a view: the memory belongs to another array
    assert pool.free == 1
    pool.use_shape((4, 6))  # the same shape: kept
    assert pool.free == 1
    pool.use_shape((5, 6))  # a scan of another shape: the old buffers are dropped
    assert pool.free == 0
    assert pool.take().a0.shape == (5, 6)


def test_reserved_buffers_are_the_ones_taken() -> None:
    pool = FitPool()
    pool.use_shape((4, 6))
    pool.reserve(3)
    assert pool.free == 3
    taken = [pool.take() for _ in range(3)]
    assert all(np.all(f.a0 == 0) and np.all(f.c1 == 0) for f in taken)  # written at reserve
    assert pool.free == 0
    pool.reserve(2)  # tops up to 2 free
    assert pool.free == 2


def test_misuse_is_refused() -> None:
    with pytest.raises(RuntimeError, match="use_shape"):
        FitPool().reserve(2)
    with pytest.raises(RuntimeError, match="use_shape"):
        FitPool().take()
    with pytest.raises(ValueError, match="shape"):
        FitPool().use_shape((0, 6))
