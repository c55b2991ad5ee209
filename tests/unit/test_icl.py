"""In-context-learning baselines against references, the ICL tasks, and probes."""

import itertools

import numpy as np
import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.icl import (
    baseline_predictions,
    bigram_bayes,
    kl_divergence,
    probe_by_layer,
    ridge_r2,
    unigram_counts,
)
from workbench.models import ModelConfig, build_model
from workbench.tasks.markov import MarkovChains, MarkovConfig
from workbench.tasks.regression import LinearRegression, RegressionConfig

G = torch.Generator().manual_seed(0)


def regression_batch(**kw):
    return LinearRegression(RegressionConfig(d=4, n_points=9, **kw)).sample(16, torch.Generator().manual_seed(1))


def test_ols_equals_numpy_lstsq_min_norm():
    batch = regression_batch()
    x, y = batch.meta["x"], batch.meta["y"]
    pred = baseline_predictions(x, y, "ols")
    for b in range(3):
        for k in (0, 2, 4, 8):  # under-, exactly and over-determined
            if k == 0:
                assert pred[b, 0] == 0
                continue
            w = np.linalg.lstsq(x[b, :k].double().numpy(), y[b, :k].double().numpy(), rcond=None)[0]
            assert pred[b, k].item() == pytest.approx(float(x[b, k].double().numpy() @ w), abs=1e-4)


def test_ridge_is_the_closed_form_posterior_mean():
    batch = regression_batch(noise=0.5)
    x, y = batch.meta["x"].double(), batch.meta["y"].double()
    pred = baseline_predictions(x, y, "ridge", noise=0.5)
    X, Y = x[0, :5], y[0, :5]
    cov = torch.linalg.inv(X.T @ X / 0.25 + torch.eye(4))  # posterior covariance under w ~ N(0, I)
    mean = cov @ X.T @ Y / 0.25
    assert pred[0, 5].item() == pytest.approx(float(x[0, 5] @ mean), rel=1e-6)


def test_dmmse_on_a_one_task_pool_returns_that_task():
    task = LinearRegression(RegressionConfig(d=4, n_points=6, M=1, noise=0.1))
    batch = task.sample(8, torch.Generator().manual_seed(2))
    pred = baseline_predictions(batch.meta["x"], batch.meta["y"], "dmmse", noise=0.1, pool=task.pool)
    torch.testing.assert_close(pred, batch.meta["x"] @ task.pool[0])


def test_knn_averaging_and_zero_by_hand():
    x = torch.tensor([[[1.0, 0], [0, 1], [2, 0], [1.1, 0]]])
    y = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    assert baseline_predictions(x, y, "knn")[0, 3].item() == pytest.approx((1 + 3 + 2) / 3)
    assert baseline_predictions(x, y, "averaging")[0, 2].item() == pytest.approx(((1 * 1 + 0) / 2) * 2)
    assert baseline_predictions(x, y, "zero").abs().sum() == 0


def test_regression_format_curriculum_and_pool():
    task = LinearRegression(RegressionConfig(d=5, n_points=11, dims_start=2, points_start=5, dims_every=400,
                                             points_every=400))
    early = task.sample(4, torch.Generator().manual_seed(0), step=0)
    late = task.sample(4, torch.Generator().manual_seed(0), step=1300)
    assert early.inputs.shape == (4, 10, 6) and late.inputs.shape == (4, 22, 6)  # 5 points → 5 + 2·3 = 11
    assert task.sample(4, torch.Generator().manual_seed(0), step=450).inputs.shape == (4, 14, 6)  # 7 points
    assert task.active_dims(450) == 3 and task.active_dims(5000) == 5
    assert (early.meta["x"][..., 2:] == 0).all() and (late.meta["x"][..., :5] != 0).all()
    assert (early.inputs[:, 1::2, -1] == 1).all() and (early.inputs[:, 0::2, -1] == 0).all()
    torch.testing.assert_close(early.targets[:, 0::2], early.meta["y"])
    pool = LinearRegression(RegressionConfig(d=3, M=4))
    drawn = pool.sample(64, torch.Generator().manual_seed(0)).meta["w"]
    assert {tuple(w.tolist()) for w in drawn} <= {tuple(w.tolist()) for w in pool.pool}
    assert RegressionConfig(M="inf").M is None


