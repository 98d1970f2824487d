"""The training loop: AdamW + warmup/linear decay, dynamic padding, bf16 autocast on CUDA, validation with early
stopping (best checkpoint kept), resumable checkpoints, and the operating point chosen on validation.

Distributed data parallel runs come in through `irp.distributed` (torchrun sets the environment); each rank takes
its own share of every epoch's batches and only rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from irp import distributed as dist
from irp.artifact import check_validation_labels, write_artifact
from irp.config import IRPConfig
from irp.ema import WeightAverage
from irp.features import FeatureSet, Featurizer, cache_key, load_features, save_features
from irp.fileio import atomic_dir, existing_dir, file_fingerprint
from irp.metrics import average_precision
from irp.model.encoder import load_encoder, load_tokenizer, resolve_backbone
from irp.model.irp import IRPModel
from irp.progress import progress_bar

if TYPE_CHECKING:
    from irp.distill import Distillation


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-bucketed batches, reproducible from (seed, epoch): shuffle, sort within pools of 50 batches by
    length (so padding is small), cut into batches, shuffle the batches.

    >>> b = epoch_batches(np.array([5, 1, 9, 3, 7, 2]), batch_size=2, seed=0, epoch=0)
    >>> sorted(np.concatenate(b).tolist()), [len(x) for x in b]
    ([0, 1, 2, 3, 4, 5], [2, 2, 2])
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class _CollatedBatches(torch.utils.data.Dataset):
    """Item i = the padded tensors of batch i, so DataLoader workers collate while the GPU trains."""

    def __init__(self, featurizer: Featurizer, features: FeatureSet, batches: list[np.ndarray]) -> None:
        self.featurizer, self.features, self.batches = featurizer, features, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.featurizer.collate(self.features, self.batches[i])


def batch_loader(
    featurizer: Featurizer, features: FeatureSet, batches: list[np.ndarray], device: torch.device, config: IRPConfig
) -> Iterable[dict[str, torch.Tensor]]:
    """Batches in the given order; with workers (default on CUDA) collation runs in background processes."""
    dataset = _CollatedBatches(featurizer, features, batches)
    workers = config.num_workers if config.num_workers >= 0 else (4 if device.type == "cuda" else 0)
    if workers == 0:
        return (dataset[i] for i in range(len(dataset)))
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=8, persistent_workers=False,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def score_logits(
    model: IRPModel, featurizer: Featurizer, features: FeatureSet, device: torch.device, batch_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Raw network logits [N] float32 in record order (calibration is applied on top: `irp.calibration`);
    batches are length-sorted so little compute goes to padding. A model with `map_batches` (an ONNX session
    with concurrency) runs several batches at once; they are collated here in the calling thread, a window at a
    time (collate may grow the featurizer's value table). `on_progress` gets the number of records scored so far."""
    model.eval()
    order = np.argsort(features.lengths, kind="stable")
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    run_all = getattr(model, "map_batches", map)
    window = 4 * getattr(model, "concurrency", 1)

    def network(batch: dict[str, torch.Tensor]) -> np.ndarray:
        # no_grad again: grad mode is per thread, and map_batches may run this in a pool thread
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, _ = model(**batch)
        return logits.float().cpu().numpy()

    logits = np.empty(len(features), dtype=np.float32)
    for first in range(0, len(chunks), window):
        indices = chunks[first : first + window]
        batches = [to_device(featurizer.collate(features, index), device) for index in indices]
        for batch in batches:
            batch.pop("labels")
        for index, z in zip(indices, run_all(network, batches)):
            logits[index] = z
        if on_progress is not None:
            on_progress(min(len(order), (first + window) * batch_size))
    return logits


