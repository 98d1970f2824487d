"""Records -> token ids: the fused input of the IRP model, built once and batched with dynamic padding.

Sequence layout of one record (B = batch, T = longest row + F, F = product attributes):

    [CLS] intent [SEP] utterance [SEP] context [SEP] product-text [SEP] <slot_1> ... <slot_F> [PAD] ...

- `context` only with `--fields ...,context` / `context_turns > 0`; `product-text` only for the mmr/concat
  summarizers (attribute text of the selected products).
- For mean/max, each slot is later replaced inside the model by the pooled embedding of one attribute across the
  top-k products; here we only record which value (an index into a table of distinct attribute values) each of the
  k products has for each attribute: `slots[n, k, f]` (-1 = product or attribute absent).

Every field has a token budget; what does not fit is cut and counted in `Featurizer.truncations`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from irp.config import IRPConfig
from irp.model.summarize import bag_cosine, mmr_select

TOP_K = 5  # products per record the model reads (the paper summarizes the top-k retrieved results)


def value_text(value: object) -> str:
    """One attribute value as text: lists are joined, numbers stringified, absent is ''.

    >>> value_text(["boho", "casual"]), value_text(None), value_text(" Red ")
    ('boho, casual', '', 'Red')
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v).strip() for v in value if str(v).strip())
    return str(value).strip()


@dataclass
class FeatureSet:
    """Columnar features of N records (numpy, cheap to cache and to slice)."""

    ids: np.ndarray  # [sum of text lengths] int32, text token ids of all records back to back
    offsets: np.ndarray  # [N + 1] int64, record n is ids[offsets[n]:offsets[n+1]]
    slots: np.ndarray | None  # [N, K, F] int32 value index per product and attribute, -1 = absent
    labels: np.ndarray  # [N] float32, NaN where the record has no label
    soft_targets: np.ndarray | None = None  # [N] float32, the teachers' probabilities (irp distill); not cached

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def concat_features(first: FeatureSet, second: FeatureSet) -> FeatureSet:
    """Records of `first` then `second` (both built by the same Featurizer, so slot indices share its value table).

    >>> a = FeatureSet(np.array([1, 2, 3], np.int32), np.array([0, 2, 3]), None, np.array([1.0, 0.0], np.float32))
    >>> b = FeatureSet(np.array([4], np.int32), np.array([0, 1]), None, np.array([np.nan], np.float32))
    >>> c = concat_features(a, b)
    >>> c.offsets.tolist(), c.ids.tolist(), len(c)
    ([0, 2, 3, 4], [1, 2, 3, 4], 3)
    """
    slots = None
    if first.slots is not None and second.slots is not None:
        slots = np.concatenate([first.slots, second.slots])
    elif first.slots is not None or second.slots is not None:
        raise ValueError("cannot join features with and without product slots")
    soft = None
    if first.soft_targets is not None and second.soft_targets is not None:
        soft = np.concatenate([first.soft_targets, second.soft_targets])
    return FeatureSet(
        ids=np.concatenate([first.ids, second.ids]),
        offsets=np.concatenate([first.offsets, second.offsets[1:] + first.offsets[-1]]),
        slots=slots,
        labels=np.concatenate([first.labels, second.labels]),
        soft_targets=soft,
    )


