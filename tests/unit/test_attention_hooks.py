import math

import pytest
import torch
from transformer_lens import head_detector

from workbench.hooks.attention import (
    duplicate_token_targets,
    entropy,
    head_scores,
    induction_stripe_targets,
    induction_targets,
    offset_profile,
    previous_token_targets,
    sink_score,
    targeted_score,
)
from workbench.models import ModelConfig, build_model

TOKENS = torch.tensor([[0, 5, 6, 7, 5, 6, 7, 9], [0, 3, 3, 4, 8, 3, 4, 2]])


@pytest.mark.parametrize("ours, theirs", [
    (previous_token_targets, head_detector.get_previous_token_head_detection_pattern),
    (duplicate_token_targets, head_detector.get_duplicate_token_head_detection_pattern),
    (induction_targets, head_detector.get_induction_head_detection_pattern),
])
def test_targets_agree_with_transformer_lens_detection_patterns(ours, theirs):
    batch = ours(TOKENS)
    for row, seq in zip(batch, TOKENS, strict=True):
        assert torch.equal(row.float(), theirs(seq))


def one_hot_pattern(targets):
    """A head that attends fully to its (first) target, or to BOS when there is none."""
    idx = torch.where(targets.any(-1), targets.float().argmax(-1), 0)
    return torch.nn.functional.one_hot(idx, targets.shape[-1]).float()[:, None]  # [batch 1 q k]


def test_perfect_heads_score_one_and_others_low():
    prev = one_hot_pattern(previous_token_targets(TOKENS))
    assert targeted_score(prev, previous_token_targets(TOKENS)).item() == pytest.approx(1.0)
    assert targeted_score(prev, induction_targets(TOKENS)).item() < 0.2
    ind = one_hot_pattern(induction_targets(TOKENS))
    assert targeted_score(ind, induction_targets(TOKENS)).item() == pytest.approx(1.0)


def test_uniform_pattern_scores_and_entropy():
    pos = 6
    causal = torch.ones(pos, pos).tril()
    uniform = (causal / causal.sum(-1, keepdim=True))[None, None]  # [1 1 q k]
    prev = previous_token_targets(torch.zeros(1, pos, dtype=torch.long))
    expected = sum(1 / (q + 1) for q in range(1, pos)) / (pos - 1)
    assert targeted_score(uniform, prev).item() == pytest.approx(expected)
    assert sink_score(uniform).item() == pytest.approx(expected)
    assert entropy(uniform).item() == pytest.approx(sum(math.log(q + 1) for q in range(pos)) / pos, rel=1e-5)


# BOS r r with L = 4 and an accidental repeat inside r (token 5 at positions 1 and 3).
REPEATED = torch.tensor([[0, 5, 6, 5, 8, 5, 6, 5, 8]])
L = 4


def test_stripe_score_equals_a_hand_computation():
    pattern = torch.rand(1, 2, 9, 9, generator=torch.Generator().manual_seed(0)).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    # second copy: queries 5..8; the token after the first occurrence of the query's token is q - L + 1
    by_hand = sum(pattern[0, :, q, q - L + 1] for q in range(5, 9)) / 4
    ours = targeted_score(pattern, induction_stripe_targets(torch.tensor([L]), 9))
    torch.testing.assert_close(ours, by_hand)


class FixedPattern(torch.nn.Module):
    """A stand-in model whose only attention pattern is given: lets head_scores be checked exactly."""

    def __init__(self, pattern):
        super().__init__()
        self.cfg = ModelConfig(n_layers=1, n_heads=pattern.shape[1], d_model=8, d_vocab=10, n_ctx=16)
        self.pattern = pattern

    def run_with_cache(self, tokens, names_filter):
        return None, {"blocks.0.attn.hook_pattern": self.pattern}


def test_induction_column_is_the_stripe_score_not_the_generalised_one():
    """A perfect stripe head scores 1 on `induction`; accidental repeats in r pull the generalised score down."""
    stripe = induction_stripe_targets(torch.tensor([L]), 9)
    pattern = torch.where(stripe.any(-1, keepdim=True), stripe.float(), torch.eye(9)[None])[:, None]  # [1 1 q k]
    scores = head_scores(FixedPattern(pattern), REPEATED, segment=L).iloc[0]
    assert scores["induction"] == pytest.approx(1.0)
    # generalised: query 3 (its 5 was seen at 1) also has a target, which the stripe head ignores → 4 of 5
    assert scores["generalised_induction"] == pytest.approx(0.8)
    assert "induction" not in head_scores(FixedPattern(pattern), REPEATED).columns  # no segment: no stripe score