def score(
    model: IRPModel, featurizer: Featurizer, features: FeatureSet, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Uncalibrated probabilities sigmoid(logit) [N] float32 in record order: for ranking (AP, early stopping).
    The probabilities a model serves are calibrated: `IRPClassifier.predict_proba`."""
    logits = score_logits(model, featurizer, features, device, batch_size)
    return torch.sigmoid(torch.from_numpy(logits)).numpy()


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then linear decay to 0.

    >>> [round(lr_at(s, 10, 2, 1.0), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def layer_depth(name: str, layers: int) -> int:
    """How deep a parameter of IRPModel sits, for layer-wise LR decay: 0 = the encoder's embeddings, i + 1 = its
    transformer layer i (BERT and MPNet name them `encoder.encoder.layer.i.`), layers + 1 = everything above
    (pooler, MPNet's relative attention bias, which every layer shares, the attribute embeddings and the head).

    >>> [layer_depth(n, 6) for n in ("encoder.embeddings.word_embeddings.weight",
    ...  "encoder.encoder.layer.0.output.dense.bias", "encoder.encoder.layer.5.attention.self.query.weight",
    ...  "encoder.pooler.dense.weight", "head.weight")]
    [0, 1, 6, 7, 7]
    """
    if name.startswith("encoder.embeddings."):
        return 0
    parts = name.split(".")
    if parts[:3] == ["encoder", "encoder", "layer"] and parts[3].isdigit():
        return int(parts[3]) + 1
    return layers + 1


def make_optimizer(model: torch.nn.Module, config: IRPConfig) -> torch.optim.AdamW:
    """AdamW without weight decay on embeddings, biases and norms. Fused on CPU and CUDA: one update op per device
    and dtype instead of several per parameter, and unlike the unfused forms it never reads the step count back
    to the host (`.item()`). Each group's `lr_scale` multiplies the scheduled LR: 1, or with `config.layer_decay` < 1
    layer_decay^(L + 1 - depth) (`layer_depth`; Howard & Ruder 2018, Clark et al. 2020): the lower layers, which
    hold the pretrained general features, move less than the upper ones and the new head."""
    by_layer = config.layer_decay < 1.0
    layers = int(model.get_submodule("encoder").config.num_hidden_layers) if by_layer else 0
    groups: dict[tuple[bool, int], dict[str, Any]] = {}  # (weight decay?, depth) -> param group
    for name, param in model.named_parameters():
        decays = param.ndim >= 2 and "embeddings" not in name
        depth = layer_depth(name, layers) if by_layer else layers + 1  # off: one depth, scale 1
        group = groups.setdefault((decays, depth), {
            "params": [], "weight_decay": config.weight_decay if decays else 0.0,
            "lr_scale": config.layer_decay ** (layers + 1 - depth),
        })
        group["params"].append(param)
    ordered = sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1]))  # decayed first, shallow first
    return torch.optim.AdamW([group for _, group in ordered], lr=config.lr, fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled LR for this step, times each group's `lr_scale` (`make_optimizer`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def train_step(
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    grad_clip: float,
) -> torch.Tensor:
    """One optimiser step (bf16 autocast on CUDA); returns the loss, detached and still on the device.

    Nothing here reads a value back to the host, so on CUDA the CPU queues the next steps while the GPU works
    (`tests/test_train.py` checks it on CPU). `forward` is the model, or its DDP / torch.compile wrapper."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        _, loss = forward(**batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


# ---- resumable checkpoints (safetensors + JSON; nothing is pickled) ---------------------------------------
@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch already consumed (all ranks together)
    best_ap: float = -1.0
    best_step: int = 0
    evals_without_gain: int = 0
    history: list[dict[str, float]] | None = None


def save_checkpoint(
    directory: Path, model: IRPModel, optimizer: torch.optim.Optimizer, state: TrainState,
    average: WeightAverage | None = None,
) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if average is not None:
        tensors |= average.tensors()
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"{names[id(p)]}::{key}"] = value.detach().cpu().contiguous()
    meta = {"state": state.__dict__, "python_rng": repr(random.getstate())}
    with atomic_dir(directory) as tmp:
        model.save(tmp)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta))


def load_checkpoint(
    directory: Path, model: IRPModel, optimizer: torch.optim.Optimizer, average: WeightAverage | None = None
) -> TrainState:
    model.load_state_dict(load_file(str(directory / "model.safetensors"), device="cpu"))
    tensors = load_file(str(directory / "optimizer.safetensors"), device="cpu")
    torch.set_rng_state(tensors.pop("rng.torch"))
    shadow = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("ema::")]}
    if average is not None:
        if not shadow:
            raise ValueError(f"{directory} holds no weight average to resume --ema from (it was trained without)")
        average.load(shadow)
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        name, slot = key.split("::")
        param = params[name]
        # the fused AdamW keeps its step count on the parameter's device, like its moments
        optimizer.state[param][slot] = value.to(param.device)
    meta = json.loads((directory / "state.json").read_text())
    return TrainState(**meta["state"])


# ---- data -> features (cached on disk for files) ----------------------------------------------------------
DataSource = list[dict] | str | Path


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("IRP_CACHE_DIR", Path.home() / ".cache" / "irp" / "features"))


