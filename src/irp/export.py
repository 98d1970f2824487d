"""`irp export-onnx`: write DIR/onnx/ (fp32, optionally int8) and prove it scores like the torch model.

Steps, each checked:

1. torch -> ONNX with dynamic batch / sequence / value-table axes (TorchScript exporter, eager attention, so
   that ONNX Runtime's transformer optimizer can fuse attention, bias+GELU and residual+LayerNorm);
2. fp32 parity: max |Δprobability| against the torch model <= 1e-4, on whole batches and on single records;
3. `--int8`: 8-bit weights with dynamic (run-time) 8-bit activations, then parity: max |Δprobability| <= 0.02
   and average precision within 0.005 of torch on labelled parity records.

The probabilities compared are the ones served: the artifact's calibration (`irp.calibration`) applied to each
runtime's logits, and decisions are compared at the saved threshold on that scale. A file passes when the raw
probabilities sigmoid(logit) (the graph's own fidelity) are within the tolerance, and the calibrated ones within
the tolerance times the calibration's amplification (`irp.calibration.amplification`: 1/T for temperature scaling
with T < 1, which sharpens differences by up to that factor; the steepest segment for isotonic). Calibration runs
in Python after the graph, so `irp threshold` can re-fit it without touching the ONNX files; it re-checks parity
with the new calibration and threshold (`recheck_parity`) and rewrites export.json.

Which int8 scheme (`int8_scheme`):

- `per-channel`: `onnxruntime.quantization.quantize_dynamic(per_channel=True)`: int8 weights per output channel,
  activations quantized at run time with one scale per tensor. The fastest, but one scale per activation tensor
  is coarse for MiniLM, whose [CLS] / [SEP] rows carry a few massive activations (|x| ~ 30 where the rest is
  ~ 0.3): on a 300-step minilm-l6 model it gave max |Δp| 0.105 and failed the 0.02 bar.
- `vector-wise` (`irp.quantize`): LLM.int8()-style: activations quantized per row (token), weights per output
  column, the few outlier input channels (max |x| > 6 on the first 256 parity records) kept in a thin fp32
  MatMul. On the same model: max |Δp| 0.013, about 1.4x the per-channel time, 1.7x faster than fp32 end to end.
- `blockwise`: 8-bit MatMulNBits: weights per output channel in blocks of 32 inputs, activations quantized at
  run time per block (accuracy level 4). Accurate (max |Δp| 0.0099) but hardly faster than fp32 on x86.
- `auto` (default): the first of per-channel, vector-wise, blockwise that passes parity; the report says which
  and why the others failed.

The parity records are `data` if given, else the artifact's validation file when it is still on disk, else 500
simulated records. Nothing is installed unless every check passes (or `force`): the files are built in a
temporary folder inside the artifact and renamed to onnx/ at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irp.calibration import amplification, calibrate_logits, calibration_of, sigmoid
from irp.fileio import replace_dir, write_json_atomic
from irp.onnx_runtime import (
    EXPORT_INFO, FILES, ONNX_DIR, OnnxModel, as_numpy, exported, weights_sha256,
)

FP32_TOLERANCE = 1e-4  # max |Δprobability|, fp32 ONNX vs torch
INT8_TOLERANCE = 0.02  # max |Δprobability|, int8 ONNX vs torch
AP_TOLERANCE = 0.005  # |AP(int8) - AP(torch)| on labelled parity records
INT8_SCHEMES = ("auto", "per-channel", "vector-wise", "blockwise")
AUTO_ORDER = ("per-channel", "vector-wise", "blockwise")  # fastest first
CALIBRATION_RECORDS = 256  # parity records whose activation ranges pick the vector-wise outlier channels
SINGLE_RECORD_CHECKS = 32  # records also scored one at a time (batch of 1 is the serving shape)
OPSET = 17


class ExportError(RuntimeError):
    """Export or its parity check failed; the message says which and by how much."""


@dataclass
class Parity:
    """How closely one ONNX file reproduces the torch model's probabilities."""

    precision: str  # fp32 | int8
    n: int
    max_abs_diff: float  # calibrated probabilities (what is served)
    mean_abs_diff: float
    max_abs_diff_single: float  # over the first SINGLE_RECORD_CHECKS records scored one at a time
    tolerance: float
    ap_torch: float | None = None
    ap_onnx: float | None = None
    ap_tolerance: float | None = None
    decision_flips: int = 0  # records whose decision at the saved threshold differs from torch
    passed: bool = False
    max_abs_diff_raw: float = 0.0  # sigmoid(logit) before calibration, batches and single records
    calibration: str = "none"  # the calibration method the probabilities went through
    threshold: float | None = None  # the threshold decisions were compared at
    calibrated_tolerance: float | None = None  # tolerance x the calibration's amplification (None: = tolerance)

    def problems(self) -> list[str]:
        out = []
        if not self.max_abs_diff_raw <= self.tolerance:
            out.append(f"{self.precision}: max |Δraw probability| {self.max_abs_diff_raw:.3g} > {self.tolerance:g}")
        worst = max(self.max_abs_diff, self.max_abs_diff_single)
        limit = self.tolerance if self.calibrated_tolerance is None else self.calibrated_tolerance
        if not worst <= limit:
            out.append(
                f"{self.precision}: max |Δprobability| {worst:.3g} > {limit:.3g} ({self.calibration} calibration)"
            )
        if self.ap_tolerance is not None and self.ap_torch is not None and self.ap_onnx is not None:
            if not abs(self.ap_onnx - self.ap_torch) <= self.ap_tolerance:
                out.append(
                    f"{self.precision}: AP {self.ap_onnx:.4f} vs torch {self.ap_torch:.4f} "
                    f"(|Δ| > {self.ap_tolerance:g})"
                )
        return out


