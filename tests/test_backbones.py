"""The three offline backbones (`irp.backbones`): resolution and its errors, the MiniLM-L3 rebuild from an ONNX
graph, the MPNet code path on a tiny random MPNet (default suite), and each real backbone end to end (slow: train a
few steps, reload in a fresh process with identical probabilities, ONNX export, one request through `irp serve`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_records
from irp import backbones
from irp.backbones import BackboneError, available, locate
from irp.model.encoder import build_tiny_mpnet, load_encoder, resolve_backbone


# ---- resolution -------------------------------------------------------------------------------------------
def test_a_missing_backbone_names_make_backbones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRP_BACKBONE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(backbones, "_source_files", lambda name: [])
    for name in ("minilm-l3", "mpnet-base"):
        with pytest.raises(BackboneError, match="make backbones") as info:
            resolve_backbone(name)
        assert str(tmp_path / "empty") in str(info.value) and not available(name)
    with pytest.raises(BackboneError, match="choose from minilm-l3, minilm-l6, mpnet-base"):
        locate("minilm-l12")
    assert Path(resolve_backbone("minilm-l6")).is_dir()  # the default still comes from its package


def test_an_unfinished_unpack_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRP_BACKBONE_DIR", str(tmp_path))
    monkeypatch.setattr(backbones, "_source_files", lambda name: [])
    folder = tmp_path / "mpnet-base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # no irp_backbone.json: interrupted
    assert not available("mpnet-base")
    (folder / backbones.MARKER).write_text("{}")
    assert locate("mpnet-base") == folder


# ---- MiniLM-L3: a BertModel rebuilt from an exported graph's initializers --------------------------------
class _SentenceTransformerLike(torch.nn.Module):
    """Names parameters `model.0.auto_model.*`, as the exported sentence-transformers graph does."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        holder = torch.nn.Module()
        holder.auto_model = bert
        self.model = torch.nn.ModuleList([holder])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model[0].auto_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_bert_rebuilt_from_onnx_initializers_matches(tmp_path: Path) -> None:
    import onnx
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=40, max_position_embeddings=32)
    config._attn_implementation = "eager"  # exports as MatMul/Softmax, like the shipped graph
    bert = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # distinct values everywhere: the exporter merges identical initializers (zero biases)
        for p in bert.parameters():
            p.normal_(0, 0.2)
    ids = torch.randint(5, 120, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    path = tmp_path / "st.onnx"
    with torch.no_grad():
        a = bert(input_ids=ids, attention_mask=mask).last_hidden_state  # before: tracing leaves the module changed
        torch.onnx.export(_SentenceTransformerLike(bert), (ids, mask), str(path),
                          input_names=["input_ids", "attention_mask"], opset_version=17, do_constant_folding=True,
                          dynamo=False)
    state = backbones.rebuild_bert_state(onnx.load(str(path)).graph)
    rebuilt = BertModel(config, add_pooling_layer=False).eval()
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    missing, unexpected = rebuilt.load_state_dict(tensors, strict=False)
    assert not [k for k in missing if not k.endswith("position_ids")] and not unexpected
    with torch.no_grad():
        b = rebuilt(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(a, b)


# ---- MPNet code path (no token types, eager attention, relative position bias), tiny and random ----------
@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny_mpnet")
    return str(build_tiny_mpnet(folder, tokenizer_source=os.environ.get("IRP_TEST_TOKENIZER")))


def test_tiny_mpnet_trains_reloads_and_exports(tiny_mpnet: str, tmp_path: Path) -> None:
    from irp.config import IRPConfig
    from irp.export import export_onnx
    from irp.predict import IRPClassifier
    from irp.train import train

    assert load_encoder(tiny_mpnet).config._attn_implementation == "eager"
    config = IRPConfig(backbone=tiny_mpnet, epochs=1, batch_size=16, lr=3e-3, device="cpu")
    out = tmp_path / "model"
    train(config, make_records(160, 1), make_records(60, 2), out, quiet=True)
    records = make_records(20, 3)
    clf = IRPClassifier.load(out)
    assert clf.model_.encoder.config.model_type == "mpnet"
    one_by_one = np.concatenate([clf.predict_proba([r]) for r in records])
    np.testing.assert_allclose(clf.predict_proba(records), one_by_one, atol=1e-6)  # padding does not leak
    report = export_onnx(out, data=None, max_records=60)
    assert report.parity["fp32"].passed, report.parity


# ---- the real backbones (slow; `make backbones` first) ----------------------------------------------------
RELOAD = """
import json, sys
import torch
torch.set_num_threads(1)
from irp.predict import IRPClassifier
from irp.data.io import load_records
clf = IRPClassifier.load(sys.argv[1])
print(json.dumps([float(p) for p in clf.predict_proba(load_records(sys.argv[2]))]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", backbones.NAMES)
def test_real_backbone_trains_reloads_exports_and_serves(name: str, tmp_path: Path) -> None:
    if not available(name):
        pytest.skip(f"backbone {name} is not installed: run `make backbones` ({name} needs "
                    f"{', '.join(backbones.BACKBONES[name].packages)})")
    from fastapi.testclient import TestClient

    from irp.config import IRPConfig
    from irp.data.io import write_records
    from irp.data.simulate import SimConfig, simulate
    from irp.export import export_onnx
    from irp.predict import IRPClassifier
    from irp.serve import Engine, ServeSettings, create_app, load_classifier
    from irp.train import train

    records = list(simulate(SimConfig(n=112, seed=3)))
    train_file, valid_file, probe = tmp_path / "train.jsonl", tmp_path / "valid.jsonl", tmp_path / "probe.jsonl"
    write_records(train_file, records[:64])
    write_records(valid_file, records[64:96])
    write_records(probe, records[96:])
    out = tmp_path / "model"
    config = IRPConfig(backbone=name, epochs=1, max_steps=4, batch_size=16, device="cpu", seed=1)
    train(config, train_file, valid_file, out, quiet=True)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["backbone"] == name

    here = IRPClassifier.load(out).predict_proba(records[96:])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    fresh = subprocess.run([sys.executable, "-c", RELOAD, str(out), str(probe)], capture_output=True, text=True,
                           env=env, check=True)
    there = np.array(json.loads(fresh.stdout.strip().splitlines()[-1]))
    assert np.array_equal(here.astype(np.float64), there), np.abs(here - there).max()

    report = export_onnx(out, int8=False, data=valid_file)
    assert report.parity["fp32"].passed, report.parity
    engine = Engine(load_classifier(out, "onnx-fp32"), out)
    response = TestClient(create_app(engine, ServeSettings())).post("/v1/predict", json=records[100] | {"label": None})
    if response.status_code == 422:  # records carry labels; the service takes records without them
        response = TestClient(create_app(engine, ServeSettings())).post(
            "/v1/predict", json={k: v for k, v in records[100].items() if k not in ("label", "true_intent")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(body["probability"] - float(here[4])) < 1e-4