def prepare_features(
    source: DataSource, featurizer: Featurizer, label_field: str, cache_dir: Path | None, write_cache: bool = True
) -> tuple[FeatureSet, dict[str, Any]]:
    """Featurize records, or a file: a file's features are cached under a key of its sha256 and the input
    settings, so the second run on the same log skips reading and tokenizing. Returns (features, data info)."""
    if not isinstance(source, (str, Path)):
        return featurizer.featurize(source, label_field), {"records": len(source)}
    from irp.data.io import load_records

    info = file_fingerprint(source)
    entry = cache_dir / cache_key(featurizer, info["sha256"], label_field) if cache_dir else None
    if entry is not None and (entry / "labels.npy").exists():
        features = load_features(entry, featurizer)
        info["cache"] = "hit"
    else:
        features = featurizer.featurize(load_records(source), label_field)
        if entry is not None and write_cache:  # under DDP only rank 0 writes
            save_features(entry, features, featurizer)
            info["cache"] = "written"
    info["records"] = len(features)
    return features, info


# ---- the run ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]
    threshold: float


def build_model(config: IRPConfig, allow_network: bool = False) -> tuple[IRPModel, Featurizer]:
    location = resolve_backbone(config.backbone, allow_network)
    tokenizer = load_tokenizer(location)
    featurizer = Featurizer(tokenizer, config)
    model = IRPModel(load_encoder(location), config, pad_id=featurizer.pad_id)
    return model, featurizer


