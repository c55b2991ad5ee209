"""The super-weight search finds a planted weight exactly, and reads the activation it writes."""

import pytest
import torch
import torch.nn.functional as F

from workbench.hooks.super_weight import find_super_weights, plant_super_weight, super_activation
from workbench.models import ModelConfig, build_model
from workbench.tasks import BigramLanguage, BigramLanguageConfig
from workbench.train import Phase, TrainConfig, Trainer


@pytest.fixture(scope="module")
def trained():
    task = BigramLanguage(BigramLanguageConfig(d_vocab=16, seq_len=16))
    model = build_model(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, d_vocab=16), seed=0)
    Trainer(model, task, [Phase("train", TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup_steps=20))], 0,
            progress_bar=False).fit()
    batch = task.sample(64, torch.Generator().manual_seed(1))

    def loss(m):
        return F.cross_entropy(m(batch.inputs)[batch.loss_mask], batch.targets[batch.loss_mask])
    return model.eval(), batch, loss


def test_a_planted_super_weight_leaves_the_model_intact_and_is_found_first(trained):
    model, batch, loss = trained
    planted_model = build_model(model.cfg, seed=0)
    planted_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        before = planted_model(batch.inputs)
    weight = plant_super_weight(planted_model, layer=0, unit=3, size=50.0, token=5)
    with torch.no_grad():  # the unit's old output is gone, nothing else changed
        assert (planted_model(batch.inputs) - before).abs().max() < 1.0
    table = find_super_weights(planted_model, loss, shortlist=16)
    assert table.iloc[0]["weight"] == str(weight) and table.iloc[0]["ratio"] > 1.2 * table.iloc[1]["ratio"]
    activation = super_activation(planted_model, batch.inputs, weight)
    assert activation["max_product"] == pytest.approx(50.0 * float(F.gelu(torch.ones(1))), rel=1e-5)
    assert activation["channel"] == weight.row and activation["times_typical"] > 10


def test_the_unplanted_model_has_no_weight_near_that(trained):
    model, _, loss = trained
    table = find_super_weights(model, loss, shortlist=16)
    assert table["ratio"].iloc[0] < 2 and list(table["ratio"]) == sorted(table["ratio"], reverse=True)
