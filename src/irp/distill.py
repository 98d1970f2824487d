"""Knowledge distillation (`irp distill`): teachers (any irp artifacts) score the training and transfer records once;
a student (an ordinary IRP model) trains on α · (its loss on the labels) + (1 − α) · (soft-label BCE against the
teachers' averaged probabilities at temperature T, scaled by T²: Hinton et al. 2015). Transfer records need no label.

The soft target of record n is q_n = mean over teachers t of sigmoid(z_tn / T), z_tn the teacher's raw network logit
(before its calibration: every teacher's map would rescale it differently). Teachers' logits are cached on disk per
(teacher weights, data file) like the tokenized features, so a second student on the same data skips the teachers.

Teachers and student must read the same input fields (a student cannot learn what its teachers saw and it cannot).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irp.artifact import read_meta
from irp.config import IRPConfig
from irp.features import FeatureSet, Featurizer, concat_features
from irp.fileio import atomic_path, file_fingerprint

CACHE_FORMAT = 1


class TeacherError(ValueError):
    """A --teacher that cannot teach this student (not an artifact, other input fields); the message names it."""


@dataclass(frozen=True)
class Teacher:
    """One teacher artifact: its folder and config.json."""

    path: Path
    meta: dict[str, Any]

    @property
    def config(self) -> IRPConfig:
        return IRPConfig.from_dict(self.meta["config"])

    def weights_sha256(self) -> str:
        from irp.onnx_runtime import weights_sha256

        return weights_sha256(self.path)

    def describe(self) -> dict[str, Any]:
        """What the student's config.json records of its teacher: version, backbone, inputs, data fingerprints."""
        from irp.predict import model_version

        cfg = self.meta["config"]
        metrics_file = self.path / "metrics.json"
        valid_ap = json.loads(metrics_file.read_text()).get("ap") if metrics_file.is_file() else None
        return {
            "path": str(self.path),
            "version": model_version(self.meta),
            "weights_sha256": self.weights_sha256(),
            "backbone": cfg["backbone"],
            "fields": list(cfg["fields"]),
            "summarizer": cfg["summarizer"],
            "seed": cfg.get("seed"),
            "label_field": self.meta["training"].get("label_field", "label"),
            "data": {name: {k: info.get(k) for k in ("path", "sha256", "records")}
                     for name, info in (self.meta.get("data") or {}).items()},
            "valid_ap": valid_ap,
        }


