"""Featurizer, IRPModel and persistence on the tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_records
from irp.config import IRPConfig
from irp.features import TOP_K, Featurizer
from irp.model.encoder import BackboneError, load_encoder, load_tokenizer, resolve_backbone
from irp.model.irp import IRPModel


def _parts(backbone: str, **changes):
    config = IRPConfig(backbone=backbone, **changes)
    featurizer = Featurizer(load_tokenizer(backbone), config)
    torch.manual_seed(0)
    return config, featurizer, IRPModel(load_encoder(backbone), config, featurizer.pad_id)


def test_layout_puts_one_slot_per_attribute_after_the_text(tiny_backbone: str) -> None:
    config, featurizer, _ = _parts(tiny_backbone)
    records = make_records(8)
    features = featurizer.featurize(records)
    assert features.slots.shape == (8, TOP_K, len(config.product_fields))
    batch = featurizer.collate(features, np.arange(8))
    lengths = features.lengths
    for b in range(8):
        slots = batch["slot_mask"][b].nonzero().flatten().tolist()
        assert slots == list(range(lengths[b], lengths[b] + len(config.product_fields)))
        row = batch["input_ids"][b, : lengths[b]].tolist()
        assert row[0] == featurizer.cls_id and row[-1] == featurizer.sep_id
        assert batch["attention_mask"][b].sum().item() == lengths[b] + len(config.product_fields)
    # Absent products (record 0 has a random 0..5 products) have value index -1.
    n_products = len(records[0]["products"])
    assert (batch["value_index"][0, n_products:] == -1).all()
    assert (batch["value_index"][0, :n_products] >= 0).all()


def test_truncation_is_counted_not_silent(tiny_backbone: str) -> None:
    _, featurizer, _ = _parts(tiny_backbone)
    long = {"utterance": "red " * 200, "products": [{"title": "blue " * 100}]}
    features = featurizer.featurize([long])
    assert featurizer.truncations["utterance"] == 1 and featurizer.truncations["value"] == 1
    assert features.lengths[0] <= 1 + 4 + 1 + featurizer.config.budget.utterance + 1


@pytest.mark.parametrize("summarizer", ["none", "mean", "max", "mmr", "concat"])
def test_forward_returns_logits_and_loss_for_every_summarizer(tiny_backbone: str, summarizer: str) -> None:
    config, featurizer, model = _parts(tiny_backbone, summarizer=summarizer)
    features = featurizer.featurize(make_records(6))
    logits, loss = model(**featurizer.collate(features, np.arange(6)))
    assert logits.shape == (6,) and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    if summarizer in ("mean", "max"):  # product slots are trained through the attribute-type embedding
        assert model.attr_type.weight.grad.abs().sum() > 0
    batch = featurizer.collate(features, np.arange(6))
    if summarizer in ("mmr", "concat"):
        assert batch["input_ids"].shape[1] > featurizer.featurize(make_records(6)).lengths.max() - 1
        assert "value_ids" not in batch


def test_products_change_the_prediction_only_when_summarized(tiny_backbone: str) -> None:
    records = make_records(4)
    other = [dict(r, products=make_records(4, seed=9)[i]["products"]) for i, r in enumerate(records)]
    for summarizer, should_change in (("mean", True), ("none", False)):
        _, featurizer, model = _parts(tiny_backbone, summarizer=summarizer)
        model.eval()
        a = model(**featurizer.collate(featurizer.featurize(records), np.arange(4)))[0]
        b = model(**featurizer.collate(featurizer.featurize(other), np.arange(4)))[0]
        assert (not torch.allclose(a, b)) == should_change


def test_padding_does_not_change_predictions(tiny_backbone: str) -> None:
    _, featurizer, model = _parts(tiny_backbone)
    model.eval()
    features = featurizer.featurize(make_records(10))
    together = model(**featurizer.collate(features, np.arange(10)))[0]
    alone = torch.cat([model(**featurizer.collate(features, np.array([i])))[0] for i in range(10)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_save_load_round_trip_is_exact(tiny_backbone: str, tmp_path) -> None:
    config, featurizer, model = _parts(tiny_backbone)
    model.eval()
    model.save(tmp_path)
    loaded = IRPModel.load(tmp_path, config, featurizer.pad_id)
    batch = featurizer.collate(featurizer.featurize(make_records(5)), np.arange(5))
    assert torch.equal(model(**batch)[0], loaded(**batch)[0])
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))


def test_unknown_backbone_is_a_clear_error_without_network() -> None:
    with pytest.raises(BackboneError, match="allow-network"):
        resolve_backbone("some-org/some-model")
    assert resolve_backbone("some-org/some-model", allow_network=True) == "some-org/some-model"


def test_feature_cache_round_trip(tiny_backbone: str, small_log, tmp_path) -> None:
    from irp.train import prepare_features

    config = IRPConfig(backbone=tiny_backbone)
    first = Featurizer(load_tokenizer(tiny_backbone), config)
    a, info_a = prepare_features(small_log["train"], first, "label", tmp_path)
    second = Featurizer(load_tokenizer(tiny_backbone), config)
    second.featurize(make_records(3, seed=5))  # a different value table order must not matter
    b, info_b = prepare_features(small_log["train"], second, "label", tmp_path)
    assert (info_a["cache"], info_b["cache"]) == ("written", "hit")
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
    batch_a, batch_b = first.collate(a, np.arange(20)), second.collate(b, np.arange(20))
    for key in ("input_ids", "attention_mask", "slot_mask"):
        assert torch.equal(batch_a[key], batch_b[key]), key
    # Value tables are ordered differently; the tokens each product slot points at must be the same.
    def slot_tokens(batch):
        index = batch["value_index"]
        tokens = batch["value_ids"][index.clamp(min=0)]
        return [t[t != first.pad_id].tolist() if i >= 0 else None for t, i in zip(tokens.flatten(0, 2), index.flatten())]
    assert slot_tokens(batch_a) == slot_tokens(batch_b)


def test_logits_keep_fp32_resolution_under_bf16_autocast(tiny_backbone: str) -> None:
    """bf16 logits would tie most probabilities; the head runs in fp32 so scores stay distinct."""
    _, featurizer, model = _parts(tiny_backbone)
    model.eval()
    batch = featurizer.collate(featurizer.featurize(make_records(64, seed=3)), np.arange(64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(**batch)
    assert logits.dtype == torch.float32
    # Logits that went through a bf16 head would all be exactly representable in bf16.
    representable = logits.to(torch.bfloat16).float() == logits
    assert representable.float().mean() < 0.5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prepared_4d_mask_matches_the_encoders_own_2d_handling(tiny_backbone: str, attn: str) -> None:
    """IRPModel hands the encoder a 4-D mask (no `mask.all()` sync); it must mean what the 2-D mask means."""
    config = IRPConfig(backbone=tiny_backbone)
    featurizer = Featurizer(load_tokenizer(tiny_backbone), config)
    model = IRPModel(load_encoder(tiny_backbone, attn_implementation=attn), config, featurizer.pad_id).eval()
    assert model.encoder.config._attn_implementation == attn
    batch = featurizer.collate(featurizer.featurize(make_records(12, seed=5)), np.arange(12))
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # the batch is padded, so the mask matters
    embeds = model.word_embeddings(batch["input_ids"])
    with torch.no_grad():
        own = model.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        prepared = model.encoder(inputs_embeds=embeds, attention_mask=model.encoder_mask(mask, embeds.dtype))
    real = mask.bool()
    torch.testing.assert_close(prepared.last_hidden_state[real], own[real], atol=1e-6, rtol=1e-5)