@dataclass
class ExportReport:
    model_dir: str
    files: dict[str, str]  # runtime -> path
    parity: dict[str, Parity]
    parity_data: str  # where the parity records came from
    int8_scheme: str | None
    seconds: float
    installed: bool
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.parity.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


# ---- parity records ---------------------------------------------------------------------------------------
def parity_records(meta: dict[str, Any], data: str | Path | None, max_records: int) -> tuple[list[dict], str]:
    """(records, description): `data`, else the artifact's validation file if present, else simulated records."""
    from itertools import islice

    from irp.data.io import iter_records

    if data is not None:
        return list(islice(iter_records(data), max_records)), str(data)  # streams: a big file is not loaded
    valid = (meta.get("data") or {}).get("valid") or {}
    path = valid.get("path")
    if path and Path(path).is_file():
        try:
            return list(islice(iter_records(path), max_records)), str(path)
        except (ValueError, OSError):
            pass  # changed or unreadable since training: fall through to simulated records
    from irp.data.simulate import SimConfig, simulate

    n = min(max_records, 500)
    return list(simulate(SimConfig(n=n, seed=20_251_126))), f"{n} simulated records (seed 20251126)"


# ---- torch -> ONNX ----------------------------------------------------------------------------------------
class _Logits(torch.nn.Module):
    """IRPModel with a fixed positional signature and one output, as the exporter wants it."""

    def __init__(self, model: torch.nn.Module, with_slots: bool) -> None:
        super().__init__()
        self.model = model
        self.with_slots = with_slots

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        names = input_names(self.with_slots)
        return self.model(**dict(zip(names, inputs)))[0]


def input_names(with_slots: bool) -> list[str]:
    """ONNX graph inputs, in order (names and meaning as in Featurizer.collate).

    >>> input_names(False)
    ['input_ids', 'attention_mask', 'token_type_ids']
    """
    base = ["input_ids", "attention_mask", "token_type_ids"]
    return base + ["slot_mask", "value_ids", "value_index"] if with_slots else base


def _dynamic_axes(with_slots: bool) -> dict[str, dict[int, str]]:
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names(with_slots)}
    if with_slots:
        axes["value_ids"] = {0: "values", 1: "value_length"}  # [U, Lv] distinct attribute values of the batch
        axes["value_index"] = {0: "batch"}  # [B, K, F]: K products and F attributes are fixed by the config
    return axes | {"logits": {0: "batch"}}


