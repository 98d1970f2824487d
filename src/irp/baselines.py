"""Baselines that every model must beat, as scikit-learn style estimators over interaction records.

- `MajorityBaseline`: the training positive rate for every query (the floor: AP = positive rate).
- `KeywordBaseline`: a hand-written lexicon of visual cues ("show me", "picture", colors, patterns,
  styles, visual categories, requests for alternatives); score = sigmoid(bias + weighted cue counts).
  The weights are fixed by default (nothing is learned); `learn_weights=True` fits them per cue group.
- `TfidfLRBaseline`: TF-IDF word 1-2 grams per field (utterance, intent, product titles, ...),
  optionally character n-grams of the utterance, and a logistic regression.

Estimators take a sequence of records (dicts, DESIGN section 2); `fit(records)` reads the labels from
the records (or takes `y`), returns self, and learned state ends in `_`. `run_baseline` is the whole
protocol: fit on train, choose the threshold on validation, report on test.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from irp.metrics import FloatArray, evaluation_report, verdict_fields
from irp.threshold import choose_threshold

Records = Sequence[dict[str, Any]]
Kind = Literal["majority", "keyword", "tfidf-lr"]


def labels_of(records: Records) -> npt.NDArray[np.int64]:
    """The 0/1 labels of records as an array (n,); a clear error when one has no label.

    >>> labels_of([{"id": "a", "label": 1}, {"id": "b", "label": 0}]).tolist()
    [1, 0]
    """
    y = np.empty(len(records), dtype=np.int64)
    for i, r in enumerate(records):
        label = r.get("label")
        if label not in (0, 1):
            raise ValueError(f"record {r.get('id', i)!r} has no 0/1 label (got {label!r})")
        y[i] = label
    return y


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


class _RecordClassifier:
    """Shared predict / predict_proba over a per-record positive score."""

    def _positive_proba(self, records: Records) -> FloatArray:  # (n,)
        raise NotImplementedError

    def predict_proba(self, records: Records) -> FloatArray:
        """Class probabilities, shape (n, 2): column 1 is P(image-seeking)."""
        p = self._positive_proba(records)
        return np.column_stack([1.0 - p, p])

    def predict(self, records: Records, threshold: float = 0.5) -> npt.NDArray[np.int64]:
        """0/1 predictions: P(image-seeking) >= threshold."""
        return (self._positive_proba(records) >= threshold).astype(np.int64)

    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(records) first")


class MajorityBaseline(_RecordClassifier):
    """Predicts the training positive rate for every record.

    >>> m = MajorityBaseline().fit([{"utterance": "a", "label": 1}, {"utterance": "b", "label": 0}])
    >>> m.prior_, m.predict_proba([{"utterance": "c"}]).tolist()
    (0.5, [[0.5, 0.5]])
    """

    def fit(self, records: Records, y: npt.ArrayLike | None = None) -> MajorityBaseline:
        labels = labels_of(records) if y is None else np.asarray(y)
        if labels.size == 0:
            raise ValueError("cannot fit on zero records")
        self.prior_ = float(labels.mean())
        return self

    def _positive_proba(self, records: Records) -> FloatArray:
        self._check_fitted("prior_")
        return np.full(len(records), self.prior_)


# ---- keyword lexicon --------------------------------------------------------------------------------

# Cue groups: (name, default weight, phrases). Phrases are matched case-insensitively on word
# boundaries; within a group the longest alternative wins, so "what does it look like" counts once.
# Weights say how strongly a cue suggests the user wants to *see* products: an explicit request to
# look beats a visual attribute, which beats merely naming a product category.
LEXICON: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    (
        "view_request",
        2.0,
        (
            "show me", "show us", "show", "shows", "showing", "let me see", "can i see", "could i see",
            "may i see", "see", "seeing", "look at", "take a look", "looks like", "look like",
            "what does it look like", "what do they look like", "look", "looking at", "picture",
            "pictures", "pic", "pics", "photo", "photos", "image", "images", "view", "display",
        ),
    ),
    (
        "alternatives",
        1.0,
        (
            "another", "other", "others", "something else", "anything else", "similar", "different",
            "more options", "options", "alternatives", "any more", "instead", "else", "find", "browse",
        ),
    ),
    (
        "color",
        1.0,
        (
            "color", "colors", "colour", "colours", "colored", "colorful", "red", "blue", "green",
            "yellow", "black", "white", "gray", "grey", "brown", "pink", "purple", "orange", "beige",
            "navy", "maroon", "olive", "teal", "cream", "gold", "golden", "silver", "tan", "khaki",
            "burgundy", "violet", "ivory", "turquoise", "dark", "light", "bright", "pastel",
        ),
    ),
    (
        "pattern",
        1.0,
        (
            "pattern", "patterns", "patterned", "striped", "stripes", "stripe", "floral", "flowers",
            "plaid", "checkered", "checked", "polka dot", "polka dots", "dotted", "print", "printed",
            "prints", "camo", "camouflage", "leopard", "animal print", "paisley", "tie dye",
            "houndstooth", "geometric", "embroidered", "lace", "sequins", "sequined", "marled", "solid",
        ),
    ),
    (
        "style",
        0.75,
        (
            "style", "styles", "design", "designs", "shape", "cut", "fit", "neckline", "v-neck",
            "v neck", "crew neck", "scoop neck", "turtleneck", "sleeveless", "long sleeve",
            "long sleeves", "short sleeve", "short sleeves", "maxi", "midi", "mini", "a-line",
            "wrap", "fitted", "loose", "cropped", "hooded", "ruffle", "ruffles", "ruffled", "casual",
            "formal", "elegant", "vintage", "modern", "rustic", "traditional", "contemporary",
            "minimalist", "farmhouse", "cute", "pretty", "beautiful", "stylish", "fancy",
        ),
    ),
    (
        "visual_category",
        0.5,
        (
            "dress", "dresses", "skirt", "skirts", "sweater", "sweaters", "coat", "coats", "jacket",
            "jackets", "shirt", "shirts", "blouse", "blouses", "top", "tops", "jeans", "pants",
            "shoes", "boots", "sneakers", "heels", "bag", "bags", "handbag", "cardigan", "sofa",
            "sofas", "couch", "couches", "chair", "chairs", "table", "tables", "lamp", "lamps", "rug",
            "rugs", "bookcase", "bookcases", "ottoman", "ottomans", "desk", "cabinet", "shelf",
            "shelves", "furniture", "outfit", "outfits", "clothes",
        ),
    ),
)  # fmt: skip
_BIAS = -2.0  # a query with no cue scores sigmoid(-2) = 0.12


def _group_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(phrases, key=len, reverse=True)  # longest first: one match per phrase use
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in alternatives)
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)


_GROUP_PATTERNS = tuple(_group_pattern(phrases) for _, _, phrases in LEXICON)
CUE_GROUPS = tuple(name for name, _, _ in LEXICON)


def cue_counts(texts: Sequence[str]) -> FloatArray:
    """Matches of each cue group in each text, shape (n, len(CUE_GROUPS)).

    >>> cue_counts(["Show me a red striped dress", "what does it look like?", "add it to my cart"]).tolist()
    [[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    return np.array([[len(p.findall(t)) for p in _GROUP_PATTERNS] for t in texts], dtype=np.float64).reshape(
        len(texts), len(_GROUP_PATTERNS)
    )


class KeywordBaseline(_RecordClassifier):
    """Visual-cue lexicon on the utterance: P = sigmoid(bias + sum_g weight_g * count_g).

    With `learn_weights=False` (default) fit learns nothing and uses the lexicon's hand-set weights;
    with `learn_weights=True` it fits one weight per cue group (and the bias) by logistic regression.

    >>> m = KeywordBaseline().fit([])
    >>> p = m.predict_proba([{"utterance": "show me a floral dress"}, {"utterance": "how much is it"}])[:, 1]
    >>> p.round(3).tolist()  # sigmoid(-2 + 2 + 1 + 0.5) and sigmoid(-2)
    [0.818, 0.119]
    """

    def __init__(self, learn_weights: bool = False, C: float = 1.0) -> None:
        self.learn_weights = learn_weights
        self.C = C

    def fit(self, records: Records, y: npt.ArrayLike | None = None) -> KeywordBaseline:
        if not self.learn_weights:
            self.weights_ = np.array([w for _, w, _ in LEXICON])  # (G,)
            self.bias_ = _BIAS
            return self
        from sklearn.linear_model import LogisticRegression

        labels = labels_of(records) if y is None else np.asarray(y)
        lr = LogisticRegression(C=self.C, max_iter=1000).fit(cue_counts([r["utterance"] for r in records]), labels)
        self.weights_ = lr.coef_[0].astype(np.float64)  # (G,)
        self.bias_ = float(lr.intercept_[0])
        return self

    def _positive_proba(self, records: Records) -> FloatArray:
        self._check_fitted("weights_")
        return _sigmoid(self.bias_ + cue_counts([r["utterance"] for r in records]) @ self.weights_)


# ---- TF-IDF + logistic regression -------------------------------------------------------------------


def field_text(record: dict[str, Any], field: str) -> str:
    """The text of one input field of a record: utterance, intent, context, or a product attribute.

    Product attributes (title, brand, color, style, category, ...) are joined over the top-k products
    in rank order; a numeric price is not text and is skipped.

    >>> r = {"utterance": "hi", "context": ["a", "b"], "products": [{"title": "Red Dress", "color": ["red"]},
    ...      {"title": "Blue Skirt", "color": "blue"}]}
    >>> field_text(r, "title"), field_text(r, "color"), field_text(r, "context")
    ('Red Dress | Blue Skirt', 'red blue', 'a | b')
    """
    if field == "utterance":
        return str(record["utterance"])
    if field == "intent":
        return str(record.get("intent") or "unknown")
    if field == "context":
        return " | ".join(record.get("context") or [])
    parts: list[str] = []
    for p in record.get("products") or []:
        value = p.get(field)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, str))
    return (" | " if field == "title" else " ").join(parts)


