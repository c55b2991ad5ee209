"""The Model inspector's reads, on our models and on a Hugging Face model directory opened offline."""

import pytest
import torch

from workbench.config import ConfigError
from workbench.hooks.attention import stacked_patterns
from workbench.inspector import activation, hook_names, next_token_table, open_hf, prompt_tokens, str_tokens

WORDS = [f"w{i}" for i in range(46)]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny randomly initialised GPT-2, saved by transformers with a word-level tokenizer: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("gpt2")
    vocab = {w: i for i, w in enumerate(["<unk>", "<|endoftext|>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=1, eos_token_id=1)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    return path


def test_a_hugging_face_directory_opens_offline_and_answers_like_its_model(gpt2_dir):
    from transformers import GPT2LMHeadModel

    bridge = open_hf(gpt2_dir)
    tokens = prompt_tokens(bridge, "w3 w7 w7 w12")
    assert str_tokens(bridge, tokens)[-4:] == ["w3", "w7", "w7", "w12"]
    reference = GPT2LMHeadModel.from_pretrained(gpt2_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        probs = reference(tokens).logits[0, -1].softmax(-1)
    table = next_token_table(bridge, tokens, k=3)
    assert table["probability"].tolist() == pytest.approx(probs.topk(3).values.tolist(), abs=1e-4)
    assert "blocks.1.hook_resid_post" in hook_names(bridge)
    assert activation(bridge, tokens, "blocks.1.hook_resid_post").shape == (tokens.shape[1], 32)
    layers, stacked = stacked_patterns(bridge, tokens)
    assert layers == [0, 1] and stacked.shape == (2, 4, tokens.shape[1], tokens.shape[1])


def test_open_hf_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ConfigError, match="not a Hugging Face model directory"):
        open_hf(tmp_path)


def test_our_model_reads_a_prompt_in_its_token_names():
    import workbench
    from workbench.runs import data_root

    model = workbench.load_model(data_root() / "induction")
    tokens = prompt_tokens(model, "BOS 5 9 12 5 9")
    assert tokens.tolist() == [[0, 5, 9, 12, 5, 9]]
    assert next_token_table(model, tokens, k=1)["token"][0] == "12"  # the induction head completes the repeat
    assert activation(model, tokens, "blocks.0.attn.hook_pattern").shape == (4, 6, 6)
    with pytest.raises(ConfigError, match="prompt: empty"):
        prompt_tokens(model, "  ")
    with pytest.raises(ConfigError, match="exceed the model's n_ctx=64"):
        prompt_tokens(model, "BOS " + "1 " * 70)
    with pytest.raises(ConfigError, match="hook point 'nope'"):
        activation(model, tokens, "nope")
