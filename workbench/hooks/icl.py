"""In-context-learning probes: optimal baselines, error curves, the ICL score and linear probes.

Regression baselines predict y for the query x_{k+1} from the k examples before it, for every k at once
(vectorised over the batch): OLS (min-norm), ridge (the posterior mean under w ~ N(0, I) and noise σ²),
dMMSE (the posterior mean over a finite task pool), k-NN, averaging (w = mean yᵢxᵢ) and zero. Token
baselines: the Bayes-optimal in-context bigram estimator (add-α counts) and add-one unigram counts.

Probes (Akyürek et al.) are ridge regressions from a hook point's activations to a target quantity,
scored by R² on held-out prompts, beside the same probe on a randomly initialised model (the control).
TransformerLens 4's `tools.analysis.sparse_probing` fits k-sparse *binary* logistic probes; these targets
are continuous vectors (w_OLS, Xᵀy, a prediction), so the ridge fit is written here.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.device import device_of

# --- regression baselines: prediction for the query x_{k+1} given (x_1, y_1) … (x_k, y_k), k = 0 … n−1 ---


def _ols(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    w = torch.linalg.pinv(X) @ Y[..., None]  # min-norm least squares
    return (xq[:, None] @ w).reshape(-1)


def _ridge(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    if noise == 0:  # the posterior mean's σ → 0 limit is the min-norm solution
        return _ols(X, Y, xq, noise, pool)
    d = X.shape[-1]
    A = X.transpose(1, 2) @ X + noise**2 * torch.eye(d, device=X.device)
    w = torch.linalg.solve(A, X.transpose(1, 2) @ Y[..., None])
    return (xq[:, None] @ w).reshape(-1)


def _dmmse(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    if pool is None:
        raise ValueError("dmmse needs the task pool (task.M must be finite)")
    residual = ((Y[:, None, :] - (X[:, None] @ pool[None, :, :, None]).squeeze(-1)) ** 2).sum(-1)  # [batch M]
    posterior = (-residual / (2 * max(noise, 1e-3) ** 2)).softmax(-1)
    return ((posterior @ pool) * xq).sum(-1)


def _sign_bayes(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    """The posterior mean when w is uniform on {±1}^d: dmmse over all 2^d sign vectors."""
    d = X.shape[-1]
    signs = ((torch.arange(2**d)[:, None] >> torch.arange(d)) & 1).to(X) * 2 - 1
    return _dmmse(X, Y, xq, noise, signs)


def _sparse_bayes(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None, sparsity: int = 1) -> Tensor:
    """The posterior mean when w has `sparsity` N(0, 1) non-zeros on a uniform random support: per support S,
    ridge on X_S weighted by the marginal likelihood of y, N(0, X_S X_Sᵀ + σ²I), computed in the |S|-dim form
    (−2 log p = (yᵀy − bᵀA⁻¹b)/σ² + log det(A/σ²) + const, A = X_SᵀX_S + σ²I, b = X_Sᵀy)."""
    d, var = X.shape[-1], max(noise, 1e-3) ** 2
    supports = torch.tensor(list(itertools.combinations(range(d), sparsity)), device=X.device)  # [S s]
    XS = X[:, :, supports].movedim(2, 1)  # [batch S k s]
    A = XS.transpose(-1, -2) @ XS + var * torch.eye(sparsity, device=X.device)
    b = XS.transpose(-1, -2) @ Y[:, None, :, None]  # [batch S s 1]
    w = torch.linalg.solve(A, b)  # each support's posterior mean
    log_p = ((b * w).sum((-1, -2)) / var - torch.logdet(A / var)) / 2  # up to terms the same for every S
    prediction = (xq[:, supports] * w.squeeze(-1)).sum(-1)  # [batch S]
    return (log_p.softmax(-1) * prediction).sum(-1)


def _knn(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None, neighbours: int = 3) -> Tensor:
    if X.shape[1] == 0:
        return torch.zeros(len(xq), device=xq.device)
    nearest = (X - xq[:, None]).norm(dim=-1).topk(min(neighbours, X.shape[1]), largest=False).indices
    return Y.gather(1, nearest).mean(-1)


def _averaging(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    if X.shape[1] == 0:
        return torch.zeros(len(xq), device=xq.device)
    return ((Y[..., None] * X).mean(1) * xq).sum(-1)


def _zero(X: Tensor, Y: Tensor, xq: Tensor, noise: float, pool: Tensor | None) -> Tensor:
    return torch.zeros(len(xq), device=xq.device)


REGRESSION_BASELINES: dict[str, Callable] = {
    "ols": _ols, "ridge": _ridge, "dmmse": _dmmse, "knn": _knn, "averaging": _averaging, "zero": _zero,
    "sign-bayes": _sign_bayes, "sparse-bayes": _sparse_bayes,
}


def baseline_predictions(x: Float[Tensor, "batch n d"], y: Float[Tensor, "batch n"], method: str,
                         noise: float = 0.0, pool: Float[Tensor, "M d"] | None = None,
                         **options) -> Float[Tensor, "batch n"]:
    """A baseline's prediction at every query position k (from the k examples before it); `options` go to the
    baselines that take them (e.g. `sparsity` to sparse-bayes)."""
    if method not in REGRESSION_BASELINES:
        raise ValueError(f"baseline {method!r} unknown; choose from {', '.join(REGRESSION_BASELINES)}")
    fn = REGRESSION_BASELINES[method]
    options = {k: v for k, v in options.items() if k in inspect.signature(fn).parameters}
    return torch.stack([fn(x[:, :k], y[:, :k], x[:, k], noise, pool, **options) for k in range(x.shape[1])], dim=1)


@torch.no_grad()
def model_predictions(model: nn.Module, batch) -> Float[Tensor, "batch n"]:
    """The model's prediction of y at each x token (the positions its loss mask selects)."""
    batch = batch.to(device_of(model))
    out = model(batch.inputs, attention_mask=batch.attention_mask).squeeze(-1)
    return out[batch.loss_mask].reshape(len(out), -1).cpu()


