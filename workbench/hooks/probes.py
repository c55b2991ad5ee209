"""Linear probes on the residual stream: a multinomial logistic probe (what token comes k ahead: Future Lens),
a ridge probe for a scalar (nesting depth) and a structural distance probe (Hewitt & Manning 2019), each fit on
one set of sequences and scored on another, per layer."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def standardise(train: Float[Tensor, "N f"], test: Float[Tensor, "M f"]) -> tuple[Tensor, Tensor]:
    """Both sets scaled by the training set's per-feature mean and std."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def softmax_probe_accuracy(train: Float[Tensor, "N f"], train_labels: Int[Tensor, " N"], test: Float[Tensor, "M f"],
                           test_labels: Int[Tensor, " M"], classes: int, weight_decay: float = 1e-3,
                           steps: int = 100) -> float:
    """Fit a linear softmax probe (L-BFGS, L2 penalty) on standardised features; its accuracy on `test`."""
    train, test = standardise(train.double(), test.double())
    W = torch.zeros(train.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
    X = torch.cat([train, torch.ones(len(train), 1, dtype=torch.float64)], 1)
    # L-BFGS to a loose tolerance: probe accuracy settles long before the loss's last digits do
    optimizer = torch.optim.LBFGS([W], max_iter=steps, tolerance_grad=1e-5, tolerance_change=1e-7,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W, train_labels) + weight_decay * (W[:-1] ** 2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        logits = torch.cat([test, torch.ones(len(test), 1, dtype=torch.float64)], 1) @ W
    return float((logits.argmax(1) == test_labels).double().mean())


def ridge_predict(train: Float[Tensor, "N f"], train_targets: Float[Tensor, " N"], test: Float[Tensor, "M f"],
                  alpha: float = 1e-2) -> Float[Tensor, " M"]:
    """A ridge regression fit on standardised `train`, predicting `test`."""
    train, test = standardise(train.double(), test.double())
    A = torch.cat([train, torch.ones(len(train), 1, dtype=torch.float64)], 1)
    w = torch.linalg.solve(A.T @ A + alpha * len(A) * torch.eye(A.shape[1], dtype=torch.float64),
                           A.T @ train_targets.double())
    return torch.cat([test, torch.ones(len(test), 1, dtype=torch.float64)], 1) @ w


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's ρ with tied ranks averaged (tree distances and depths tie a lot), by scipy."""
    from scipy.stats import spearmanr  # imported here: scipy.stats adds ~1.4 s to every CLI start

    return float(spearmanr(a.flatten().double().numpy(), b.flatten().double().numpy()).statistic)


def pair_distances(features: Float[Tensor, "batch pos f"], B: Float[Tensor, "f rank"]
                   ) -> Float[Tensor, "batch pos pos"]:
    """‖B(h_i − h_j)‖² for every pair in each sequence, from the Gram matrix of Bh (one matmul, not pos² norms)."""
    projected = features @ B
    gram = projected @ projected.transpose(1, 2)
    norms = gram.diagonal(dim1=1, dim2=2)
    return norms[:, :, None] + norms[:, None, :] - 2 * gram


def fit_distance_probe(features: Float[Tensor, "batch pos f"], distances: Float[Tensor, "batch pos pos"],
                       rank: int = 64, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> Float[Tensor, "f rank"]:
    """Hewitt & Manning's structural probe: the B for which ‖B(h_i − h_j)‖² matches the tree distance, by Adam on
    the mean absolute error over all pairs (features standardised beforehand by the caller)."""
    g = torch.Generator().manual_seed(seed)
    B = (torch.randn(features.shape[-1], rank, generator=g) / features.shape[-1] ** 0.5).requires_grad_()
    optimizer = torch.optim.Adam([B], lr=lr)
    upper = torch.ones(distances.shape[1:], dtype=torch.bool).triu(1)
    for _ in range(steps):
        loss = (pair_distances(features, B) - distances)[:, upper].abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return B.detach()


def distance_spearman(predicted: Float[Tensor, "batch pos pos"], true: Float[Tensor, "batch pos pos"]) -> float:
    """Spearman's ρ between predicted and true distances over each sequence's pairs, averaged over sequences."""
    upper = torch.ones(true.shape[1:], dtype=torch.bool).triu(1)
    return sum(spearman(p[upper], t[upper]) for p, t in zip(predicted, true, strict=True)) / len(true)
