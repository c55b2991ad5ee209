import math

import pytest
import torch
from transformer_lens import head_detector

from workbench.hooks.attention import (
    duplicate_token_targets,
    entropy,
    induction_targets,
    previous_token_targets,
    sink_score,
    targeted_score,
)

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