def squared_error_curve(pred: Float[Tensor, "batch n"], y: Float[Tensor, "batch n"],
                        dims: Tensor | float) -> Float[Tensor, " n"]:
    """Mean squared error at each number of in-context examples, divided by the active dimension (Garg)."""
    dims = torch.as_tensor(dims, dtype=pred.dtype).reshape(-1, 1)
    return ((pred - y) ** 2 / dims).mean(0)


def regression_error_curves(model: nn.Module, batch, baselines: list[str], noise: float = 0.0,
                            pool: Tensor | None = None, **options) -> pd.DataFrame:
    """Errors / d against the number of in-context examples k: the model and each baseline, one column each."""
    x, y, dims = batch.meta["x"], batch.meta["y"], batch.meta["dims"]
    curves = {"model": squared_error_curve(model_predictions(model, batch), y, dims)}
    for name in baselines:
        curves[name] = squared_error_curve(baseline_predictions(x, y, name, noise, pool, **options), y, dims)
    return pd.DataFrame({"k": range(x.shape[1]), **{k: v.tolist() for k, v in curves.items()}})


# --- token baselines ---


def bigram_bayes(tokens: Int[Tensor, "batch pos"], states: int, alpha: float = 1.0) -> Float[Tensor, "batch pos state"]:
    """Posterior predictive of the next token under a Dirichlet(α) prior on every transition row, from the
    bigrams seen up to each position: (count(current → j) + α) / (count(current → ·) + α·states)."""
    onehot = nn.functional.one_hot(tokens, states).float()  # [batch pos state]
    pairs = onehot[:, :-1, :, None] * onehot[:, 1:, None, :]  # transition t−1 → t
    counts = torch.cat([torch.zeros_like(pairs[:, :1]), pairs.cumsum(1)], dim=1)  # [batch pos from to], up to t
    rows = (counts * onehot[..., None]).sum(2)  # the current token's row
    return (rows + alpha) / (rows.sum(-1, keepdim=True) + alpha * states)


def unigram_counts(tokens: Int[Tensor, "batch pos"], states: int) -> Float[Tensor, "batch pos state"]:
    """Add-one unigram counts of the tokens seen up to each position: the context-blind-to-order baseline."""
    counts = nn.functional.one_hot(tokens, states).float().cumsum(1)
    return (counts + 1) / (counts.sum(-1, keepdim=True) + states)


def kl_divergence(p: Float[Tensor, "*rest state"], q: Float[Tensor, "*rest state"]) -> Float[Tensor, "*rest"]:
    """KL(p ‖ q) in nats."""
    return (p * (p.clamp(min=1e-12).log() - q.clamp(min=1e-12).log())).sum(-1)


def icl_score(losses: Float[Tensor, "batch pos"], early: int, late: int) -> float:
    """Olsson et al.'s in-context-learning score: loss at a late position minus loss at an early one
    (negative: the model predicts better with more context)."""
    return float(losses[:, late].mean() - losses[:, early].mean())


# --- probes ---