class TfidfLRBaseline(_RecordClassifier):
    """TF-IDF word 1-2 grams per field (+ optional utterance char 3-5 grams) and logistic regression.

    Each field has its own vectorizer, so "red" in the query and "red" in a product title are different
    features. A field that is empty in every training record (e.g. no products) is left out.

    >>> data = [{"utterance": u, "products": [], "label": l} for u, l in
    ...         [("show me red dresses", 1), ("add to cart", 0), ("show me a blue skirt", 1), ("checkout", 0)]]
    >>> m = TfidfLRBaseline(fields=("utterance", "title")).fit(data)
    >>> sorted(m.vectorizers_), m.predict([{"utterance": "show me shoes", "products": []}]).tolist()
    (['utterance'], [1])
    """

    def __init__(
        self,
        fields: Sequence[str] = ("utterance", "title"),
        char_ngrams: bool = False,
        C: float = 1.0,  # on the SIMMC fashion valid half, C in [0.5, 4] moves AP by < 0.004
        min_df: int = 1,
        seed: int = 0,
    ) -> None:
        if "utterance" not in fields:
            raise ValueError("fields must include 'utterance'")
        self.fields = tuple(fields)
        self.char_ngrams = char_ngrams
        self.C = C
        self.min_df = min_df
        self.seed = seed

    def _vectorizer(self, field: str, char: bool = False) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if char:
            return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=self.min_df, sublinear_tf=True)
        if field == "intent":  # one label per record: a single token, kept whole
            return TfidfVectorizer(token_pattern=r"\S+", lowercase=True)
        return TfidfVectorizer(ngram_range=(1, 2), min_df=self.min_df, sublinear_tf=True)

    def _features(self, records: Records) -> Any:
        import scipy.sparse as sp

        blocks = [
            v.transform([field_text(r, name.removesuffix(":char")) for r in records])
            for name, v in self.vectorizers_.items()
        ]
        return sp.hstack(blocks, format="csr")  # (n, total vocabulary)

    def fit(self, records: Records, y: npt.ArrayLike | None = None) -> TfidfLRBaseline:
        from sklearn.linear_model import LogisticRegression

        labels = labels_of(records) if y is None else np.asarray(y)
        specs = [(f, False) for f in self.fields] + ([("utterance", True)] if self.char_ngrams else [])
        self.vectorizers_: dict[str, Any] = {}
        for field, char in specs:
            texts = [field_text(r, field) for r in records]
            if not any(t.strip() for t in texts):
                continue  # nothing to learn from this field
            vectorizer = self._vectorizer(field, char)
            try:
                vectorizer.fit(texts)
            except ValueError:  # only stop words / tokens below min_df: no vocabulary
                continue
            self.vectorizers_[f"{field}:char" if char else field] = vectorizer
        if "utterance" not in self.vectorizers_:
            raise ValueError("the utterances have no usable vocabulary")
        # liblinear: about 3x faster than lbfgs on this sparse, wide TF-IDF matrix (21K x 34K on SIMMC).
        self.model_ = LogisticRegression(C=self.C, solver="liblinear", max_iter=1000, random_state=self.seed)
        self.model_.fit(self._features(records), labels)
        return self

    def _positive_proba(self, records: Records) -> FloatArray:
        self._check_fitted("model_")
        return self.model_.predict_proba(self._features(records))[:, 1].astype(np.float64)