def test_bigram_bayes_equals_add_one_counts_by_hand():
    tokens = torch.tensor([[0, 1, 0, 1, 0, 2]])
    probs = bigram_bayes(tokens, 3)
    # at position 4 (token 0) the context holds transitions 0→1 twice, 1→0 twice: row of 0 is (0, 2, 0)
    torch.testing.assert_close(probs[0, 4], torch.tensor([1, 3, 1]) / 5.0)
    torch.testing.assert_close(probs[0, 0], torch.full((3,), 1 / 3))
    torch.testing.assert_close(unigram_counts(tokens, 3)[0, 2], torch.tensor([3, 2, 1]) / 6.0)


def test_markov_chains_follow_their_own_transition_rows():
    task = MarkovChains(MarkovConfig(states=3, seq_len=400))
    batch = task.sample(32, torch.Generator().manual_seed(0))
    P = batch.meta["transitions"]
    torch.testing.assert_close(P.sum(-1), torch.ones(32, 3))
    assert (P[torch.arange(32)[:, None], batch.tokens[:, :-1], batch.tokens[:, 1:]] > 0).all()
    # the Bayes estimator converges to each chain's own rows: late KL to the truth is small
    truth = P[torch.arange(32)[:, None], batch.tokens]
    assert kl_divergence(truth[:, -50:], bigram_bayes(batch.tokens, 3)[:, -50:]).mean() < 0.02


def test_the_markov_experiment_measures_against_bayes_with_the_tasks_own_prior():
    from workbench import experiments

    exp = experiments.get("icl-markov")
    cfg = exp.config("smoke", {"task.concentration": 4})
    batch = exp.eval_batch(cfg, 32)

    class Bayes(torch.nn.Module):  # predicts exactly the Bayes law of Dirichlet(4) rows
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(()))

        def forward(self, tokens):
            return bigram_bayes(tokens, cfg.task.states, alpha=4).log()

    assert exp.divergences(Bayes(), cfg, batch)["model"].max() < 1e-5


def test_ridge_r2_recovers_a_linear_target_and_not_noise():
    features = torch.randn(400, 10, generator=G)
    target = features[:, :3] @ torch.randn(3, 2, generator=G)
    assert ridge_r2(features, target, alpha=1e-4) > 0.99
    assert ridge_r2(features, torch.randn(400, 2, generator=G)) < 0.1


def test_probe_by_layer_refuses_missing_hook_points_and_reports_each_layer():
    model = build_model(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=5, n_ctx=8), seed=0)
    tokens = torch.randint(0, 5, (40, 8), generator=G)
    select = torch.zeros(40, 8, dtype=torch.bool)
    select[:, -1] = True
    target = torch.nn.functional.one_hot(tokens[:, -1], 5).float()  # the current token: linearly decodable
    table = probe_by_layer(model, tokens, target, select, control=build_model(model.cfg, seed=1))
    assert list(table.layer) == [-1, 0, 1] and table.r2.iloc[0] > 0.9
    with pytest.raises(ValueError, match="hook point 'blocks.0.hook_nope' does not exist"):
        probe_by_layer(model, tokens, target, select, hook="blocks.{layer}.hook_nope")


def test_elimination_learner_on_a_hand_made_prompt():
    from workbench.hooks.icl import elimination_learner

    # n = 3, target conjunction x0 ∧ ¬x2. Examples: a positive (+,+,−), a negative, a positive (+,−,−), queries.
    x = torch.tensor([[[1, 1, -1], [-1, 1, -1], [1, -1, -1], [1, 1, -1], [1, 1, 1], [-1, -1, -1]]]).float()
    y = torch.tensor([[1, 0, 1, 1, 0, 0]]).float()
    pred = elimination_learner(x, y)
    # k=0: no positive seen → negative. k=1: literals {x0, x1, ¬x2} kept → (−,+,−) violates x0 → 0.
    # k=2: same literals; (+,−,−) violates x1 → 0 (the learner errs). k=3: x1 eliminated → {x0, ¬x2}: (+,+,−) → 1.
    # k=4: (+,+,+) violates ¬x2 → 0. k=5: (−,−,−) violates x0 → 0.
    assert pred.tolist() == [[0, 0, 0, 1, 0, 0]]