@torch.no_grad()
def activations(model: nn.Module, inputs: Tensor, names: list[str], attention_mask: Tensor | None = None
                ) -> dict[str, Tensor]:
    """Cache only `names`, refusing hook points the model does not have with the list it does have."""
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        known = ", ".join(sorted(n for n in model.hook_dict if "resid" in n)[:8])
        raise ValueError(f"probe: hook point {missing[0]!r} does not exist in this model; e.g. {known}, …")
    _, cache = model.run_with_cache(inputs.to(device_of(model)), attention_mask=attention_mask,
                                    names_filter=lambda n: n in names)
    return {n: cache[n].float().cpu() for n in names}


def ridge_r2(features: Float[Tensor, "N f"], targets: Float[Tensor, "N t"], alpha: float = 1e-2,
             train_fraction: float = 0.5) -> float:
    """Fit a ridge probe on the first part of the rows, return R² on the rest (summed over target dims)."""
    n_train = int(len(features) * train_fraction)
    mean, std = features[:n_train].mean(0), features[:n_train].std(0).clamp(min=1e-6)
    F_ = torch.cat([(features - mean) / std, torch.ones(len(features), 1)], dim=1)
    A, B = F_[:n_train], targets[:n_train]
    w = torch.linalg.solve(A.T @ A + alpha * n_train * torch.eye(A.shape[1]), A.T @ B)
    residual = ((F_[n_train:] @ w - targets[n_train:]) ** 2).sum()
    total = ((targets[n_train:] - B.mean(0)) ** 2).sum()
    return float(1 - residual / total.clamp(min=1e-12))


def residual_hooks(model: nn.Module) -> list[str]:
    """The residual stream after the embedding and after each layer; in a looped model after each iteration."""
    cfg = model.cfg
    if getattr(cfg, "loops", 1) > 1:
        return ["hook_embed"] + [f"blocks.{layer}.loop.{t}.hook_resid_post"
                                 for layer in range(cfg.n_layers) for t in range(cfg.loops)]
    return ["hook_embed"] + [f"blocks.{layer}.hook_resid_post" for layer in range(cfg.n_layers)]


def probe_by_layer(model: nn.Module, inputs: Tensor, target: Float[Tensor, "N t"], select: Tensor,
                   control: nn.Module | None = None, hook: str | None = None,
                   attention_mask: Tensor | None = None) -> pd.DataFrame:
    """R² of a ridge probe from each layer's residual stream (and the embedding; each iteration's in a looped
    model) to `target`, on the positions `select` picks out of [batch pos] (one row of `target` per selected
    position); the control model's R² beside it. `hook` (e.g. "blocks.{layer}.attn.hook_z") probes another
    hook point per layer instead."""
    names = (residual_hooks(model) if hook is None
             else ["hook_embed"] + [hook.format(layer=layer) for layer in range(model.cfg.n_layers)])
    rows = []
    runs = {"model": model} | ({"control": control} if control is not None else {})
    acts = {key: activations(m, inputs, names, attention_mask) for key, m in runs.items()}
    for layer, name in enumerate(names):
        row = {"layer": layer - 1, "hook": name}  # layer −1: the embedding
        for key in runs:
            row["r2" if key == "model" else "control_r2"] = ridge_r2(acts[key][name][select], target)
        rows.append(row)
    return pd.DataFrame(rows)


def regression_probes(model: nn.Module, batch, control: nn.Module | None = None) -> dict[str, pd.DataFrame]:
    """Akyürek et al.'s probes at the last x token of regression prompts, to what least squares on the examples
    before it would hold: the prediction w_OLS·x_q ("scalar"), the vectors w_OLS and Xᵀy; R² per layer."""
    x, y = batch.meta["x"], batch.meta["y"]
    X, Y, xq = x[:, :-1], y[:, :-1], x[:, -1]
    w_ols = torch.linalg.pinv(X) @ Y[..., None]
    select = torch.zeros(batch.inputs.shape[:2], dtype=torch.bool)
    select[:, -2] = True  # the query's x token
    targets = {"scalar": (xq[:, None] @ w_ols).reshape(-1, 1), "w_ols": w_ols.squeeze(-1),
               "xty": (X.transpose(1, 2) @ Y[..., None]).squeeze(-1)}
    return {name: probe_by_layer(model, batch.inputs, target, select, control=control)
            for name, target in targets.items()}


