"""Attention as a max-margin token selector (Tarzanagh et al. 2023, "Max-Margin Token Selection in Attention
Mechanism" and "Transformers as Support Vector Machines").

One attention layer with query z = x_1 and a fixed linear head v predicts f(X) = vᵀ Xᵀ softmax(X W z). Trained by
normalised gradient descent on W with a logistic loss, W grows without bound and its direction converges to the
solution of the attention SVM for the tokens it selects (one per sequence, α_i):

    min ‖W‖_F   subject to   (x_{i α_i} − x_{i t})ᵀ W z_i ≥ 1   for every sequence i and every other token t

    AttentionSVM       `problems` independent problems side by side, with a stable analytic gradient
    attention_svm      the max-margin W for chosen tokens: the QP solved by scipy's SLSQP
    kkt_residuals      how well a solution meets its KKT conditions (multipliers by non-negative least squares)
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy.optimize import minimize, nnls
from torch import Tensor, nn


class AttentionSVM(nn.Module):
    """`problems` token-selection problems (n sequences of T unit-norm tokens in R^d, labels ±1, a fixed random
    head v), drawn from `seed`; the trained parameter is W `[problem d d]`, in float64 (the margins it reaches
    make float32 softmax tails underflow)."""

    def __init__(self, problems: int, n: int, tokens: int, d: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(problems, n, tokens, d, generator=g, dtype=torch.float64)
        self.register_buffer("X", x / x.norm(dim=-1, keepdim=True), persistent=False)
        self.register_buffer("Y", torch.randint(0, 2, (problems, n), generator=g).double() * 2 - 1, persistent=False)
        self.register_buffer("v", torch.randn(problems, d, generator=g, dtype=torch.float64), persistent=False)
        self.W = nn.Parameter(torch.zeros(problems, d, d, dtype=torch.float64))

    @property
    def z(self) -> Float[Tensor, "problem n d"]:
        return self.X[:, :, 0]

    @property
    def token_scores(self) -> Float[Tensor, "problem n token"]:
        """γ_it = Y_i vᵀ x_it: how much selecting token t helps sequence i (the 'optimal' token has the largest)."""
        return self.Y[..., None] * torch.einsum("pntd,pd->pnt", self.X, self.v)

    def attention(self) -> Float[Tensor, "problem n token"]:
        return torch.einsum("pntd,pde,pne->pnt", self.X, self.W, self.z).softmax(-1)

    def selected(self) -> Int[Tensor, "problem n"]:
        return self.attention().argmax(-1)

    def forward(self) -> Float[Tensor, "problem n"]:
        return (self.attention() * torch.einsum("pntd,pd->pnt", self.X, self.v)).sum(-1)

    def loss(self) -> Float[Tensor, " problem"]:
        return nn.functional.softplus(-self.Y * self()).mean(-1)

    @torch.no_grad()
    def gradient(self) -> Float[Tensor, "problem d d"]:
        """∂loss/∂W, written out so that no 1 − s is ever formed: d f/d score_t = s_t Σ_u s_u (a_t − a_u). Autograd's
        softmax backward cancels catastrophically once the selected token's weight rounds to 1."""
        s, a = self.attention(), torch.einsum("pntd,pd->pnt", self.X, self.v)
        f = (s * a).sum(-1)
        dloss_df = -self.Y * torch.sigmoid(-self.Y * f) / self.Y.shape[1]
        df_dscore = s * ((a[..., :, None] - a[..., None, :]) * s[..., None, :]).sum(-1)
        return torch.einsum("pn,pnt,pntd,pne->pde", dloss_df, df_dscore, self.X, self.z)

    @torch.no_grad()
    def normalised_step(self, lr: float) -> None:
        """W ← W − lr · ∇/‖∇‖ for each problem."""
        grad = self.gradient()
        self.W -= lr * grad / grad.flatten(1).norm(dim=1).clamp(min=1e-300)[:, None, None]


def svm_constraints(X: Float[Tensor, "n token d"], chosen: Int[Tensor, " n"]) -> np.ndarray:
    """Rows vec((x_{i α_i} − x_{i t}) z_iᵀ) for t ≠ α_i: the SVM's constraints read `A vec(W) ≥ 1`."""
    z = X[:, 0]
    rows = [torch.outer(X[i, chosen[i]] - X[i, t], z[i]).flatten()
            for i in range(X.shape[0]) for t in range(X.shape[1]) if t != chosen[i]]
    return torch.stack(rows).cpu().double().numpy()


def attention_svm(X: Float[Tensor, "n token d"], chosen: Int[Tensor, " n"]) -> Float[Tensor, "d d"]:
    """The minimum-norm W that makes every chosen token beat every other by a score margin of 1 (SLSQP)."""
    A = svm_constraints(X, chosen)
    d = X.shape[-1]
    result = minimize(lambda w: 0.5 * w @ w, np.zeros(d * d), jac=lambda w: w, method="SLSQP",
                      constraints=[{"type": "ineq", "fun": lambda w: A @ w - 1, "jac": lambda w: A}],
                      options={"maxiter": 1000, "ftol": 1e-12})
    if not result.success:
        raise RuntimeError(f"attention SVM: the QP did not converge ({result.message}); the chosen tokens may not "
                           "be separable")
    return torch.from_numpy(result.x).view(d, d)


def kkt_residuals(X: Float[Tensor, "n token d"], chosen: Int[Tensor, " n"], W: Float[Tensor, "d d"],
                  active_tol: float = 1e-6) -> dict[str, float]:
    """KKT conditions of the attention SVM at W: primal feasibility (A w ≥ 1), stationarity (w = Aᵀλ with λ ≥ 0,
    λ found by NNLS on the active constraints), complementary slackness (λ vanishes off the active set)."""
    A, w = svm_constraints(X, chosen), W.flatten().double().numpy()
    slack = A @ w - 1
    active = slack <= active_tol
    lam, _ = nnls(A[active].T, w)
    return {"primal_violation": float(max(0.0, -slack.min())),
            "stationarity": float(np.linalg.norm(A[active].T @ lam - w) / np.linalg.norm(w)),
            "active": int(active.sum()), "min_multiplier": float(lam.min()) if lam.size else 0.0}


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between matrices, over the last two axes."""
    a, b = a.flatten(-2), b.flatten(-2)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
