"""Embedding head: projection widths and L2 normalisation."""

from __future__ import annotations

import pytest
import torch

from fashionlens.models.embedding import EmbeddingHead


def _features(n: int = 6, width: int = 32) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(0)) * 5


@pytest.mark.parametrize(("dim", "hidden", "expected"), [(None, None, 32), (8, None, 8), (8, 16, 8), (None, 16, 32)])
@pytest.mark.parametrize("normalize", [True, False])
def test_head_output_width_and_norm(dim: int | None, hidden: int | None, expected: int, normalize: bool) -> None:
    head = EmbeddingHead(32, dim=dim, hidden=hidden, normalize=normalize)
    out = head(_features())
    assert head.out_features == expected and out.shape == (6, expected)
    norms = out.norm(dim=1)
    if normalize:
        assert torch.allclose(norms, torch.ones(6), atol=1e-5)
    else:
        assert not torch.allclose(norms, torch.ones(6), atol=1e-2)


def test_head_without_projection_is_the_features_themselves() -> None:
    features = _features()
    assert torch.equal(EmbeddingHead(32, dim=None, normalize=False)(features), features)
    assert not list(EmbeddingHead(32, dim=None).parameters())


def test_hidden_layer_makes_a_nonlinear_projection() -> None:
    linear = EmbeddingHead(32, dim=8, hidden=None, normalize=False)
    mlp = EmbeddingHead(32, dim=8, hidden=16, normalize=False)
    a, b = _features(1), _features(1) * -1
    assert torch.allclose(linear(a) + linear(b), 2 * linear.projection.bias, atol=1e-5)  # affine: f(x)+f(-x) = 2b
    assert not torch.allclose(mlp(a) + mlp(b), 2 * mlp.projection[2].bias, atol=1e-3)