def train(
    config: IRPConfig,
    train_data: DataSource,
    valid_data: DataSource,
    out_dir: str | Path,
    resume: bool = False,
    allow_network: bool = False,
    label_field: str = "label",
    quiet: bool = False,
    cache_dir: Path | None = None,
    distillation: Distillation | None = None,
) -> TrainResult:
    """Train, keep the best checkpoint by validation AP, fit calibration and the certified threshold on
    validation (`irp.artifact.fit_operating_point`), write the artifact to out_dir.

    Data are record lists or files (.jsonl/.parquet); file features are cached in `cache_dir` when given.
    With `distillation` (irp distill) the teachers' soft targets ride in every batch and the transfer records join
    the training set; config.distill_alpha and config.temperature weigh the loss (irp.losses.distillation_loss)."""
    out_dir = Path(out_dir)
    ctx = dist.init_from_env(config.device)
    set_seed(config.seed)
    device = ctx.device if ctx.enabled else resolve_device(config.device)
    started = time.perf_counter()

    model, featurizer = build_model(config, allow_network)
    prep_started = time.perf_counter()
    train_set, train_info = prepare_features(train_data, featurizer, label_field, cache_dir, ctx.is_main)
    valid_set, valid_info = prepare_features(valid_data, featurizer, label_field, cache_dir, ctx.is_main)
    data_info = {"train": train_info, "valid": valid_info}
    for name, fs in (("train", train_set), ("valid", valid_set)):
        if np.isnan(fs.labels).any():
            raise ValueError(f"{name} data has records without `{label_field}`")
    # Fail before training, not after: calibration and the operating point need both classes in validation.
    check_validation_labels(valid_set.labels)
    n_labelled = len(train_set)
    if distillation is not None:  # soft targets on every record, transfer records (labels may be NaN) appended
        train_set, extra_info = distillation.attach(
            train_set, train_data, featurizer, label_field, device, cache_dir, ctx.is_main
        )
        data_info |= extra_info
    prep_s = time.perf_counter() - prep_started
    model.to(device)

    optimizer = make_optimizer(model, config)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    # Each optimiser step consumes one batch per rank; an epoch's last incomplete group of batches is dropped.
    steps_per_epoch = len(epoch_batches(train_set.lengths, config.batch_size, config.seed, 0)) // ctx.world_size
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    if total_steps == 0:
        raise ValueError(f"{len(train_set)} training records make no full batch per rank (world size {ctx.world_size})")
    warmup = max(1, int(config.warmup_ratio * total_steps))
    eval_every = config.eval_every or steps_per_epoch

    ckpt_dir = out_dir / "checkpoints"
    state = TrainState(history=[])
    last = existing_dir(ckpt_dir / "last") if resume else None
    if last is not None:
        state = load_checkpoint(last, model, optimizer, average)
        if not quiet and ctx.is_main:
            print(f"resumed from step {state.step} (epoch {state.epoch})")
    train_model = ctx.wrap(model)
    step_fn = torch.compile(train_model) if config.compile else train_model

    stop = state.evals_without_gain >= config.patience
    loss_sum = torch.zeros((), device=device)  # accumulated on device: no host sync per step
    with progress_bar(disable=quiet or not ctx.is_main) as bar:
        task = bar.add_task("train", total=total_steps, completed=state.step, loss=float("nan"), rate=0.0)
        tick, tick_step = time.perf_counter(), state.step
        loop_started = time.perf_counter()
        while state.step < total_steps and not stop:
            batches = epoch_batches(train_set.lengths, config.batch_size, config.seed, state.epoch)
            starts = range(state.batch_in_epoch, len(batches) - ctx.world_size + 1, ctx.world_size)
            loader = batch_loader(featurizer, train_set, [batches[b + ctx.rank] for b in starts], device, config)
            for b, batch in zip(starts, loader):
                if state.step >= total_steps or stop:
                    break
                model.train()
                batch = to_device(batch, device)
                set_lr(optimizer, lr_at(state.step, total_steps, warmup, config.lr))
                loss_sum += train_step(step_fn, model, optimizer, batch, device, config.grad_clip)
                if average is not None:
                    average.update(state.step)
                state.step += 1
                state.batch_in_epoch = b + ctx.world_size
                if state.step % 50 == 0 or state.step == total_steps:  # the only host sync: every 50 steps
                    now = time.perf_counter()
                    rate = (state.step - tick_step) * config.batch_size * ctx.world_size / max(now - tick, 1e-9)
                    bar.update(task, completed=state.step, loss=loss_sum.item() / (state.step - tick_step), rate=rate)
                    loss_sum.zero_()
                    tick, tick_step = now, state.step
                if state.step % eval_every == 0 or state.step == total_steps:
                    with average.applied() if average is not None else nullcontext():
                        stop = _evaluate_and_keep_best(model, featurizer, valid_set, device, state, config, ckpt_dir, ctx)
                if ctx.is_main and state.step % config.checkpoint_every == 0:
                    save_checkpoint(ckpt_dir / "last", model, optimizer, state, average)
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    loop_s = time.perf_counter() - loop_started
    if ctx.is_main:
        save_checkpoint(ckpt_dir / "last", model, optimizer, state, average)
    ctx.barrier()

    # The best checkpoint (by validation AP) is the model; the threshold is chosen on validation.
    best = IRPModel.load(existing_dir(ckpt_dir / "best") or ckpt_dir / "best", config, featurizer.pad_id, device=str(device))
    valid_logits = score_logits(best, featurizer, valid_set, device)
    info = {
        "steps": state.step,
        "best_step": state.best_step,
        "epochs_started": state.epoch + (1 if state.batch_in_epoch else 0),
        "history": state.history,
        "early_stopped": state.evals_without_gain >= config.patience,
        "wall_s": round(time.perf_counter() - started, 2),
        "featurize_s": round(prep_s, 2),
        "train_loop_s": round(loop_s, 2),  # optimiser steps + in-loop validations, this process's session
        "eval_s": round(sum(h.get("eval_s", 0.0) for h in state.history or []), 2),
        "device": str(device),
        "world_size": ctx.world_size,
        "truncations": dict(featurizer.truncations),
        "n_train": n_labelled,
        "n_transfer": len(train_set) - n_labelled,
        "n_valid": len(valid_set),
        "label_field": label_field,
    }
    result = TrainResult(out_dir, {}, 0.5)
    if ctx.is_main:
        extra = {"distillation": distillation.summary} if distillation is not None else None
        metrics, threshold = write_artifact(
            out_dir, best, featurizer, config, valid_set.labels, valid_logits, info, data_info, extra
        )
        result = TrainResult(out_dir, metrics, threshold)
    ctx.barrier()
    ctx.shutdown()
    return result


def _evaluate_and_keep_best(
    model: IRPModel,
    featurizer: Featurizer,
    valid_set: FeatureSet,
    device: torch.device,
    state: TrainState,
    config: IRPConfig,
    ckpt_dir: Path,
    ctx: dist.DistContext,
) -> bool:
    """Validate on rank 0, save the best model, and tell every rank whether to stop early. With --ema the model
    holds the averaged weights here (the caller swaps them in), so those are what is validated and kept."""
    stop = False
    if ctx.is_main:
        started = time.perf_counter()
        ap = average_precision(valid_set.labels, score(model, featurizer, valid_set, device))
        entry = {"step": state.step, "valid_ap": round(float(ap), 5), "eval_s": round(time.perf_counter() - started, 3)}
        state.history = (state.history or []) + [entry]
        if ap > state.best_ap:
            state.best_ap, state.best_step, state.evals_without_gain = float(ap), state.step, 0
            with atomic_dir(ckpt_dir / "best") as tmp:
                model.save(tmp)
        else:
            state.evals_without_gain += 1
        stop = state.evals_without_gain >= config.patience
    return ctx.broadcast_flag(stop)
