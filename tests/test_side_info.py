"""Tests for cfn_fast.data.side_info: encoders, count matrices and the SVD embedding."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfn_fast.data import side_info
from cfn_fast.data.side_info import build_count_matrix, low_rank_embedding, multi_hot, one_hot


# ----------------------------------------------------------------------------- one_hot
def test_one_hot_default_categories_are_sorted() -> None:
    mat, names = one_hot(["M", "F", "M"])
    assert names == ("F", "M")
    assert mat.dtype == np.float32
    np.testing.assert_array_equal(mat, [[0, 1], [1, 0], [0, 1]])


def test_one_hot_fixed_categories_order_and_prefix() -> None:
    mat, names = one_hot([2, 0, 2], categories=[2, 1, 0], prefix="occ=")
    assert names == ("occ=2", "occ=1", "occ=0")
    np.testing.assert_array_equal(mat, [[1, 0, 0], [0, 0, 1], [1, 0, 0]])


def test_one_hot_unknown_value() -> None:
    with pytest.raises(ValueError, match="outside the categories"):
        one_hot(["x", "y"], categories=["x"])
    mat, _ = one_hot(["x", "y"], categories=["x"], unknown="ignore")
    np.testing.assert_array_equal(mat, [[1], [0]])


def test_one_hot_numpy_scalars_match_python_categories() -> None:
    mat, _ = one_hot(np.array([3, 1], dtype=np.int64), categories=range(4))
    np.testing.assert_array_equal(mat, [[0, 0, 0, 1], [0, 1, 0, 0]])


# ----------------------------------------------------------------------------- multi_hot
def test_multi_hot_from_strings_and_lists() -> None:
    mat, names = multi_hot(["Comedy|Drama", ["Action"], "", None, float("nan"), "Drama"])
    assert names == ("Action", "Comedy", "Drama")
    np.testing.assert_array_equal(mat, [[0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_multi_hot_categories_sep_and_unknown() -> None:
    mat, names = multi_hot(["a;b", "c"], sep=";", categories=["c", "b", "a"], prefix="g=")
    assert names == ("g=c", "g=b", "g=a")
    np.testing.assert_array_equal(mat, [[0, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="outside the categories"):
        multi_hot(["a|z"], categories=["a"])
    mat, _ = multi_hot(["a|z"], categories=["a"], unknown="ignore")
    np.testing.assert_array_equal(mat, [[1]])


# ----------------------------------------------------------------------------- build_count_matrix
def test_build_count_matrix_counts_and_drops_unknown_rows() -> None:
    m, labels = build_count_matrix([0, 2, 0, -1, 0], ["funny", "dark", "funny", "funny", "dark"], n_rows=4)
    assert list(labels) == ["dark", "funny"]
    assert m.shape == (4, 2) and m.dtype == np.float32
    np.testing.assert_array_equal(m.toarray(), [[1, 2], [0, 0], [1, 0], [0, 0]])


def test_build_count_matrix_infers_rows_and_checks_input() -> None:
    m, _ = build_count_matrix(np.array([1, 1]), np.array([7, 7]))
    np.testing.assert_array_equal(m.toarray(), [[0], [2]])
    with pytest.raises(ValueError, match="equally long"):
        build_count_matrix([0, 1], ["a"])
    with pytest.raises(ValueError, match="out of range"):
        build_count_matrix([5], ["a"], n_rows=2)


# ----------------------------------------------------------------------------- low_rank_embedding
def _random_counts(rng: np.random.Generator, shape: tuple[int, int], density: float = 0.2) -> sp.csr_matrix:
    dense = rng.poisson(2.0, size=shape) * (rng.random(shape) < density)
    return sp.csr_matrix(dense.astype(np.float32))


def test_low_rank_embedding_full_rank_matches_svd() -> None:
    a = _random_counts(np.random.default_rng(0), (12, 7))
    emb = low_rank_embedding(a, rank=50)  # clipped to min(shape) = 7 on the dense path
    assert emb.shape == (12, 7) and emb.dtype == np.float32
    # E E^T = P D P^T does not depend on the SVD's sign choices, so it pins E down.
    p, d, _ = np.linalg.svd(a.toarray(), full_matrices=False)
    np.testing.assert_allclose(emb @ emb.T, (p * d) @ p.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=0) ** 2, d, rtol=1e-4)


def test_low_rank_embedding_is_sorted_signed_and_deterministic() -> None:
    a = _random_counts(np.random.default_rng(1), (30, 20))
    emb = low_rank_embedding(a, rank=5)
    assert emb.shape == (30, 5)
    norms = np.linalg.norm(emb, axis=0)  # = sqrt(singular values), decreasing
    assert np.all(np.diff(norms) <= 1e-6)
    biggest = emb[np.argmax(np.abs(emb), axis=0), np.arange(5)]
    assert np.all(biggest > 0)
    np.testing.assert_array_equal(emb, low_rank_embedding(a, rank=5))
    np.testing.assert_allclose(emb, low_rank_embedding(a.toarray(), rank=5))  # dense input too


def test_low_rank_embedding_sparse_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _random_counts(np.random.default_rng(2), (60, 40), density=0.3)
    dense = low_rank_embedding(a, rank=6)
    monkeypatch.setattr(side_info, "_DENSE_SVD_CELLS", 0)  # force ARPACK (svds)
    sparse = low_rank_embedding(a, rank=6)
    np.testing.assert_allclose(sparse, dense, rtol=1e-3, atol=1e-4)
    # svds needs k < min(shape): a rank above that is clipped to min(shape) - 1.
    assert low_rank_embedding(a, rank=100).shape == (60, 39)


def test_low_rank_embedding_edge_cases() -> None:
    assert low_rank_embedding(sp.csr_matrix((5, 3)), rank=4).shape == (5, 3)
    assert not low_rank_embedding(sp.csr_matrix((5, 3)), rank=4).any()
    assert low_rank_embedding(sp.csr_matrix((0, 3)), rank=2).shape == (0, 0)
    with pytest.raises(ValueError, match="rank"):
        low_rank_embedding(np.eye(3), rank=0)