def export_fp32(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path, with_slots: bool) -> None:
    """Trace the model into ONNX at `path` (one file; weights inline)."""
    encoder = model.encoder
    if hasattr(encoder, "set_attn_implementation"):
        # Eager attention exports as MatMul/Softmax, which ORT fuses into its Attention kernel; SDPA does not fuse.
        encoder.set_attn_implementation("eager")
    names = input_names(with_slots)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches (checked by parity)
        torch.onnx.export(
            _Logits(model, with_slots).eval(),
            tuple(example[name] for name in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=_dynamic_axes(with_slots),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def optimize_graph(src: Path, dst: Path, encoder_config: Any) -> list[str]:
    """ORT's transformer fusions (Attention, BiasGelu, SkipLayerNorm); returns notes. Falls back to the plain
    graph when the optimizer does not know the architecture (ORT still applies its generic optimizations)."""
    from onnxruntime.transformers.optimizer import optimize_model

    import logging

    for name in ("onnxruntime.tools.symbolic_shape_infer", "onnxruntime.transformers", "symbolic_shape_infer"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "Unable to determine if ... treat as equal" per node
    heads = int(getattr(encoder_config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(encoder_config, "hidden_size", 0) or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
        optimized.save_model_to_file(str(dst), use_external_data_format=False)
    except Exception as exc:  # noqa: BLE001  # any optimizer failure: keep the plain, already-correct graph
        shutil.copyfile(src, dst)
        return [f"transformer optimizer skipped ({type(exc).__name__}: {exc})"]
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return [f"fused operators: {fused}"]


def quantize_int8(
    src: Path, dst: Path, scheme: str, calibration: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None
) -> list[str]:
    """8-bit weights, activations quantized at run time (the schemes are in the module docstring); returns
    notes. `calibration` gives the batches that vector-wise measures activation ranges on."""
    import logging

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # one INFO line per skipped node
    if scheme == "vector-wise":
        from irp.quantize import calibrate, vector_wise_int8

        if calibration is None:
            raise ValueError("vector-wise int8 needs calibration batches")
        info = vector_wise_int8(src, dst, calibrate(src, calibration()))
        channels = sum(info.outlier_channels.values())
        return [f"vector-wise: {len(info.quantized)} layers in {info.gemms} int8 GEMMs, {channels} outlier input "
                f"channels kept fp32 across {len(info.outlier_channels)} inputs"]
    if scheme == "blockwise":
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    elif scheme == "per-channel":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": 1},  # fused ORT ops defeat shape inference; their outputs are float
        )
    else:
        raise ValueError(f"unknown int8 scheme {scheme!r}; choose from {', '.join(AUTO_ORDER)}")
    return []


# ---- parity -----------------------------------------------------------------------------------------------
def _logits(model: Any, featurizer: Any, features: Any) -> np.ndarray:
    """Logits [N] in record order, scored in length-sorted batches of 64 (as `irp predict` does)."""
    from irp.train import score_logits

    return score_logits(model, featurizer, features, torch.device("cpu"), batch_size=64)


def _logits_one_by_one(model: Any, featurizer: Any, records: Sequence[dict]) -> np.ndarray:
    """Each record featurized and scored alone: the serving shape (batch of 1, no padding)."""
    return np.concatenate([_logits(model, featurizer, featurizer.featurize([r])) for r in records])


@dataclass(frozen=True)
class Reference:
    """The torch model's logits on the parity records: batched (N,) and one by one (S,), float64."""

    logits: np.ndarray
    logits_single: np.ndarray


def check_parity(
    precision: str,
    onnx_model: OnnxModel,
    featurizer: Any,
    features: Any,
    singles: Sequence[dict],
    reference: Reference,
    meta: dict[str, Any],
) -> Parity:
    """Compare an ONNX file's served probabilities with torch's: both calibrated with `meta`'s calibration,
    decisions at `meta`'s threshold; the raw sigmoid difference is measured too."""
    from irp.metrics import average_precision

    cal = calibration_of(meta)
    threshold = float(meta["threshold"]["value"])
    logits = _logits(onnx_model, featurizer, features).astype(np.float64)
    single = _logits_one_by_one(onnx_model, featurizer, singles).astype(np.float64)
    probs, ref = calibrate_logits(cal, logits).astype(np.float64), calibrate_logits(cal, reference.logits)
    single_p, ref_single = calibrate_logits(cal, single), calibrate_logits(cal, reference.logits_single)
    diff = np.abs(probs - ref)
    raw_diff = max(
        float(np.abs(sigmoid(logits) - sigmoid(reference.logits)).max(initial=0.0)),
        float(np.abs(sigmoid(single) - sigmoid(reference.logits_single)).max(initial=0.0)),
    )
    labels = features.labels
    labelled = ~np.isnan(labels)
    ap_torch = ap_onnx = None
    if labelled.any() and 0 < labels[labelled].sum() < labelled.sum():
        ap_torch = float(average_precision(labels[labelled], ref[labelled]))
        ap_onnx = float(average_precision(labels[labelled], probs[labelled]))
    parity = Parity(
        precision=precision,
        n=len(probs),
        max_abs_diff=float(diff.max(initial=0.0)),
        mean_abs_diff=float(diff.mean()) if len(diff) else 0.0,
        max_abs_diff_single=float(np.abs(single_p.astype(np.float64) - ref_single).max(initial=0.0)),
        tolerance=FP32_TOLERANCE if precision == "fp32" else INT8_TOLERANCE,
        ap_torch=ap_torch,
        ap_onnx=ap_onnx,
        ap_tolerance=AP_TOLERANCE if precision == "int8" else None,
        decision_flips=int(((probs >= threshold) != (ref >= threshold)).sum()),
        max_abs_diff_raw=raw_diff,
        calibration=cal.get("method", "none"),
        threshold=threshold,
        # capped at 1: beyond that the calibrated check is vacuous (isotonic cliffs) and the raw one decides
        calibrated_tolerance=min(1.0, (FP32_TOLERANCE if precision == "fp32" else INT8_TOLERANCE) * amplification(cal)),
    )
    parity.passed = not parity.problems()
    return parity


def torch_reference(model: Any, featurizer: Any, features: Any, singles: Sequence[dict]) -> Reference:
    return Reference(
        _logits(model, featurizer, features).astype(np.float64),
        _logits_one_by_one(model, featurizer, singles).astype(np.float64),
    )


def _parity_reference(
    model: Any, featurizer: Any, meta: dict[str, Any], data: str | Path | None, max_records: int
) -> tuple[list[dict], str, Any, list[dict], Reference]:
    """The parity records (from `data` or the artifact's validation file), their features, the single-record
    checks and the torch reference they are compared with; the model is put in eval mode."""
    model.eval()
    records, source = parity_records(meta, data, max_records)
    if len(records) < 3:
        raise ExportError(f"parity needs at least 3 records, {source} has {len(records)}")
    features = featurizer.featurize(records)
    singles = records[:SINGLE_RECORD_CHECKS]
    return records, source, features, singles, torch_reference(model, featurizer, features, singles)


def recheck_parity(
    model_dir: str | Path, info: dict[str, Any], meta: dict[str, Any], data: str | Path | None = None,
    max_records: int = 2000,
) -> dict[str, Any] | None:
    """`info` (DIR/onnx/export.json as `read_export_info` gave it) with parity re-measured for `meta`'s calibration
    and threshold (e.g. the new ones of `irp threshold`, before they are written); None when DIR was never
    exported. Nothing is written: `write_export_info` installs the result. The graphs are unchanged (they end at
    the logits)."""
    from irp.artifact import load_model

    model_dir = Path(model_dir)
    files = exported(model_dir)
    if not files or not info:
        return None
    model, featurizer, _ = load_model(model_dir, device="cpu")
    records, source, features, singles, reference = _parity_reference(model, featurizer, meta, data, max_records)
    parity = {
        ("fp32" if runtime == "onnx-fp32" else "int8"): check_parity(
            "fp32" if runtime == "onnx-fp32" else "int8", OnnxModel(path, threads=1), featurizer, features, singles,
            reference, meta,
        )
        for runtime, path in files.items()
    }
    return info | {
        "parity": {name: asdict(p) for name, p in parity.items()},
        "parity_data": source,
        "passed": all(p.passed for p in parity.values()),
        "rechecked": True,
    }


def write_export_info(model_dir: str | Path, info: dict[str, Any]) -> None:
    """Replace DIR/onnx/export.json atomically."""
    write_json_atomic(Path(model_dir) / ONNX_DIR / EXPORT_INFO, info)


# ---- the command ------------------------------------------------------------------------------------------
def export_onnx(
    model_dir: str | Path,
    int8: bool = False,
    data: str | Path | None = None,
    max_records: int = 2000,
    int8_scheme: str = "auto",
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export DIR's model to DIR/onnx/ and check parity; raises ExportError (nothing installed) on a failed
    check unless `force`. Returns the report that is also written to DIR/onnx/export.json."""
    from irp.artifact import load_model

    say = log or (lambda message: None)
    if int8_scheme not in INT8_SCHEMES:
        raise ValueError(f"unknown int8 scheme {int8_scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    started = time.perf_counter()
    model_dir = Path(model_dir)
    model, featurizer, meta = load_model(model_dir, device="cpu")
    records, source, features, singles, reference = _parity_reference(model, featurizer, meta, data, max_records)
    with_slots = features.slots is not None
    say(f"torch reference on {len(records)} records ({source})")

    tmp = model_dir / f".onnx-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        say("exporting fp32 graph")
        example = featurizer.collate(features, np.arange(min(3, len(records))))
        export_fp32(model, example, tmp / "traced.onnx", with_slots)
        notes = optimize_graph(tmp / "traced.onnx", tmp / FILES["onnx-fp32"], model.encoder.config)
        (tmp / "traced.onnx").unlink()
        say("checking fp32 parity")
        parity = {
            "fp32": check_parity(
                "fp32", OnnxModel(tmp / FILES["onnx-fp32"], threads=1), featurizer, features, singles,
                reference, meta,
            )
        }
        scheme = None
        if int8:
            def calibration() -> Iterable[dict[str, np.ndarray]]:
                n = min(len(records), CALIBRATION_RECORDS)
                for start in range(0, n, 64):
                    batch = featurizer.collate(features, np.arange(start, min(start + 64, n)))
                    yield {name: as_numpy(value) for name, value in batch.items()}

            candidates = AUTO_ORDER if int8_scheme == "auto" else (int8_scheme,)
            for scheme in candidates:  # fastest first; `auto` keeps the first that passes parity
                say(f"quantizing to int8 ({scheme})")
                notes += quantize_int8(tmp / FILES["onnx-fp32"], tmp / FILES["onnx-int8"], scheme, calibration)
                say(f"checking int8 parity ({scheme})")
                parity["int8"] = check_parity(
                    "int8", OnnxModel(tmp / FILES["onnx-int8"], threads=1), featurizer, features, singles,
                    reference, meta,
                )
                if parity["int8"].passed:
                    break
                notes.append(f"int8 {scheme} failed parity: " + "; ".join(parity["int8"].problems()))
        files = {name: str(model_dir / ONNX_DIR / FILES[name]) for name in FILES if (tmp / FILES[name]).exists()}
        report = ExportReport(
            str(model_dir), files, parity, source, scheme,
            round(time.perf_counter() - started, 2), installed=False, notes=notes,
        )
        problems = [problem for p in parity.values() for problem in p.problems()]
        if problems and not force:
            raise ExportError("parity check failed, nothing installed: " + "; ".join(problems))
        report.installed = True
        info = report.to_dict() | {"weights_sha256": weights_sha256(model_dir), "opset": OPSET}
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, model_dir / ONNX_DIR)  # renames only: a reader sees the old export or the new one
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_report(report: ExportReport) -> Sequence[str]:
    """Human-readable lines for the CLI."""
    lines = [f"parity records: {report.parity_data}"] + report.notes
    if report.int8_scheme:
        lines.append(f"int8 scheme: {report.int8_scheme}")
    lines += [format_parity(p) for p in report.parity.values()]
    return lines


def format_parity(p: Parity) -> str:
    """One line per checked file (the CLI of export-onnx and of `irp threshold`)."""
    ap = "" if p.ap_torch is None else f", AP {p.ap_onnx:.4f} vs torch {p.ap_torch:.4f}"
    limit = p.tolerance if p.calibrated_tolerance is None else p.calibrated_tolerance
    return (
        f"{p.precision}: max |Δp| {max(p.max_abs_diff, p.max_abs_diff_single):.2e} (≤ {limit:.3g}, {p.calibration} "
        f"calibration), raw {p.max_abs_diff_raw:.2e} (≤ {p.tolerance:g}), mean {p.mean_abs_diff:.2e}{ap}, decisions "
        f"flipped {p.decision_flips}/{p.n} at {p.threshold:.4g} -> " + ("passed" if p.passed else "FAILED")
    )