def fresh_prompt_predictions(model: nn.Module, task, seed: int, baselines: list[str], noise: float = 0.0,
                             pool: Tensor | None = None) -> pd.DataFrame:
    """One freshly drawn regression prompt: the true y, the model's and each baseline's prediction at every k."""
    batch = task.sample(1, torch.Generator().manual_seed(seed))
    x, y = batch.meta["x"], batch.meta["y"]
    columns = {"truth": y[0], "model": model_predictions(model, batch)[0]}
    columns |= {name: baseline_predictions(x, y, name, noise, pool)[0] for name in baselines}
    return pd.DataFrame({"k": range(x.shape[1]), **{k: v.tolist() for k, v in columns.items()}})


# --- boolean-function baselines: a 0/1 prediction for example k from the k examples before it ---


def elimination_learner(x: Float[Tensor, "batch k n"], y: Float[Tensor, "batch k"]) -> Float[Tensor, "batch k"]:
    """The classic learner for conjunctions: keep every literal (x_j = +1 or x_j = −1) that all positive
    examples so far satisfy, predict positive iff the query satisfies every kept literal (with no positive
    example yet, both literals of each variable are kept, so it predicts negative)."""
    positive = (y > 0.5)[..., None]
    seen_minus = ((x < 0) & positive).cumsum(1) - ((x < 0) & positive).int()  # before example k
    seen_plus = ((x > 0) & positive).cumsum(1) - ((x > 0) & positive).int()
    keep_plus, keep_minus = seen_minus == 0, seen_plus == 0  # literal x_j=+1 survives if no positive had −1
    violates = (keep_plus & (x < 0)) | (keep_minus & (x > 0))
    return (~violates.any(-1)).float()


def parity_bayes(x: Float[Tensor, "batch k n"], y: Float[Tensor, "batch k"], bits: int) -> Float[Tensor, "batch k"]:
    """Bayes-optimal prediction for a sparse parity of `bits` of the n inputs under a uniform prior over
    subsets: the majority vote of the subsets consistent with every example so far (ties → 0)."""
    n = x.shape[-1]
    subsets = torch.combinations(torch.arange(n), bits)  # [S bits]
    negative = (x < 0).float()[..., subsets].sum(-1) % 2  # [batch k S]: each subset's parity of each example
    agrees = (negative == y[..., None]).float()
    consistent = torch.cat([torch.ones_like(agrees[:, :1]), agrees.cumprod(1)[:, :-1]], dim=1)  # before k
    vote = (consistent * negative).sum(-1) / consistent.sum(-1).clamp(min=1)
    return (vote > 0.5).float()


def in_context_majority(y: Float[Tensor, "batch k"]) -> Float[Tensor, "batch k"]:
    """Predict the more frequent label among the examples before k (ties and no examples → 0)."""
    before = torch.cat([torch.zeros_like(y[:, :1]), y.cumsum(1)[:, :-1]], dim=1)
    count = torch.arange(y.shape[1], device=y.device)
    return (before > count / 2).float()


@torch.no_grad()
def accuracy_curve(predictions: Float[Tensor, "batch k"], y: Float[Tensor, "batch k"]) -> Float[Tensor, " k"]:
    """Accuracy at each number of in-context examples."""
    return ((predictions > 0.5) == (y > 0.5)).float().mean(0)


@torch.no_grad()
def query_accuracy(model: nn.Module, batch) -> float:
    """Share of sequences whose last-position argmax is the target there (few-shot classification)."""
    batch = batch.to(device_of(model))
    output = model(batch.inputs, attention_mask=batch.attention_mask)
    return float((output[:, -1].argmax(-1) == batch.targets[:, -1]).float().mean())


def iteration_outputs(model: nn.Module, inputs: Tensor, attention_mask: Tensor | None = None
                      ) -> Float[Tensor, "loop batch pos d_out"]:
    """The read-out after every iteration of the last block of a looped model (Yang et al.): `model.read_out`
    of each `blocks.{last}.loop.{t}.hook_resid_post`. Keeps gradients (TL's cache detaches), so a loss over
    the last iterations can train through it; wrap in `torch.no_grad()` to evaluate."""
    last, loops = model.cfg.n_layers - 1, model.cfg.loops
    if loops < 2:
        raise ValueError(f"iteration_outputs needs a looped model (model.loops ≥ 2); this one has loops={loops}")
    states: list[Tensor] = []
    hooks = [(f"blocks.{last}.loop.{t}.hook_resid_post", lambda x, hook: states.append(x)) for t in range(loops)]
    with model.hooks(fwd_hooks=hooks):
        model(inputs, attention_mask=attention_mask)
    return torch.stack([model.read_out(state) for state in states])
