"""In-context linear regression in Garg et al.'s format, with noise, sparsity, a finite task pool and
a curriculum.

Each prompt draws a task w (fresh Gaussian, or one of a fixed pool of M: Raventós et al.'s task
diversity) and points x_i ~ N(0, I_d); y_i = w·x_i + noise. Tokens interleave x_1, y_1, x_2, y_2, …:
an x token is [x, 0] and a y token is [y, 0…0, 1] (d + 1 dims, read in linearly). The model predicts
y_i at the x_i token, having seen i − 1 examples, so the loss is MSE at the x tokens. The curriculum
(Garg) grows the active input dimensions and the number of points with the training step; unused
coordinates of x are zero (which zeroes their part of w·x).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from workbench.config import Config
from workbench.tasks.base import Batch

CLASSES = ("dense", "sparse", "sign")


class RegressionConfig(Config):
    d: int = Field(5, ge=1, description="input dimension")
    n_points: int = Field(11, ge=1, description="(x, y) pairs per prompt")
    noise: float = Field(0.0, ge=0, description="std of the label noise (σ)")
    sparsity: int = Field(0, ge=0, description="k > 0: each w has k non-zero coordinates (sparse regression)")
    M: int | None = Field(None, ge=1, description="task pool size; None (or 'inf'): a fresh Gaussian w per prompt")
    mixture: dict[str, float] = Field(default_factory=dict, description="prompt classes and their weights, from "
                                      "dense | sparse (task.sparsity non-zeros) | sign (w ∈ {±1}^d); empty: one class")
    pool_seed: int = Field(0, ge=0, description="which pool: fixed across training")
    dims_start: int | None = Field(None, ge=1, description="curriculum: active dimensions at step 0 (None: all)")
    dims_every: int = Field(400, ge=1, description="one more active dimension every this many steps")
    points_start: int | None = Field(None, ge=1, description="curriculum: points at step 0 (None: all)")
    points_step: int = Field(2, ge=1)
    points_every: int = Field(400, ge=1, description="points_step more points every this many steps")

    @field_validator("M", mode="before")
    @classmethod
    def _infinite_pool(cls, value):
        return None if isinstance(value, str) and value.lower() in ("inf", "infinity", "∞") else value

    @model_validator(mode="after")
    def _check(self) -> RegressionConfig:
        if self.sparsity > self.d:
            raise ValueError(f"task.sparsity={self.sparsity} exceeds task.d={self.d}")
        if self.dims_start is not None and self.dims_start > self.d:
            raise ValueError(f"task.dims_start={self.dims_start} exceeds task.d={self.d}")
        for name, weight in self.mixture.items():
            if name not in CLASSES or weight <= 0:
                raise ValueError(f"task.mixture.{name}={weight}: classes are {', '.join(CLASSES)}, with weights > 0")
        if "sparse" in self.mixture and not self.sparsity:
            raise ValueError("task.mixture has a sparse class: set task.sparsity (non-zeros per w) to 1 … d")
        if self.mixture and self.M is not None:
            raise ValueError("task.mixture draws a fresh w per prompt; it cannot be combined with a pool (task.M)")
        return self

    @property
    def d_input(self) -> int:
        return self.d + 1

    @property
    def seq_len(self) -> int:
        return 2 * self.n_points


class LinearRegression:
    loss, causal = "mse", True  # causal: at x_i the model must not see y_i

    def __init__(self, cfg: RegressionConfig):
        self.cfg, self.seq_len, self.d_input = cfg, cfg.seq_len, cfg.d_input
        self.pool = None
        if cfg.M is not None:
            self.pool = self.draw_tasks(cfg.M, torch.Generator().manual_seed(cfg.pool_seed))

    def draw_tasks(self, n: int, generator: torch.Generator, kind: str | None = None) -> Float[Tensor, "n d"]:
        """`n` weight vectors of one class (default: sparse if task.sparsity, else dense)."""
        kind = kind or ("sparse" if self.cfg.sparsity else "dense")
        if kind == "sign":
            return torch.randint(0, 2, (n, self.cfg.d), generator=generator).float() * 2 - 1
        w = torch.randn(n, self.cfg.d, generator=generator)
        if kind == "sparse":
            keep = torch.rand(n, self.cfg.d, generator=generator).argsort(-1) < self.cfg.sparsity
            w = w * keep
        return w

    def draw_mixture(self, n: int, generator: torch.Generator) -> tuple[Float[Tensor, "n d"], Tensor]:
        """Weights from task.mixture, and each prompt's class (its index in the mixture)."""
        names = list(self.cfg.mixture)
        kind = torch.multinomial(torch.tensor(list(self.cfg.mixture.values())), n, replacement=True,
                                 generator=generator)
        by_class = [self.draw_tasks(n, generator, name) for name in names]
        return torch.stack(by_class)[kind, torch.arange(n)], kind

    def active_dims(self, step: int | None) -> int:
        c = self.cfg
        if step is None or c.dims_start is None:
            return c.d
        return min(c.d, c.dims_start + step // c.dims_every)

    def active_points(self, step: int | None) -> int:
        c = self.cfg
        if step is None or c.points_start is None:
            return c.n_points
        return min(c.n_points, c.points_start + c.points_step * (step // c.points_every))

    def sample(self, batch: int, generator: torch.Generator, step: int | None = None) -> Batch:
        c, dims, n = self.cfg, self.active_dims(step), self.active_points(step)
        x = torch.randn(batch, n, c.d, generator=generator)
        x[..., dims:] = 0
        meta = {}
        if self.cfg.mixture:
            w, meta["class"] = self.draw_mixture(batch, generator)
        elif self.pool is None:
            w = self.draw_tasks(batch, generator)
        else:
            w = self.pool[torch.randint(0, len(self.pool), (batch,), generator=generator)]
        y = (x @ w[:, :, None]).squeeze(-1) + c.noise * torch.randn(batch, n, generator=generator)
        return self.encode(x, y, meta={"w": w, "dims": torch.full((batch,), dims), **meta})

    def encode(self, x: Float[Tensor, "batch n d"], y: Float[Tensor, "batch n"], meta: dict) -> Batch:
        """Interleave x and y tokens; the target at each x token is its y."""
        batch, n, d = x.shape
        inputs = torch.zeros(batch, 2 * n, d + 1)
        inputs[:, 0::2, :d] = x
        inputs[:, 1::2, 0] = y
        inputs[:, 1::2, d] = 1.0
        targets = torch.zeros(batch, 2 * n)
        targets[:, 0::2] = y
        loss_mask = torch.zeros(batch, 2 * n, dtype=torch.bool)
        loss_mask[:, 0::2] = True
        return Batch(inputs, targets, loss_mask, {"x": x, "y": y, **meta})