def input_signature(config: IRPConfig | dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """What a model reads: its fields (as a sorted tuple) and the context turns it prepends."""
    cfg = config.to_dict() if isinstance(config, IRPConfig) else config
    return tuple(sorted(cfg["fields"])), int(cfg.get("context_turns", 0))


def load_teachers(folders: list[str | Path], student_fields: tuple[str, ...] | None = None,
                  student_context_turns: int = 0) -> list[Teacher]:
    """Read and check the teachers: each must be an irp artifact, and all (and the student, when its fields are
    given) must read the same input fields. Raises TeacherError naming the folder; reads no weights."""
    if not folders:
        raise TeacherError("--teacher: name at least one teacher artifact")
    teachers = []
    for folder in folders:
        try:
            meta = read_meta(folder)
            if not (Path(folder) / "model.safetensors").is_file():
                raise FileNotFoundError(f"{folder} is not an irp model directory (no model.safetensors)")
        except (FileNotFoundError, ValueError) as e:
            raise TeacherError(f"--teacher {folder}: {e}") from None
        teachers.append(Teacher(Path(folder), meta))
    first = input_signature(teachers[0].meta["config"])
    for teacher in teachers[1:]:
        if input_signature(teacher.meta["config"]) != first:
            raise TeacherError(
                f"--teacher {teacher.path} reads {_inputs(teacher.meta['config'])} but --teacher {teachers[0].path} "
                f"reads {_inputs(teachers[0].meta['config'])}: every teacher must read the same input fields"
            )
    if student_fields is not None:
        student = {"fields": student_fields, "context_turns": student_context_turns}
        if input_signature(student) != first:
            raise TeacherError(
                f"the teachers read {_inputs(teachers[0].meta['config'])} but the student would read "
                f"{_inputs(student)} (--fields / --context-turns): teachers and student must read the same input "
                "fields (leave --fields out to take the teachers')"
            )
    return teachers


def _inputs(cfg: dict[str, Any]) -> str:
    turns = int(cfg.get("context_turns", 0))
    return "fields " + ",".join(cfg["fields"]) + (f" with {turns} context turns" if turns else "")


def soft_targets(teacher_logits: np.ndarray, temperature: float) -> np.ndarray:
    """The teachers' averaged probability at temperature T: [M teachers, N] logits -> [N] float32.

    >>> [round(q, 4) for q in soft_targets(np.array([[0.0, 4.0], [2.0, -4.0]]), 2.0).tolist()]  # (σ(0)+σ(1))/2
    [0.6155, 0.5]
    """
    z = torch.from_numpy(np.asarray(teacher_logits, dtype=np.float64)) / temperature
    return torch.sigmoid(z).mean(0).numpy().astype(np.float32)


def teacher_cache_key(weights_sha256: str, data_sha256: str) -> str:
    """The cache entry of one teacher's logits on one data file: its exact weights and the file's bytes.

    >>> teacher_cache_key("a" * 64, "b" * 64) == teacher_cache_key("a" * 64, "b" * 64) != teacher_cache_key("a" * 64, "c" * 64)
    True
    """
    settings = json.dumps({"weights": weights_sha256, "data": data_sha256, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:24]


def teacher_logits(
    teacher: Teacher, source: list[dict] | str | Path, device: torch.device, cache_dir: Path | None,
    write_cache: bool = True,
) -> tuple[np.ndarray, str]:
    """The teacher's raw logits [N] float32 on the records of `source` in file order, and "hit" / "written" /
    "off" (cache). A file's logits are cached under cache_dir/teachers/<key>.npy."""
    from irp.data.io import load_records, progress_bar
    from irp.predict import IRPClassifier

    from_file = isinstance(source, (str, Path))
    entry = None
    if cache_dir is not None and from_file:
        key = teacher_cache_key(teacher.weights_sha256(), file_fingerprint(source)["sha256"])
        entry = Path(cache_dir) / "teachers" / f"{key}.npy"
        if entry.is_file():
            return np.load(entry, allow_pickle=False), "hit"
    records = load_records(source) if from_file else source
    classifier = IRPClassifier.load(teacher.path, device=str(device))
    what = Path(source).name if from_file else "records"
    with progress_bar(f"teacher {Path(teacher.path).name} scores {what}", len(records)) as update:
        logits = classifier.decision_function(records, on_progress=update).astype(np.float32)
    del classifier
    if entry is None or not write_cache:
        return logits, "off"
    entry.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(entry) as tmp:
        with open(tmp, "wb") as handle:  # np.save on a path would add ".npy" to the temporary name
            np.save(handle, logits, allow_pickle=False)
    return logits, "written"


@dataclass
class Distillation:
    """What `irp.train.train` needs to distil: the teachers, the optional transfer records, T and α."""

    teachers: list[Teacher]
    temperature: float = 1.0
    alpha: float = 0.5
    transfer: list[dict] | str | Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # filled by attach(): config.json "distillation"

    def attach(
        self, train_set: FeatureSet, train_source: list[dict] | str | Path, featurizer: Featurizer, label_field: str,
        device: torch.device, cache_dir: Path | None, write_cache: bool,
    ) -> tuple[FeatureSet, dict[str, Any]]:
        """The training features with the transfer records appended and every record's soft target attached;
        returns them and the transfer file's data info (empty without transfer data)."""
        from irp.train import prepare_features

        data_info: dict[str, Any] = {}
        sources = [("train", train_source, train_set)]
        if self.transfer is not None:
            transfer_set, info = prepare_features(self.transfer, featurizer, label_field, cache_dir, write_cache)
            data_info["transfer"] = info
            sources.append(("transfer", self.transfer, transfer_set))
        targets, cache_state = [], {}
        for name, source, features in sources:
            logits = []
            for i, teacher in enumerate(self.teachers):
                z, state = teacher_logits(teacher, source, device, cache_dir, write_cache)
                if len(z) != len(features):
                    raise ValueError(f"--teacher {teacher.path} scored {len(z)} {name} records, expected {len(features)}")
                logits.append(z)
                cache_state[f"{name}/{i}"] = state
            targets.append(soft_targets(np.stack(logits), self.temperature))
        joined = FeatureSet(train_set.ids, train_set.offsets, train_set.slots, train_set.labels, targets[0])
        if self.transfer is not None:  # transfer records learn from the teachers alone: a label they carry is not read
            transfer_set = sources[1][2]
            unlabelled = np.full_like(transfer_set.labels, np.nan)
            joined = concat_features(joined, FeatureSet(transfer_set.ids, transfer_set.offsets, transfer_set.slots,
                                                        unlabelled, targets[1]))
        labelled = ~np.isnan(joined.labels)
        self.summary = {
            "teachers": [t.describe() for t in self.teachers],
            "temperature": self.temperature,
            "alpha": self.alpha,
            "loss": "alpha * (the label loss on labelled records) + (1 - alpha) * T^2 * BCE(sigmoid(z / T), "
                    "mean over teachers of sigmoid(z_teacher / T))",
            "transfer": {k: data_info["transfer"].get(k) for k in ("path", "sha256", "records")}
            if self.transfer is not None and "transfer" in data_info else None,
            "n_train": len(train_set),
            "n_transfer": len(joined) - len(train_set),
            "n_unlabelled": int((~labelled).sum()),
            "soft_target_mean": round(float(joined.soft_targets.mean()), 5) if len(joined) else None,
            "teacher_cache": cache_state,
        }
        return joined, data_info