def test_parity_bayes_and_in_context_majority():
    from workbench.hooks.icl import in_context_majority, parity_bayes
    from workbench.tasks.boolean import BooleanConfig, BooleanFunctions

    task = BooleanFunctions(BooleanConfig(n=6, examples=40, function="parity", parity_bits=2))
    batch = task.sample(256, torch.Generator().manual_seed(0))
    pred = parity_bayes(batch.meta["x"], batch.meta["y"], 2)
    accuracy = (pred == batch.meta["y"]).float().mean(0)
    assert accuracy[:1].item() < 0.6 and accuracy[-10:].min().item() == 1.0  # 15 subsets: pinned down by k = 30
    assert in_context_majority(torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]])).tolist() == [[0, 1, 1, 1, 0]]


def test_boolean_task_statistics_and_pair_format():
    from workbench.tasks.boolean import BooleanConfig, BooleanFunctions

    batch = BooleanFunctions(BooleanConfig()).sample(2000, torch.Generator().manual_seed(0))
    assert abs(batch.meta["y"].mean().item() - 0.31) < 0.02  # Bhattamishra et al.'s conjunction mix: 31 % positive
    x, y = batch.meta["x"], batch.meta["y"]
    torch.testing.assert_close(batch.inputs[:, 1:, 10:20], x[:, :-1])  # token i carries x_{i−1} and y_{i−1}
    torch.testing.assert_close(batch.inputs[:, 1:, 20], 2 * y[:, :-1] - 1)
    assert (batch.inputs[:, 0, 10:] == 0).all()
    conj = (x * batch.meta["signs"][:, None] > 0) | ~batch.meta["used"][:, None]
    torch.testing.assert_close(y, conj.all(-1).float())


def test_bursty_test_sets_are_what_they_claim():
    from workbench.tasks.bursty import BurstyClassification, BurstyConfig

    task = BurstyClassification(BurstyConfig(K=64, L=32, eps=0.0))
    g = torch.Generator().manual_seed(0)
    content = slice(0, 63)

    def query_label_in_context(batch):  # the target appears among the context's label tokens
        labels = batch.meta["labels"]
        return (labels[:, :-1] == labels[:, -1:]).any(-1)

    train = task.sample(2000, g)
    assert train.inputs.shape == (2000, 17, 80) and train.loss_mask[:, -1].all() and train.loss_mask.sum() == 2000
    torch.testing.assert_close(train.inputs[0, :, 63:], torch.eye(17))  # one-hot positions
    assert 0.87 < train.meta["bursty"].float().mean() < 0.93
    bursty = train.meta["classes"][train.meta["bursty"]]
    assert all(sorted(torch.bincount(row).tolist())[-2:] == [4, 5] for row in bursty[:50])  # 2 classes × 4 + query
    # ε = 0: an item token is exactly its class mean, rescaled
    torch.testing.assert_close(train.inputs[0, 0, content], task.means[train.meta["classes"][0, 0]])

    iw = task.sample_split("iw", 500, g)
    assert not (iw.meta["classes"][:, :-1] == iw.meta["classes"][:, -1:]).any()
    assert (iw.targets[:, -1] == task.label_of[iw.meta["classes"][:, -1]]).all()

    ic2 = task.sample_split("ic2", 500, g)
    assert query_label_in_context(ic2).all()
    assert (ic2.targets[:, -1] != task.label_of[ic2.meta["classes"][:, -1]]).all()  # swapped: never the trained one
    ic = task.sample_split("ic", 500, g)
    assert query_label_in_context(ic).all()
    # new classes: the query item matches no trained class mean
    nearest = (ic.inputs[:, -1, content] @ task.means.T).max(-1).values
    trained = (train.inputs[:, -1, content] @ task.means.T).max(-1).values
    assert nearest.mean() < 0.5 * trained.mean()
    with pytest.raises(ConfigError, match="split 'test' unknown"):
        task.sample_split("test", 1, g)
    with pytest.raises(ConfigError, match="multiple of task.B"):
        BurstyConfig.parse({"N": 8, "B": 3})


