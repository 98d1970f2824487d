"""Vector-wise int8 (irp.quantize) on a small graph with the activation outliers MiniLM has: per-row scales and
fp32 outlier channels keep the error far below per-tensor dynamic quantization's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C, N, T = 64, 96, 12  # input channels, output columns, tokens


def two_layer_graph(path: Path, seed: int = 0) -> None:
    """y = (x @ W1) @ W2 and z = x @ W3: W1 and W3 share an input (one merged GEMM), W2 reads another."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.normal(0, 0.1, (C, N)).astype(np.float32),
        "w2": rng.normal(0, 0.1, (N, N)).astype(np.float32),
        "w3": rng.normal(0, 0.1, (C, N)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
        helper.make_node("MatMul", ["x", "w3"], ["z"], name="third"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", C]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "z")],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def massive_activations(batch: int, seed: int) -> dict[str, np.ndarray]:
    """Ordinary values ~0.3, plus |x| ~ 30 in channels 5 and 17 of the first token (MiniLM's [CLS] pattern)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (batch, T, C)).astype(np.float32)
    x[:, 0, 5] = 30.0
    x[:, 0, 17] = -25.0
    return {"x": x, "attention_mask": np.ones((batch, T), np.int64)}


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def test_vector_wise_beats_per_tensor_on_massive_activations(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from irp.quantize import calibrate, vector_wise_int8

    fp32 = tmp_path / "fp32.onnx"
    two_layer_graph(fp32)
    ranges = calibrate(fp32, [massive_activations(4, seed) for seed in range(3)])
    assert ranges["x"].shape == (C,) and ranges["x"][5] == pytest.approx(30.0) and ranges["x"][17] == 25.0

    info = vector_wise_int8(fp32, tmp_path / "vw.onnx", ranges)
    assert info.quantized == ["first", "second", "third"] and info.kept_fp32 == []
    assert info.gemms == 2  # first + third merged (same input x), second alone
    assert info.outlier_channels["x"] == 2  # channels 5 and 17

    quantize_dynamic(str(fp32), str(tmp_path / "pt.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    test = massive_activations(8, seed=99)  # not the calibration batches
    reference = run(fp32, test)
    vector_wise = run(tmp_path / "vw.onnx", test)
    per_tensor = run(tmp_path / "pt.onnx", test)
    for ref, vw, pt in zip(reference, vector_wise, per_tensor):
        ordinary = np.s_[:, 1:]  # the tokens without massive activations: most of the text
        scale = np.sqrt(np.mean(ref[ordinary] ** 2))
        vw_error = np.abs(vw - ref)[ordinary].max() / scale
        pt_error = np.abs(pt - ref)[ordinary].max() / scale
        # max error over rms for y and z: 0.081 and 0.062 with 7-bit weights (AVX2, no VNNI); 8-bit weights gave
        # 0.047 and 0.036 on a VNNI machine but 0.69 and 0.97 here (int16 saturation, irp.quantize.WEIGHT_QMAX)
        assert vw_error < 0.1, vw_error
        assert vw_error * 4 < pt_error, (vw_error, pt_error)  # per-tensor: 0.88 and 0.75


def test_kept_layers_stay_exact_and_zero_rows_stay_finite(tmp_path: Path) -> None:
    from irp.quantize import calibrate, vector_wise_int8

    fp32 = tmp_path / "fp32.onnx"
    two_layer_graph(fp32)
    ranges = calibrate(fp32, [massive_activations(2, 0)])
    info = vector_wise_int8(fp32, tmp_path / "vw.onnx", ranges, keep_fp32={"first", "second", "third"})
    assert info.quantized == [] and info.gemms == 0
    feeds = massive_activations(2, 5)
    for ref, out in zip(run(fp32, feeds), run(tmp_path / "vw.onnx", feeds)):
        np.testing.assert_array_equal(out, ref)

    vector_wise_int8(fp32, tmp_path / "vw_all.onnx", ranges)
    feeds["x"][1, 3] = 0.0  # an all-zero row: its scale is guarded, so no NaN spreads
    for ref, out in zip(run(fp32, feeds), run(tmp_path / "vw_all.onnx", feeds)):
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[1, 3], ref[1, 3], atol=1e-6)
