import pytest
import torch

from workbench.tasks import (
    BigramLanguage,
    BigramLanguageConfig,
    RepeatedTokens,
    RepeatedTokensConfig,
    parse_token_ids,
)
from workbench.tasks.copy import SEP, Copy, CopyConfig
from workbench.tasks.language import BOS, DELIMITER, SegmentedLanguage, SegmentedLanguageConfig

TASKS = [
    RepeatedTokens(RepeatedTokensConfig(d_vocab=20, seq_len=24, min_segment=3, max_segment=11)),
    BigramLanguage(BigramLanguageConfig(d_vocab=12, seq_len=16)),
    SegmentedLanguage(SegmentedLanguageConfig(d_vocab=40, seq_len=48, min_segment=3, max_segment=6)),
    Copy(CopyConfig(n_symbols=10, min_len=2, max_len=9)),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: type(t).__name__)
def test_seeded_determinism_and_shapes(task):
    a = task.sample(8, torch.Generator().manual_seed(5))
    b = task.sample(8, torch.Generator().manual_seed(5))
    c = task.sample(8, torch.Generator().manual_seed(6))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert a.tokens.shape == a.targets.shape == a.loss_mask.shape == (8, task.seq_len)
    assert a.tokens.min() >= 0 and a.tokens.max() < task.d_vocab
    torch.testing.assert_close(a.targets[:, :-1], a.tokens[:, 1:])
    assert not a.loss_mask[:, -1].any()


def test_repeated_tokens_repeat_their_segment():
    task = TASKS[0]
    batch = task.sample(64, torch.Generator().manual_seed(0))
    for row, seg in zip(batch.tokens, batch.meta["segment"], strict=True):
        seg = int(seg)
        assert row[0] == 0 and (row[1:] != 0).all()
        assert torch.equal(row[1:seg + 1], row[seg + 1:2 * seg + 1])
    assert set(batch.meta["segment"].tolist()) <= set(range(3, 12))
    # the repeat half's targets are exactly the copied tokens: at position i the target is token i - seg + 1
    for row, seg, targets, repeat in zip(batch.tokens, batch.meta["segment"], batch.targets, batch.meta["repeat_half"],
                                         strict=True):
        positions = repeat.nonzero().squeeze(1)
        assert positions.tolist() == list(range(int(seg), 2 * int(seg)))
        assert torch.equal(targets[positions], row[positions - seg + 1])
    assert not (batch.meta["first_half"] & batch.meta["repeat_half"]).any()


def test_repeated_tokens_periodic_and_distinct():
    cfg = RepeatedTokensConfig(d_vocab=40, seq_len=64, min_segment=5, max_segment=31, periodic=True, distinct=True)
    batch = RepeatedTokens(cfg).sample(64, torch.Generator().manual_seed(0))
    for row, seg, repeat in zip(batch.tokens, batch.meta["segment"].tolist(), batch.meta["repeat_half"], strict=True):
        assert len(set(row[1:seg + 1].tolist())) == seg  # no token twice in the segment
        assert torch.equal(row[seg + 1:], row[1:64 - seg])  # copies of it to the end of the sequence
        assert repeat.nonzero().squeeze(1).tolist() == list(range(seg, 63))
    # off by default: the segment may repeat tokens and the copy is followed by fresh, untrained tokens
    plain = RepeatedTokens(cfg.model_copy(update={"periodic": False, "distinct": False}))
    batch = plain.sample(64, torch.Generator().manual_seed(0))
    assert any(len(set(row[1:s + 1].tolist())) < s for row, s in zip(batch.tokens, batch.meta["segment"].tolist(),
                                                                       strict=True))
    assert (batch.loss_mask.sum(1) == 2 * batch.meta["segment"] - 1).all()


@pytest.mark.parametrize("kw, msg", [({"min_segment": 9, "max_segment": 4}, "exceeds task.max_segment"),
                                     ({"seq_len": 20, "max_segment": 10}, "does not fit twice"),
                                     ({"d_vocab": 10, "max_segment": 20, "seq_len": 64, "distinct": True},
                                      "exceeds the 9 non-BOS tokens")])
def test_repeated_config_errors(kw, msg):
    from workbench.config import ConfigError

    with pytest.raises(ConfigError, match=msg):
        RepeatedTokensConfig.parse(kw)


def test_bigram_empirical_loss_matches_entropy_rate():
    task = BigramLanguage(BigramLanguageConfig(d_vocab=8, seq_len=200))
    batch = task.sample(200, torch.Generator().manual_seed(0))
    logp = task.transition.log()[batch.tokens[:, 50:-1], batch.tokens[:, 51:]]
    assert abs(-logp.mean().item() - task.entropy_rate()) < 0.03


@pytest.mark.parametrize("text, msg", [("", "empty"), ("   ", "empty"), ("1 x 3", "'x' is not a token id"),
                                       ("1 99", "outside the vocabulary"), ("-1", "outside the vocabulary"),
                                       (" ".join(["1"] * 11), "exceed the model's n_ctx"),
                                       (b"\xff\xfe", "not valid UTF-8")])
def test_parse_token_ids_errors(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_token_ids(text, d_vocab=20, n_ctx=10)


def test_parse_token_ids_accepts_commas():
    assert parse_token_ids("0, 5 7", 20, 10).tolist() == [[0, 5, 7]]


def test_segmented_language_opens_with_bos_and_repeats_whole_segments():
    c = SegmentedLanguageConfig(d_vocab=40, seq_len=64, min_segment=3, max_segment=6, copy_prob=0.5)
    batch = SegmentedLanguage(c).sample(32, torch.Generator().manual_seed(0))
    copies = 0
    for row in batch.tokens.tolist():
        assert row[0] == BOS and BOS not in row[1:]
        segments, current = [], []
        for t in row[1:]:
            if t == DELIMITER:
                segments.append(current)
                current = []
            else:
                current.append(t)
        assert all(c.min_segment <= len(s) <= c.max_segment for s in segments)  # the unfinished tail aside
        copies += sum(s in segments[:i] for i, s in enumerate(segments))
    assert copies > 0  # some segments repeat earlier ones: the copying that gives heads work to do


def test_copy_task_scores_exactly_the_copy():
    task = Copy(CopyConfig(n_symbols=10, min_len=2, max_len=9))
    batch = task.sample(64, torch.Generator().manual_seed(1))
    for row, n in zip(batch.tokens.tolist(), batch.meta["length"].tolist(), strict=True):
        assert row[n + 1] == SEP and row[n + 2: 2 * n + 2] == row[1: n + 1]
    scored_targets = [batch.targets[i][batch.loss_mask[i]].tolist() for i in range(64)]
    assert scored_targets == [row[1: n + 1] for row, n in zip(batch.tokens.tolist(), batch.meta["length"].tolist(),
                                                              strict=True)]
