"""Property tests: task generators and config validation over random inputs."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.config import ConfigError
from workbench.models import ModelConfig, build_model
from workbench.tasks import BigramLanguage, BigramLanguageConfig, RepeatedTokens, RepeatedTokensConfig

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(d_vocab=st.integers(-2, 80), seq_len=st.integers(-2, 70), lo=st.integers(-1, 40), hi=st.integers(-1, 40),
       batch=st.integers(1, 9), seed=st.integers(0, 2**32), periodic=st.booleans(), distinct=st.booleans())
def test_repeated_tokens_valid_or_field_named_error(d_vocab, seq_len, lo, hi, batch, seed, periodic, distinct):
    try:
        cfg = RepeatedTokensConfig.parse(dict(d_vocab=d_vocab, seq_len=seq_len, min_segment=lo, max_segment=hi,
                                              periodic=periodic, distinct=distinct))
    except ConfigError as e:
        assert any(f in str(e) for f in ("d_vocab", "seq_len", "min_segment", "max_segment", "distinct")), str(e)
        return
    task = RepeatedTokens(cfg)
    a = task.sample(batch, torch.Generator().manual_seed(seed))
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape == (batch, seq_len)
    assert a.tokens.min() >= 0 and a.tokens.max() < d_vocab
    seg = a.meta["segment"]
    assert ((lo <= seg) & (seg <= hi)).all()
    rows = torch.arange(batch)
    for offset in range(lo):  # every row repeats at least its first min_segment tokens
        assert torch.equal(a.tokens[rows, 1 + offset], a.tokens[rows, 1 + seg + offset])
    end = seq_len if periodic else 2 * seg + 1  # periodic: the copy runs to the end and is trained on
    assert a.loss_mask.sum(1).tolist() == (torch.as_tensor(end) - 2).expand(batch).tolist()
    if distinct:
        assert all(len(set(row[1:s + 1].tolist())) == s for row, s in zip(a.tokens, seg.tolist(), strict=True))


@FAST
@given(d_vocab=st.integers(2, 30), seq_len=st.integers(2, 40), batch=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_bigram_language_is_deterministic_and_follows_its_chain(d_vocab, seq_len, batch, seed):
    task = BigramLanguage(BigramLanguageConfig(d_vocab=d_vocab, seq_len=seq_len))
    a = task.sample(batch, torch.Generator().manual_seed(seed))
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    assert torch.equal(a.tokens, b.tokens)
    assert (task.transition[a.tokens[:, :-1], a.tokens[:, 1:]] > 0).all()


model_fields = st.fixed_dictionaries({}, optional={
    "n_layers": st.integers(-1, 3), "d_model": st.integers(-4, 48), "n_heads": st.integers(-1, 6),
    "d_head": st.one_of(st.none(), st.integers(-1, 12)), "d_mlp": st.integers(-2, 40),
    "act": st.sampled_from(["gelu", "relu", "silu", "tanh"]),
    "norm": st.sampled_from(["layer", "rms", "none", "batch"]),
    "positional": st.sampled_from(["learned", "rotary", "alibi", "relative-bias", "none", "sinusoid"]),
    "mask": st.sampled_from(["causal", "bidirectional", "random"]), "tied_embeddings": st.booleans(),
    "n_ctx": st.integers(-1, 16), "d_vocab": st.integers(-1, 20), "colour": st.just("blue"),
})


CHOICES = {"act": {"gelu", "relu", "silu"}, "norm": {"layer", "rms", "none"},
           "positional": {"learned", "rotary", "alibi", "relative-bias", "none"}, "mask": {"causal", "bidirectional"}}
MINIMUM = {"n_layers": 1, "d_model": 1, "n_heads": 1, "d_head": 1, "d_mlp": 0, "n_ctx": 1, "d_vocab": 2}


def invalid_on_their_own(data: dict) -> set[str]:
    """Keys whose value is wrong whatever the other keys say (an independent statement of the rules)."""
    bad = {k for k, v in data.items() if k in CHOICES and v not in CHOICES[k]}
    bad |= {k for k, v in data.items() if k in MINIMUM and v is not None and v < MINIMUM[k]}
    return bad | (data.keys() - ModelConfig.model_fields.keys())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # ~30% valid
@given(data=model_fields, seed=st.integers(0, 1000))
def test_random_model_configs_build_and_run_or_fail_naming_a_field(data, seed):
    bad = invalid_on_their_own(data)
    try:
        cfg = ModelConfig.parse(data)
    except ConfigError as e:
        named = {key for key in ModelConfig.model_fields.keys() | data.keys() if f"{key}" in str(e)}
        if bad:  # every independently invalid key is named in the one error line
            assert all(f"{key}:" in str(e) or f"'{key}'" in str(e) for key in bad), (bad, str(e))
        else:  # only a rule between fields can be broken: the message names the fields it relates
            assert named & {"d_model", "n_heads", "d_head"}, str(e)
        return
    assert not bad, f"accepted invalid keys {bad}"
    model = build_model(cfg, seed=seed).eval()
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))
    logits = model(tokens)
    assert logits.shape == (2, cfg.n_ctx, cfg.d_vocab) and torch.isfinite(logits).all()
