"""The embedding table's PCA initialisation against a thin SVD and scikit-learn's PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from fw.data import ArrayDataset
from fw_common.mappers import Embedding, principal_components


def _svd_scores(x: torch.Tensor, dim: int) -> torch.Tensor:
    centred = x.double() - x.double().mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:dim].T


@pytest.mark.parametrize("shape", [(500, 12), (7, 30)])  # blocks of rows; more columns than rows
def test_principal_components_match_a_thin_svd_up_to_sign(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen) * torch.linspace(3, 0.1, shape[1])
    got = principal_components(x, 3, block=64)
    ref = _svd_scores(x, 3)
    signs = torch.sign((got * ref).sum(dim=0))
    torch.testing.assert_close(got * signs, ref, rtol=1e-9, atol=1e-9)


def test_pca_init_matches_sklearn_pca_scaled_to_init_std():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=gen) * torch.tensor([5.0, 3, 2, 1, 1, 1, 1, 1])
    emb = Embedding(dim=2, init="pca", init_std=1e-4)
    emb.setup(ArrayDataset({"x": x}))
    ref = PCA(2, svd_solver="full").fit_transform(x.double().numpy())
    ref = ref / ref[:, 0].std(ddof=1) * 1e-4
    # the sign convention: each column's largest |score| is positive
    ref *= np.sign(ref[np.abs(ref).argmax(axis=0), [0, 1]])
    np.testing.assert_allclose(emb.weight.detach().double().numpy(), ref, rtol=1e-5, atol=1e-10)