# ---- the protocol -------------------------------------------------------------------------------------

BASELINES: dict[str, type[_RecordClassifier]] = {
    "majority": MajorityBaseline,
    "keyword": KeywordBaseline,
    "tfidf-lr": TfidfLRBaseline,
}


def make_baseline(kind: str, **params: Any) -> Any:
    """A new, unfitted baseline of `kind` (one of BASELINES)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline kind {kind!r}: use one of {', '.join(BASELINES)}")
    return BASELINES[kind](**params)


def run_baseline(
    kind: str,
    train: Records,
    valid: Records,
    test: Records,
    target_precision: float = 0.8,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.9,
    **params: Any,
) -> dict[str, Any]:
    """Fit on train, choose the threshold on valid (choose_threshold, certified at `confidence` as for IRP
    models; 0 = the point rule), report on test.

    Returns the test `evaluation_report` (precision, recall, f05, ap, roc_auc, threshold, n,
    positives, ci), the target verdict (`target_met`: met / consistent / missed, and `target_verdict`:
    `irp.metrics.target_verdict`) plus `kind`, `params`, `threshold_choice` (the validation operating point as a
    dict) and the sizes of train and valid. A `PrecisionTargetWarning` is emitted when the target
    precision is not reached on validation.
    """
    y_train, y_valid, y_test = labels_of(train), labels_of(valid), labels_of(test)
    model = make_baseline(kind, **params).fit(train, y_train)
    choice = choose_threshold(y_valid, model.predict_proba(valid)[:, 1], target_precision, confidence)
    report = evaluation_report(y_test, model.predict_proba(test)[:, 1], choice.threshold, n_boot=n_boot, seed=seed)
    return {
        **report,
        **verdict_fields(report, target_precision),
        "kind": kind,
        "params": params,
        "threshold_choice": asdict(choice),
        "train": {"n": len(train), "positives": int(y_train.sum())},
        "valid": {"n": len(valid), "positives": int(y_valid.sum())},
    }