def test_tl_detect_score_is_ours_diluted_by_queries_without_a_target():
    """TL's `compute_head_attention_similarity_score` ("mul", no exclusions) divides the target mass by the
    mass of *all* queries: it equals our generalised score × (queries with a target) / (all queries)."""
    pattern = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(1)).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    targets = induction_targets(REPEATED)
    ours = targeted_score(pattern, targets).item()
    theirs = head_detector.compute_head_attention_similarity_score(
        pattern[0, 0], head_detector.get_induction_head_detection_pattern(REPEATED[0]),
        exclude_bos=False, exclude_current_token=False, error_measure="mul")
    with_target = targets[0].any(-1).sum().item()
    assert theirs == pytest.approx(ours * with_target / 9, rel=1e-5)


def test_induction_metrics_do_not_depend_on_the_layer_count():
    from workbench import experiments

    exp = experiments.get("induction")
    for n_layers in (2, 3):
        cfg = exp.config("smoke", {"model.n_layers": n_layers, "eval_batch": 8})
        metrics = exp.evaluate(build_model(cfg.model, seed=0).eval(), cfg)
        for criterion in exp.criteria:
            assert metrics.get(criterion.metric) is not None, (n_layers, criterion.metric)


def test_repeat_start_finds_the_second_copy_of_bos_r_r():
    from workbench.hooks.attention import repeat_start

    assert repeat_start(torch.tensor([0, 5, 6, 7, 5, 6, 7, 9, 2])) == 4
    assert repeat_start(torch.tensor([0, 5, 5, 5, 5, 1])) == 3  # a segment has ≥2 tokens: not "5" repeated
    assert repeat_start(torch.tensor([0, 1, 2, 3, 4, 5])) is None


def test_all_heads_view_is_self_contained_and_carries_every_head():
    import json
    import re

    from workbench.hooks.attention import stacked_patterns
    from workbench.models import ModelConfig, build_model
    from workbench.viz.heads import all_heads

    model = build_model(ModelConfig(n_layers=2, d_model=18, n_heads=3, n_ctx=12, d_vocab=10), seed=0).eval()
    tokens = torch.tensor([[0, 3, 4, 5, 3, 4, 5, 9]])
    layers, stacked = stacked_patterns(model, tokens)
    assert layers == [0, 1] and stacked.shape == (2, 3, 8, 8)
    view = all_heads(stacked, ["BOS", "3", "4", "</script>", "3", "4", "5", "9"], layers, boundary=4)
    assert not re.search(r"(src|href)=|https?://|@import", view.html)  # nothing fetched: works offline
    assert view.html.count("</script>") == 1  # a token named </script> cannot end the script early
    payload = json.loads(re.search(r"const root = [^,]+, D = (\{.*?\});\n", view.html).group(1))
    assert payload["boundary"] == 4 and payload["layers"] == [0, 1]
    assert torch.allclose(torch.tensor(payload["p"]) / 1000, stacked, atol=5e-4)
    with pytest.raises(ValueError, match="8×8 but there are 3 tokens"):
        all_heads(stacked, ["a", "b", "c"])
    assert payload["sel"] == [1, 0]  # the last layer's first head unless told
    chosen = all_heads(stacked, list("abcdefgh"), layers, selected=(0, 2))
    assert json.loads(re.search(r"const root = [^,]+, D = (\{.*?\});\n", chosen.html).group(1))["sel"] == [0, 2]
    with pytest.raises(ValueError, match=r"selected=\(1, 3\) is not a head here"):
        all_heads(stacked, list("abcdefgh"), layers, selected=(1, 3))


def test_offset_profile_finds_each_head_s_offset():
    pos = 6
    back = [torch.eye(pos).roll(-o, dims=1).tril(-o) for o in (1, 2)]  # k = q − 1, k = q − 2
    for b in back:
        b[: b.sum(-1).eq(0).sum(), 0] = 1.0  # queries without that key attend to BOS
    profile = offset_profile(torch.stack(back)[None], max_offset=3)
    assert list(profile.columns) == [0, 1, 2, 3]
    assert profile.loc[0].tolist() == pytest.approx([1 / 6, 5 / 5, 0, 0])  # q=0 attends to itself (BOS)
    assert profile.loc[1].tolist() == pytest.approx([1 / 6, 1 / 5, 4 / 4, 0])  # q=1 attends to BOS, 1 back
    assert offset_profile(torch.stack(back)[None], max_offset=20).columns[-1] == pos - 1


def test_best_head_takes_the_highest_score_and_the_first_head_when_none_scores():
    import pandas as pd

    from workbench.hooks.attention import HeadScore, best_head

    scores = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "s": [0.9, 0.1, 0.2, 0.7],
                           "none": [float("nan")] * 4})
    assert best_head(scores, "s", 1) == HeadScore(1, 1, 0.7) and best_head(scores, "s", [0, 1]).value == 0.9
    empty = best_head(scores, "none", 1)
    assert (empty.layer, empty.head) == (1, 0) and empty.value != empty.value  # nan