class Featurizer:
    """Turns records into `FeatureSet`s and index batches into padded tensors.

    The table of distinct attribute values grows as records are featurized; a trained model stores it in
    memory only (values are re-tokenized at load time, so unseen values at serving time just work).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: IRPConfig) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.product_fields = config.product_fields
        backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Slot placeholder: any real token id works, the model overwrites the embedding.
        self.slot_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else self.pad_id
        self._token_cache: dict[str, list[int]] = {}
        self.value_index: dict[str, int] = {}
        self.value_tokens: list[list[int]] = []
        self._value_matrix: np.ndarray | None = None
        self.truncations: Counter[str] = Counter()

    # ---- tokenization -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids without special tokens; each distinct text is tokenized once (queries repeat a lot)."""
        missing = list({t for t in texts if t not in self._token_cache})
        if missing:
            for text, enc in zip(missing, self._backend.encode_batch(missing, add_special_tokens=False)):
                self._token_cache[text] = enc.ids
        return [self._token_cache[t] for t in texts]

    def _cut(self, ids: list[int], budget: int, name: str, keep_end: bool = False) -> list[int]:
        if len(ids) <= budget:
            return ids
        self.truncations[name] += 1
        return ids[-budget:] if keep_end else ids[:budget]

    def _value_ids(self, texts: list[str]) -> list[int]:
        """Indices of attribute values in the value table, adding (and tokenizing in one batch) new ones."""
        new = [t for t in dict.fromkeys(texts) if t not in self.value_index]
        for text, ids in zip(new, self.encode(new) if new else []):
            self.value_index[text] = len(self.value_tokens)
            self.value_tokens.append(self._cut(ids, self.config.budget.value, "value"))
        if new:
            self._value_matrix = None  # rebuilt lazily by value_matrix()
        return [self.value_index[t] for t in texts]

    def value_matrix(self) -> np.ndarray:
        """All attribute values' token ids, padded: [V, Lv] int64 (built lazily, reused by every batch)."""
        if self._value_matrix is None:
            width = max([len(t) for t in self.value_tokens] + [1])
            matrix = np.full((max(len(self.value_tokens), 1), width), self.pad_id, dtype=np.int64)
            for row, tokens in enumerate(self.value_tokens):
                matrix[row, : len(tokens)] = tokens
            self._value_matrix = matrix
        return self._value_matrix

    # ---- records -> features ----------------------------------------------------------------------
    def featurize(self, records: Iterable[dict], label_field: str = "label") -> FeatureSet:
        """Features of `records` (label NaN where a record has no `label_field`)."""
        from irp.data.io import gc_paused

        with gc_paused():  # building millions of small lists next to live records makes the GC rescan them
            return self._featurize(list(records), label_field)

    def _featurize(self, records: list[dict], label_field: str) -> FeatureSet:
        cfg, budget = self.config, self.config.budget
        use_intent = "intent" in cfg.fields
        use_context = "context" in cfg.fields or cfg.context_turns > 0
        text_products = cfg.summarizer in ("mmr", "concat") and bool(self.product_fields)

        utterance_texts = [r["utterance"].lower() for r in records]
        intent_texts = [str(r.get("intent") or "unknown").replace("_", " ") if use_intent else "" for r in records]
        utterances = self.encode(utterance_texts)
        intents = self.encode(intent_texts)
        # Truncation of utterance and intent is counted per record, then every row just slices.
        self.truncations["utterance"] += sum(len(u) > budget.utterance for u in utterances)
        self.truncations["intent"] += sum(len(i) > budget.intent for i in intents) if use_intent else 0
        memo: dict[tuple[str, str], list[int]] = {}  # logs repeat queries: build each distinct head once
        rows: list[list[int]] = []
        for n, record in enumerate(records):
            key = (intent_texts[n], utterance_texts[n])
            head = memo.get(key)
            if head is None:
                head = [self.cls_id] + (intents[n][: budget.intent] + [self.sep_id] if use_intent else [])
                head = memo[key] = head + utterances[n][: budget.utterance] + [self.sep_id]
            if not (use_context and record.get("context")) and not (text_products and record.get("products")):
                rows.append(head)
                continue
            row = list(head)
            if use_context and record.get("context"):
                turns = record["context"][-max(cfg.context_turns, 1):]
                ctx = self.encode([" | ".join(turns).lower()])[0]
                row += self._cut(ctx, budget.context, "context", keep_end=True) + [self.sep_id]
            if text_products and record.get("products"):
                row += self._product_text(utterances[n], record["products"][:TOP_K]) + [self.sep_id]
            rows.append(row)

        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
        slots = self._slots(records) if cfg.uses_slots else None
        labels = np.array(
            [np.nan if r.get(label_field) is None else float(r[label_field]) for r in records], dtype=np.float32
        )
        return FeatureSet(ids, offsets, slots, labels)

    def _slots(self, records: list[dict]) -> np.ndarray:
        """[N, K, F] value indices. Products repeat across records (the same catalogue items are retrieved
        again and again), so each distinct product is resolved once: a record becomes K product-row ids."""
        fields = self.product_fields
        product_row: dict[tuple, int] = {}
        product_values: list[list[str]] = []  # [P][F] value texts of each distinct product

        def row_of(product: dict) -> int:
            key = tuple(map(product.get, fields))
            try:
                return product_row[key]
            except KeyError:
                pass
            except TypeError:  # list-valued attributes are unhashable: key on their text instead
                key = tuple(value_text(v) for v in key)
                if key in product_row:
                    return product_row[key]
            product_row[key] = len(product_values)
            product_values.append([value_text(product.get(name)).lower() for name in fields])
            return product_row[key]

        absent = -1
        per_record = np.full((len(records), TOP_K), absent, dtype=np.int64)
        for n, record in enumerate(records):
            products = record.get("products")
            if products:
                rows = [row_of(p) for p in products[:TOP_K]]
                per_record[n, : len(rows)] = rows
        # Product-row table [P + 1, F] of value indices; its last row (index -1) is the absent product.
        table = np.full((len(product_values) + 1, len(fields)), -1, dtype=np.int32)
        if product_values:
            texts = [t for values in product_values for t in values]
            ids = np.array(self._value_ids([t for t in texts if t]), dtype=np.int32)
            flat = np.full(len(texts), -1, dtype=np.int32)
            flat[[i for i, t in enumerate(texts) if t]] = ids
            table[:-1] = flat.reshape(len(product_values), len(fields))
        return table[per_record]

    def _product_text(self, utterance_ids: list[int], products: list[dict]) -> list[int]:
        """Attribute text of the products chosen by the summarizer (all for concat, MMR's m for mmr)."""
        texts = [" ".join(value_text(p.get(f)) for f in self.product_fields).lower() for p in products]
        token_lists = self.encode(texts)
        if self.config.summarizer == "mmr":
            bags = [Counter(ids) for ids in token_lists]
            query = Counter(utterance_ids)
            relevance = [bag_cosine(query, bag) for bag in bags]
            similarity = np.array([[bag_cosine(a, b) for b in bags] for a in bags])
            order = mmr_select(relevance, similarity, self.config.mmr_m, self.config.mmr_lambda)
        else:
            order = list(range(len(products)))
        per_product = max(self.config.budget.product_text // max(len(order), 1), 1)
        out: list[int] = []
        for i in order:
            if out:
                out.append(self.sep_id)
            out += self._cut(token_lists[i], per_product, "product_text")
        return out

    # ---- features -> padded batch -----------------------------------------------------------------
    def collate(self, features: FeatureSet, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Pad a batch dynamically (to its own longest row) and attach the slot inputs.

        Returns input_ids / attention_mask / token_type_ids / slot_mask [B, T], labels [B], soft_targets [B] when
        the features carry teachers' scores, and for mean/max: value_ids [U, Lv] (the batch's distinct attribute
        values), value_index [B, K, F] into them (-1 absent).
        """
        index = np.asarray(index)
        starts, lengths = features.offsets[index], features.lengths[index]
        n_slots = features.slots.shape[2] if features.slots is not None else 0
        batch, width = len(index), int(lengths.max()) + n_slots
        input_ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        rows = np.repeat(np.arange(batch), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        input_ids[rows, cols] = features.ids[np.repeat(starts, lengths) + cols]
        attention = np.arange(width)[None, :] < (lengths + n_slots)[:, None]
        slot_mask = attention & (np.arange(width)[None, :] >= lengths[:, None])
        input_ids[slot_mask] = self.slot_id
        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "token_type_ids": torch.from_numpy(slot_mask.astype(np.int64)),
            "slot_mask": torch.from_numpy(slot_mask),
            "labels": torch.from_numpy(features.labels[index]),
        }
        if features.soft_targets is not None:
            out["soft_targets"] = torch.from_numpy(features.soft_targets[index])
        if features.slots is not None:
            slots = features.slots[index]  # [B, K, F]
            distinct, inverse = np.unique(slots[slots >= 0], return_inverse=True)
            value_index = np.full(slots.shape, -1, dtype=np.int64)
            value_index[slots >= 0] = inverse
            value_ids = self.value_matrix()[distinct if len(distinct) else [0]]  # [U, Lv]
            value_ids = value_ids[:, : max(int((value_ids != self.pad_id).sum(1).max()), 1)]
            out["value_ids"] = torch.from_numpy(np.ascontiguousarray(value_ids))
            out["value_index"] = torch.from_numpy(value_index)
        return out


# ---- on-disk cache: tokenize a log once, reuse it across runs --------------------------------------------
def cache_key(featurizer: Featurizer, fingerprint: str, label_field: str) -> str:
    """Everything that changes the features: the data, the label, the input config and the tokenizer."""
    import hashlib
    import json

    cfg = featurizer.config
    settings = {
        "data": fingerprint,
        "label": label_field,
        "fields": cfg.fields,
        "summarizer": cfg.summarizer,
        "context_turns": cfg.context_turns,
        "mmr": [cfg.mmr_m, cfg.mmr_lambda],
        "budget": cfg.budget.__dict__,
        "tokenizer": hashlib.sha256(featurizer._backend.to_str().encode()).hexdigest(),
        "top_k": TOP_K,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def save_features(directory, features: FeatureSet, featurizer: Featurizer) -> None:
    """Arrays as .npy (memory-mappable, no pickle) and the slots' value strings as JSON, written atomically."""
    import json
    from pathlib import Path

    from irp.fileio import atomic_dir

    with atomic_dir(Path(directory)) as tmp:
        np.save(tmp / "ids.npy", features.ids)
        np.save(tmp / "offsets.npy", features.offsets)
        np.save(tmp / "labels.npy", features.labels)
        if features.slots is not None:
            used = np.unique(features.slots[features.slots >= 0])
            local = np.full(features.slots.shape, -1, dtype=np.int32)
            local[features.slots >= 0] = np.searchsorted(used, features.slots[features.slots >= 0])
            np.save(tmp / "slots.npy", local)
            texts = {i: t for t, i in featurizer.value_index.items()}
            (tmp / "values.json").write_text(json.dumps([texts[int(i)] for i in used]))


def load_features(directory, featurizer: Featurizer) -> FeatureSet:
    """Load cached features; slot indices are remapped into this featurizer's value table."""
    import json
    from pathlib import Path

    directory = Path(directory)
    slots = None
    if (directory / "slots.npy").exists():
        local = np.load(directory / "slots.npy", allow_pickle=False)
        mapping = np.array(featurizer._value_ids(json.loads((directory / "values.json").read_text())) + [-1], dtype=np.int32)
        slots = mapping[local]  # local -1 picks the trailing -1
    return FeatureSet(
        ids=np.load(directory / "ids.npy", mmap_mode="r"),
        offsets=np.load(directory / "offsets.npy", allow_pickle=False),
        slots=slots,
        labels=np.load(directory / "labels.npy", allow_pickle=False),
    )