def _posterior_mean(x, y, xq, ws, log_prior, noise):
    """Brute force: Σ_w p(w | data) w·xq over an explicit list of hypotheses (for Gaussian values, a quadrature
    is not needed: each support's exact answer comes from MultivariateNormal below)."""
    log_lik = torch.distributions.Normal(x @ ws.T, noise).log_prob(y[:, None]).sum(0)
    return float(((log_lik + log_prior).softmax(0) * (ws @ xq)).sum())


def test_sign_bayes_is_the_posterior_mean_over_all_sign_vectors():
    g = torch.Generator().manual_seed(0)
    d, k, noise = 4, 3, 0.5
    x, xq = torch.randn(1, k, d, generator=g), torch.randn(1, d, generator=g)
    w = torch.tensor([1.0, -1.0, -1.0, 1.0])
    y = x @ w + noise * torch.randn(1, k, generator=g)
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)))
    expected = _posterior_mean(x[0], y[0], xq[0], signs, torch.zeros(len(signs)), noise)
    got = baseline_predictions(torch.cat([x, xq[:, None]], 1), torch.cat([y, torch.zeros(1, 1)], 1), "sign-bayes",
                               noise)[0, k]
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_sparse_bayes_matches_the_exact_marginal_likelihood_per_support():
    g = torch.Generator().manual_seed(1)
    d, s, k, noise = 4, 2, 3, 0.3
    x, xq = torch.randn(k, d, generator=g), torch.randn(d, generator=g)
    y = x @ torch.tensor([0.0, 1.5, 0.0, -0.7]) + noise * torch.randn(k, generator=g)
    log_p, means = [], []
    for support in itertools.combinations(range(d), s):
        xs = x[:, list(support)]
        cov = xs @ xs.T + noise**2 * torch.eye(k)
        log_p.append(torch.distributions.MultivariateNormal(torch.zeros(k), cov).log_prob(y))
        w = torch.linalg.solve(xs.T @ xs + noise**2 * torch.eye(s), xs.T @ y)
        means.append(float(xq[list(support)] @ w))
    expected = float((torch.stack(log_p).softmax(0) * torch.tensor(means)).sum())
    inputs, targets = torch.cat([x, xq[None]])[None], torch.cat([y, torch.zeros(1)])[None]
    got = baseline_predictions(inputs, targets, "sparse-bayes", noise, sparsity=s)[0, k]
    assert float(got) == pytest.approx(expected, abs=1e-5)
    assert float(baseline_predictions(inputs, targets, "sparse-bayes", noise, sparsity=s)[0, 0]) == 0  # the prior


def test_regression_mixture_draws_each_class_in_proportion():
    task = LinearRegression(RegressionConfig(d=5, n_points=4, sparsity=1, mixture={"dense": 1, "sparse": 1,
                                                                                       "sign": 2}))
    batch = task.sample(4000, torch.Generator().manual_seed(0))
    kind, w = batch.meta["class"], batch.meta["w"]
    assert torch.allclose(torch.bincount(kind) / 4000, torch.tensor([0.25, 0.25, 0.5]), atol=0.03)
    assert ((w[kind == 1] != 0).sum(-1) == 1).all() and (w[kind == 2].abs() == 1).all()
    assert ((w[kind == 0] != 0).sum(-1) == 5).all()
    with pytest.raises(ValueError, match="set task.sparsity"):
        RegressionConfig(mixture={"dense": 1, "sparse": 1})
    with pytest.raises(ValueError, match=r"task.mixture.cubic=1.0: classes are dense, sparse, sign"):
        RegressionConfig(mixture={"cubic": 1.0})
