"""A small generative model of voice-shopping logs (the paper's 900K production logs are private).

The generative story, per session of 1..6 turns of one user:

1. The shopper has a *target* category and product (catalogue best sellers are likelier). A later
   turn may switch category (12 %) or move to another product of the same one.
2. How they say it: explicit ("find me a red floral maxi dress"), vague ("a gift for my sister",
   "something for the living room": names no category), brand only, order history ("reorder my
   usual") or a follow-up about what is on the table ("does it come in blue", "how much is it").
   The intent (search, buy, reorder, ...) depends on that and on the category; fillers and ASR
   errors make it voice-like.
3. Retrieval: BM25 over the catalogue with the transcript plus what a production engine knows and the
   transcript does not say (recent browsing, order history, the session's topic), so the retrieved
   products reveal the target when the words do not. Some retrievals fail (irrelevant products).
4. The latent visual intent `true_intent` ~ Bernoulli(sigmoid(logit)), logit from interacting causes:
   the target category's visual affinity (scaled by the intent), visual words in the query (scaled
   by the affinity), the intent, how varied the retrieved products look (stronger for vague queries),
   and a per-user propensity. See `_visual_logit` and docs/simulator.md.
5. The proxy `label` (carousel tap): a visual intent is missed when the user is busy (more often
   without a screen at hand), and a non-visual one is tapped by accident.

Everything is drawn with numpy per chunk of records; strings are assembled in one pass per chunk and
each distinct retrieval query is scored once (`irp.data.retrieval.CachedRetriever`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irp.data import catalog as cv
from irp.data.retrieval import BM25Index, CachedRetriever, tokenize
from irp.schema import INTENTS

CHUNK = 50_000  # records drawn per vectorised step (fixed: the output depends on it)
MAX_TURNS = 6
EXPLICIT, VAGUE, BRAND, HISTORY, FOLLOWUP = range(5)
SPECS = ("explicit", "vague", "brand", "history", "followup")

# P(intent | how the query is said), columns in INTENTS order:
#                     search buy reorder cart price question deals browse
_INTENT_W = np.array([
    [30, 14, 3, 9, 10, 9, 7, 18],  # explicit
    [36, 8, 0, 0, 4, 0, 10, 42],  # vague
    [30, 10, 3, 5, 8, 0, 16, 28],  # brand
    [0, 22, 55, 15, 8, 0, 0, 0],  # history
    [12, 10, 0, 20, 18, 26, 4, 10],  # follow-up
], dtype=np.float64)
# How a consumable category (1 - visual affinity) shifts intents: reorders and buys up, browsing down.
_INTENT_CONSUMABLE = np.array([0.0, 0.8, 3.0, 0.5, 0.0, 0.0, 0.0, -0.9])
_INTENT_BASE = np.array([1.0, 1.0, 0.3, 1.0, 1.0, 1.0, 1.0, 1.4])

# Causes of the latent visual intent (docs/simulator.md explains the numbers).
_INTENT_EFFECT = np.array([0.3, -0.6, -2.0, -0.9, -1.4, 0.0, 0.3, 1.4])  # additive, per intent
_INTENT_AFFINITY = np.array([1.0, 0.8, 0.4, 0.7, 0.6, 0.9, 0.9, 1.2])  # scales the affinity effect
W_AFFINITY = 8.0  # per unit of visual affinity (0.04 batteries .. 0.95 wall art)
W_VISUAL_WORDS = 0.8  # per visual word in the query (color, style, "show", "look"), times (0.3 + affinity)
W_DIVERSITY = 1.5  # per unit of retrieved-product variety (distinct colors and styles), x1.6 when vague
BIAS = -2.2


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated log; the same config always gives the same records."""

    n: int = 10_000  # records
    seed: int = 0
    k: int = 5  # products retrieved per query
    asr_error_rate: float = 0.04  # P(a spoken word is misrecognized)
    retrieval_failure_rate: float = 0.05  # P(retrieval returns irrelevant products)
    miss_rate: float = 0.12  # P(no tap | visual intent, screen at hand): the user was busy
    accidental_tap_rate: float = 0.025  # P(tap | no visual intent)
    screen_rate: float = 0.9  # P(a screen device is reachable)
    user_sd: float = 0.5  # spread of the per-user visual propensity (logit units)
    personalization_rate: float = 0.9  # P(retrieval knows the target of a vague or brand query)
    catalog_seed: int = 0  # the catalogue is shared across simulations by default

    def check(self) -> None:
        """Raise ValueError naming the first knob out of range."""
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not 1 <= self.k <= 50:
            raise ValueError(f"k must be in 1..50, got {self.k}")
        for name in ("asr_error_rate", "retrieval_failure_rate", "miss_rate", "accidental_tap_rate",
                     "screen_rate", "personalization_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.user_sd < 0:
            raise ValueError(f"user_sd must be >= 0, got {self.user_sd}")


@dataclass
class SimSummary:
    """What a simulation wrote: counts and rates over all records."""

    path: str
    rows: int
    positive_rate: float  # mean `label`
    true_positive_rate: float  # mean `true_intent`
    label_noise_rate: float  # mean(label != true_intent)
    seconds: float
    distinct_queries_scored: int = 0  # retrieval work after de-duplication
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)  # target category -> rows, rates
    per_intent: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the simulated world: catalogue arrays and search index, built once per catalogue seed ---------------


@dataclass(frozen=True)
class _World:
    products: list[dict[str, object]]
    cat: np.ndarray  # (D,) category index of each product
    color: np.ndarray  # (D,) color code
    style: np.ndarray  # (D,) style code
    ptype: list[str]  # (D,) spoken product type ("maxi dress")
    cat_pop: np.ndarray  # (C,) P(session category)
    cum_in_cat: np.ndarray  # (D,) category index + cumulative popularity within the category, in (c, c+1]
    visual: np.ndarray  # (C,) visual affinity
    has_audience: np.ndarray  # (C,) bool
    vague_text: list[str]  # (P,) vague phrases
    vague_cum: np.ndarray  # (C, P) cumulative P(phrase | category)
    index: BM25Index


@functools.lru_cache(maxsize=2)
def _world(catalog_seed: int) -> _World:
    products = cv.build_catalog(catalog_seed)
    cat_of = {name: i for i, name in enumerate(cv.CATEGORY_NAMES)}
    cat = np.array([cat_of[p["category"]] for p in products])
    codes = lambda key: np.unique([str(p[key]) for p in products], return_inverse=True)[1]  # noqa: E731
    # The product type is the longest type of its category that its title spells out.
    ptype = []
    for p in products:
        title = str(p["title"]).lower()
        ptype.append(max((t for t in cv.category(str(p["category"])).types if t in title), key=len))
    # Popularity: Zipf within a category (index 0 = best seller), consumables are bought more often.
    rank = np.arange(len(products)) - np.searchsorted(cat, cat)
    pop = 1.0 / (rank + 1.0) ** 0.8
    sums = np.bincount(cat, weights=pop)
    cum_in_cat = cat + (np.cumsum(pop) - (np.cumsum(sums) - sums)[cat]) / sums[cat]
    visual = np.array([c.visual for c in cv.CATEGORIES])
    cat_pop = 1.0 + 0.6 * (visual < 0.2)
    needs = cv.vague_needs()
    w = np.array([[weights.get(name, 0.0) for name in cv.CATEGORY_NAMES] for _, weights in needs]).T  # (C, P)
    docs = [tokenize(cv.index_text(p)) for p in products]
    return _World(
        products=products, cat=cat, color=codes("color"), style=codes("style"), ptype=ptype,
        cat_pop=cat_pop / cat_pop.sum(), cum_in_cat=cum_in_cat, visual=visual,
        has_audience=np.array([bool(c.audiences) for c in cv.CATEGORIES]),
        vague_text=[text for text, _ in needs], vague_cum=np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1),
        index=BM25Index(docs),
    )


# ---- small vectorised helpers ------------------------------------------------------------------------


def _pick(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of an (m x n) probability matrix (rows need not be normalized).

    >>> _pick(np.random.default_rng(0), np.array([[0.0, 1.0], [5.0, 0.0]])).tolist()
    [1, 0]
    """
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _carry(values: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """Each position takes the value at the latest position where `restart` is true (position 0 must be).

    >>> _carry(np.array([5, 6, 7, 8]), np.array([True, False, True, False])).tolist()
    [5, 5, 7, 7]
    """
    return values[np.maximum.accumulate(np.where(restart, np.arange(len(values)), 0))]


def _n_distinct(codes: np.ndarray) -> np.ndarray:
    """Distinct values per row of an (m x k) array.

    >>> _n_distinct(np.array([[1, 1, 2], [3, 3, 3]])).tolist()
    [2, 1]
    """
    s = np.sort(codes, axis=1)
    return 1 + (np.diff(s, axis=1) != 0).sum(axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _visual_logit(affinity: np.ndarray, intent: np.ndarray, n_visual_words: np.ndarray, diversity: np.ndarray,
                  vague: np.ndarray, user: np.ndarray) -> np.ndarray:
    """The latent visual intent's logit from its causes (all arrays (m,)).

    >>> float(_visual_logit(np.array([0.95]), np.array([7]), np.array([1]), np.array([0.8]), np.array([False]),
    ...                     np.array([0.0]))[0]) > 2 > 0 > float(_visual_logit(np.array([0.04]), np.array([2]),
    ...     np.array([0]), np.array([0.2]), np.array([False]), np.array([0.0]))[0])
    True
    """
    return (BIAS
            + W_AFFINITY * (affinity - 0.45) * _INTENT_AFFINITY[intent]
            + _INTENT_EFFECT[intent]
            + W_VISUAL_WORDS * np.minimum(n_visual_words, 2) * (0.3 + affinity)
            + W_DIVERSITY * (diversity - 0.5) * np.where(vague, 1.6, 1.0)
            + user)


# ---- speech ------------------------------------------------------------------------------------------


def _explicit_np(ptype: str, category: str, brand: str, color: str, style: str, material: str, form: int,
                 flags: int, r: int) -> tuple[str, int]:
    """A spoken noun phrase naming the product, and how many visual words it holds.

    `flags` bits: 1 color, 2 style, 4 brand, 8 material, 16 price cap, 32 audience.
    """
    noun = ptype if form < 4 else (ptype.split()[-1] if form < 9 else category)
    words: list[str] = []
    plural = noun.endswith("s") and not noun.endswith("ss")
    det = ("some", "", "the", "any")[r % 4] if plural else ("a", "the", "", "a")[r % 4]
    if det:
        words.append(det)
    n_visual = 0
    if flags & 4 and r & 64:
        words.append(brand)
    if flags & 1:
        words.append(color)
        n_visual += 1
    if flags & 2:
        words.append(style)
        n_visual += 1
    if flags & 8:
        words.append(material)
    if flags & 32:
        words.append(("womens", "mens", "kids")[r % 3])
    words.append(noun)
    if flags & 4 and not r & 64:
        words.append(f"from {brand}")
    if flags & 16:
        words.append(cv.PRICE_CAPS[r % len(cv.PRICE_CAPS)])
    return " ".join(words), n_visual


def _template_visual_words(template: str) -> int:
    """Visual cue words a template adds ("show", "look", a {color} or {style} slot)."""
    words = set(template.replace("{", " ").replace("}", " ").split())
    return len(words & cv.VISUAL_CUE_WORDS) + ("color" in words) + ("style" in words)


def _asr(utterances: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Misrecognize each word with probability `rate`: a homophone, a dropped or clipped word, a merge."""
    if rate <= 0:
        return utterances
    words = [u.split() for u in utterances]
    lens = np.array([len(w) for w in words])
    width = int(lens.max())
    hit = (rng.random((len(words), width)) < rate) & (np.arange(width)[None, :] < lens[:, None])
    rows, cols = np.nonzero(hit)  # row-major: grouped by row, columns ascending
    kinds = rng.integers(0, 1 << 30, size=len(rows)).tolist()
    out = list(utterances)
    errors: dict[int, list[tuple[int, int]]] = {}
    for r, c, kk in zip(rows.tolist(), cols.tolist(), kinds):
        errors.setdefault(r, []).append((c, kk))
    for r, errs in errors.items():
        ws = words[r]
        for c, kk in reversed(errs):  # right to left: deletions and merges keep earlier indices valid
            if c >= len(ws):
                continue
            w = ws[c]
            alts = cv.ASR_CONFUSIONS.get(w)
            if alts and kk % 4:
                ws[c] = alts[(kk >> 2) % len(alts)]
            elif kk % 5 == 0 and len(ws) > 1:
                del ws[c]  # the word was not heard
            elif kk % 5 in (1, 2) and len(w) > 3:
                j = 1 + (kk >> 3) % (len(w) - 2)
                ws[c] = w[:j] + w[j + 1:]  # a clipped sound
            elif c + 1 < len(ws):
                ws[c:c + 2] = [w + ws[c + 1]]  # two words heard as one
        out[r] = " ".join(ws) if ws else utterances[r]
    return out


def _add_fillers(utts: list[str], rng: np.random.Generator) -> list[str]:
    """Voice-style fillers: before (35 %), after (12 %) and after the first word (8 %)."""
    where = rng.random((len(utts), 3)).tolist()
    pick = rng.integers(0, 1 << 30, size=len(utts)).tolist()
    before, after, inside = cv.FILLERS_BEFORE, cv.FILLERS_AFTER, cv.FILLERS_INSIDE
    out = []
    for words, (a, b, c), f in zip(utts, where, pick):
        if c < 0.08:
            first, _, rest = words.partition(" ")
            words = f"{first} {inside[f % len(inside)]} {rest}".strip()
        if a < 0.35:
            words = f"{before[f % len(before)]} {words}"
        if b < 0.12:
            words = f"{words} {after[f % len(after)]}"
        out.append(words)
    return out


# ---- one chunk ---------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """`m` simulated records as columns (arrays are (m,) unless noted)."""

    first_id: int
    utterance: list[str]
    intent: np.ndarray  # index into INTENTS
    session: np.ndarray  # global session number
    turn: np.ndarray  # turn within the session (context = the session's earlier utterances)
    products: np.ndarray  # (m x k) catalogue indices, -1 for an empty slot
    label: np.ndarray  # bool
    true: np.ndarray  # bool
    screen: np.ndarray  # bool
    user: np.ndarray
    category: np.ndarray  # target category index (latent)
    spec: np.ndarray  # how the query was said (SPECS index, latent)
    p_true: np.ndarray  # P(true_intent) (latent)
    n_scored: int = 0  # distinct retrieval queries scored for this chunk


def _chunk(world: _World, cfg: SimConfig, rng: np.random.Generator, retriever: CachedRetriever, first_id: int,
           first_session: int, m: int, user_prop: np.ndarray, user_screen: np.ndarray) -> _Chunk:
    """`m` records whose ids start at `first_id` and sessions at `first_session`."""
    n_cats = len(world.visual)
    # Sessions of 1..MAX_TURNS turns; the last one is cut at the chunk end.
    lens = np.minimum(rng.geometric(0.38, size=m), MAX_TURNS)
    ends = np.cumsum(lens)
    n_sess = int(np.searchsorted(ends, m)) + 1
    lens = lens[:n_sess]
    lens[-1] -= int(ends[n_sess - 1]) - m
    sess = np.repeat(np.arange(n_sess), lens)  # (m,)
    turn = np.arange(m) - np.repeat(np.cumsum(lens) - lens, lens)
    user = (len(user_prop) * rng.random(n_sess) ** 2).astype(np.int64)[sess]  # heavy users have low ids

    # Target category and product; turns after the first may switch category or product.
    start = (turn == 0) | (rng.random(m) < 0.12)
    cat = _carry(_pick(rng, np.broadcast_to(world.cat_pop, (m, n_cats))), start)
    vis = world.visual[cat]
    spec_p = np.where(
        start[:, None],
        np.stack([0.41 - 0.25 * (1 - vis) ** 2, np.full(m, 0.40), np.full(m, 0.08),
                  0.04 + 0.30 * (1 - vis) ** 2, np.zeros(m)], axis=1),
        np.array([[0.27, 0.04, 0.04, 0.0, 0.65]]),
    )
    spec = _pick(rng, spec_p)
    new_target = start | (spec != FOLLOWUP) | (rng.random(m) < 0.5)
    drawn = np.searchsorted(world.cum_in_cat, cat + rng.random(m), side="right")
    first_of, last_of = np.searchsorted(world.cat, cat), np.searchsorted(world.cat, cat, side="right") - 1
    target = _carry(np.clip(drawn, first_of, last_of), new_target)  # clip guards float edges
    intent_p = _INTENT_W[spec] * np.maximum(_INTENT_BASE + _INTENT_CONSUMABLE * (1 - vis)[:, None], 0.05)
    intent = _pick(rng, intent_p)
    phrase = (world.vague_cum[cat] < rng.random(m)[:, None]).sum(axis=1)  # (m,) vague phrase index

    # What the noun phrase says: visual words likelier for visual categories.
    u = rng.random((m, 7))
    flags = ((u[:, 0] < 0.08 + 0.32 * vis) * 1 + (u[:, 1] < 0.05 + 0.22 * vis) * 2 + (u[:, 2] < 0.12) * 4
             + (u[:, 3] < 0.06) * 8 + (u[:, 4] < 0.07) * 16 + ((u[:, 5] < 0.35) & world.has_audience[cat]) * 32)
    form = (u[:, 6] * 10).astype(np.int64)  # 0-3 full type, 4-8 head noun ("a chair"), 9 category name
    r = rng.integers(0, 1 << 30, size=(m, 4))  # template and slot choices
    personal = rng.random(m) < cfg.personalization_rate

    products, ptype, cats = world.products, world.ptype, cv.CATEGORIES
    utts: list[str] = []
    hidden: list[str] = []  # what retrieval knows beyond the words
    n_vis = np.zeros(m, dtype=np.int64)
    refine = np.zeros(m, dtype=bool)  # a follow-up that changes the request ("in blue") retrieves again
    for i, (sp, it, p, c, fl, fo, ph, rr, pers) in enumerate(zip(
            spec.tolist(), intent.tolist(), target.tolist(), cat.tolist(), flags.tolist(), form.tolist(),
            phrase.tolist(), r.tolist(), personal.tolist())):
        prod, cat_i, name = products[p], cats[c], INTENTS[it]
        alt_color = cat_i.colors[rr[1] % len(cat_i.colors)]
        if sp == FOLLOWUP:
            templates = cv.FOLLOWUP_TEMPLATES[name]
            j = rr[0] % len(templates)
            utts.append(templates[j].format(color=alt_color, style=cat_i.styles[rr[2] % len(cat_i.styles)]))
            n_vis[i] = _FU_VIS[name][j]
            refine[i] = _FU_REFINE[name][j]
            hidden.append("")
            continue
        vis_words = 0
        templates = cv.NP_TEMPLATES[name]
        if sp == EXPLICIT:
            np_text, vis_words = _explicit_np(ptype[p], cat_i.name, str(prod["brand"]), str(prod["color"]),
                                              str(prod["style"]), str(prod["material"]), fo, fl, rr[3])
            # "a chair", "a set": the engine resolves the head noun from the shopper's history
            hid = (ptype[p] if rr[2] % 2 else str(prod["brand"])) if pers and rr[2] % 4 < 3 else ""
        else:
            templates = _NP_GENERAL[name]  # "what {np} do you have" only fits a product noun
            if sp == VAGUE:
                np_text = world.vague_text[ph]
                hid = f"{ptype[p]} {cat_i.name}" if pers else ""
            elif sp == BRAND:
                np_text = cv.BRAND_NPS[rr[3] % len(cv.BRAND_NPS)].format(brand=prod["brand"])
                hid = ptype[p] if pers else ""
            else:  # order history: the engine looks the product up in past orders
                np_text = cv.HISTORY_NPS[rr[3] % len(cv.HISTORY_NPS)].format(type=ptype[p])
                hid = str(prod["title"])
        j = rr[0] % len(templates)
        utts.append(templates[j].format(np=np_text, color=alt_color))
        n_vis[i] = vis_words + _TEMPLATE_VIS[templates[j]]
        hidden.append(hid)

    utts = _asr(_add_fillers(utts, rng), cfg.asr_error_rate, rng)

    # Retrieval: the transcript plus hidden knowledge. A follow-up keeps what is on screen unless it
    # refines the request, then it retrieves again with the session's topic; a reorder looks up the order.
    carry = (spec == FOLLOWUP) & ~refine
    queries: list[str] = []
    topic = ""
    for i, (sp, kept) in enumerate(zip(spec.tolist(), carry.tolist())):
        if kept:
            continue
        if sp == FOLLOWUP:
            queries.append(f"{utts[i]} {topic}")
        elif sp == HISTORY:
            topic = hidden[i]
            queries.append(topic)
        else:
            topic = f"{utts[i]} {hidden[i]}"
            queries.append(topic)
    before = retriever.n_scored
    fresh = np.flatnonzero(~carry)
    ids = np.full((m, cfg.k), -1, dtype=np.int64)
    ids[fresh] = retriever.retrieve(queries)
    fail = ~carry & ((rng.random(m) < cfg.retrieval_failure_rate) | (ids[:, 0] < 0))
    ids[fail] = rng.integers(0, len(products), size=(int(fail.sum()), cfg.k))  # irrelevant results
    ids = ids[_carry(np.arange(m), ~carry)]  # a kept follow-up shows its predecessor's products
    valid = ids >= 0
    safe = np.where(valid, ids, ids[:, :1])  # empty slots repeat the top product: they add no variety
    diversity = ((_n_distinct(world.color[safe]) - 1) + (_n_distinct(world.style[safe]) - 1)) / (
        2.0 * np.maximum(valid.sum(axis=1) - 1, 1))

    # Latent visual intent and the noisy tap.
    logit = _visual_logit(vis, intent, n_vis, diversity, (spec == VAGUE) | (spec == BRAND), user_prop[user])
    p_true = _sigmoid(logit)
    true = rng.random(m) < p_true
    screen = user_screen[user] & (rng.random(m) > 0.05)
    miss = np.where(screen, cfg.miss_rate, 0.5 + 0.5 * cfg.miss_rate)
    v = rng.random(m)
    label = np.where(true, v >= miss, v < cfg.accidental_tap_rate)
    return _Chunk(first_id=first_id, utterance=utts, intent=intent, session=first_session + sess, turn=turn,
                  products=ids, label=label, true=true, screen=screen, user=user, category=cat, spec=spec,
                  p_true=p_true, n_scored=retriever.n_scored - before)


_NP_GENERAL = {i: tuple(t for t in cv.NP_TEMPLATES[i] if "what {np}" not in t and "some {np}" not in t)
               for i in INTENTS}
_TEMPLATE_VIS = {t: _template_visual_words(t) for ts in cv.NP_TEMPLATES.values() for t in ts}
_FU_VIS = {i: [_template_visual_words(t) for t in cv.FOLLOWUP_TEMPLATES[i]] for i in INTENTS}
_FU_REFINE = {i: ["{color}" in t or "{style}" in t for t in cv.FOLLOWUP_TEMPLATES[i]] for i in INTENTS}


def _chunks(config: SimConfig) -> Iterator[_Chunk]:
    """The simulation as a stream of column chunks of CHUNK records (the last one shorter)."""
    config.check()
    world = _world(config.catalog_seed)
    retriever = CachedRetriever(world.index, config.k)
    user_rng = np.random.default_rng([config.seed, 0])
    n_users = max(20, config.n // 10)
    user_prop = user_rng.normal(0.0, config.user_sd, n_users)
    user_screen = user_rng.random(n_users) < config.screen_rate
    done = sessions = 0
    for index in range(math.ceil(config.n / CHUNK)):
        m = min(CHUNK, config.n - done)
        rng = np.random.default_rng([config.seed, 1, index])
        chunk = _chunk(world, config, rng, retriever, done, sessions, m, user_prop, user_screen)
        yield chunk
        done += m
        sessions = int(chunk.session[-1]) + 1


def _contexts(chunk: _Chunk) -> list[list[str]]:
    """Each record's earlier utterances of its session, oldest first."""
    utts = chunk.utterance
    return [utts[i - t:i] for i, t in enumerate(chunk.turn.tolist())]


def _records(chunk: _Chunk, config: SimConfig) -> list[dict]:
    """The chunk as interaction records (DESIGN section 2, plus user_id and the latent true_category)."""
    products = _world(config.catalog_seed).products
    prefix = f"sim-{config.seed}-"
    return [
        {
            "id": f"{prefix}{chunk.first_id + i}",
            "utterance": utt,
            "intent": INTENTS[it],
            "context": ctx,
            "products": [dict(products[j]) for j in row if j >= 0],
            "label": int(lab),
            "true_intent": int(tr),
            "screen_available": sc,
            "session_id": f"{prefix}s{s}",
            "user_id": f"u{u}",
            "true_category": cv.CATEGORY_NAMES[c],  # latent, like true_intent: never a model input
        }
        for i, (utt, it, ctx, row, lab, tr, sc, s, u, c) in enumerate(zip(
            chunk.utterance, chunk.intent.tolist(), _contexts(chunk), chunk.products.tolist(),
            chunk.label.tolist(), chunk.true.tolist(), chunk.screen.tolist(), chunk.session.tolist(),
            chunk.user.tolist(), chunk.category.tolist()))
    ]


def simulate(config: SimConfig) -> Iterator[dict]:
    """Stream `config.n` simulated interaction records (DESIGN section 2), deterministic for the config.

    >>> recs = list(simulate(SimConfig(n=30, seed=1)))
    >>> len(recs), recs[0]["id"], len(recs[0]["products"]), recs == list(simulate(SimConfig(n=30, seed=1)))
    (30, 'sim-1-0', 5, True)
    """
    for chunk in _chunks(config):
        yield from _records(chunk, config)


# ---- writing -----------------------------------------------------------------------------------------


class _Tally:
    """Running counts over chunks, for the summary."""

    def __init__(self, n_cats: int) -> None:
        self.rows = self.labels = self.trues = self.noisy = self.scored = 0
        self.by_cat = np.zeros(n_cats, dtype=np.int64)
        self.label_by_cat = np.zeros(n_cats, dtype=np.int64)
        self.true_by_cat = np.zeros(n_cats, dtype=np.int64)
        self.by_intent = np.zeros(len(INTENTS), dtype=np.int64)

    def add(self, chunk: _Chunk) -> None:
        n_cats = len(self.by_cat)
        self.rows += len(chunk.label)
        self.labels += int(chunk.label.sum())
        self.trues += int(chunk.true.sum())
        self.noisy += int((chunk.label != chunk.true).sum())
        self.scored += chunk.n_scored
        self.by_cat += np.bincount(chunk.category, minlength=n_cats)
        self.label_by_cat += np.bincount(chunk.category, weights=chunk.label, minlength=n_cats).astype(np.int64)
        self.true_by_cat += np.bincount(chunk.category, weights=chunk.true, minlength=n_cats).astype(np.int64)
        self.by_intent += np.bincount(chunk.intent, minlength=len(INTENTS))

    def summary(self, path: Path, seconds: float) -> SimSummary:
        n = max(self.rows, 1)
        per_cat = {name: {"rows": int(self.by_cat[c]),
                          "positive_rate": float(self.label_by_cat[c] / self.by_cat[c]),
                          "true_rate": float(self.true_by_cat[c] / self.by_cat[c])}
                   for c, name in enumerate(cv.CATEGORY_NAMES) if self.by_cat[c]}
        return SimSummary(path=str(path), rows=self.rows, positive_rate=self.labels / n,
                          true_positive_rate=self.trues / n, label_noise_rate=self.noisy / n,
                          seconds=seconds, distinct_queries_scored=self.scored, per_category=per_cat,
                          per_intent={name: int(self.by_intent[i]) for i, name in enumerate(INTENTS)})


def _arrow_batch(chunk: _Chunk, config: SimConfig, catalog: Any) -> Any:
    """The chunk as one Arrow record batch in irp.data.io's Parquet layout, without per-record dicts.

    Encoding each record's products dominates a dict-based write, so the catalogue's products are
    encoded once (`catalog`, irp.data.nested) and each record's `products` cell takes them by index.
    """
    from irp.data.nested import products_from_ids
    import pyarrow as pa

    from irp.data.io import EXTRA_COLUMN, PARQUET_SCHEMA

    m = len(chunk.label)
    prefix = f"sim-{config.seed}-"
    offsets = np.concatenate([[0], np.cumsum(chunk.turn)]).astype(np.int32)  # context list offsets
    # Flat context: for record i, the utterances i - turn_i .. i - 1 of the chunk.
    flat = np.repeat(np.arange(m) - chunk.turn, chunk.turn) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], chunk.turn))
    utter = pa.array(chunk.utterance, type=pa.string())
    columns = {
        "id": pa.array([f"{prefix}{chunk.first_id + i}" for i in range(m)], type=pa.string()),
        "utterance": utter,
        "intent": pa.array(np.array(INTENTS, dtype=object)[chunk.intent], type=pa.string()),
        "context": pa.ListArray.from_arrays(pa.array(offsets), utter.take(pa.array(flat))),
        "products": products_from_ids(chunk.products, catalog),
        "label": pa.array(chunk.label.astype(np.int8)),
        "screen_available": pa.array(chunk.screen),
        "session_id": pa.array([f"{prefix}s{s}" for s in chunk.session.tolist()], type=pa.string()),
        "true_intent": pa.array(chunk.true.astype(np.int8)),
        EXTRA_COLUMN: pa.array([f'{{"user_id":"u{u}","true_category":"{cv.CATEGORY_NAMES[c]}"}}'
                                for u, c in zip(chunk.user.tolist(), chunk.category.tolist())], type=pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[name] for name in PARQUET_SCHEMA.names], schema=PARQUET_SCHEMA)


def _write_parquet(path: Path, chunks: Iterable[_Chunk], config: SimConfig, advance: Any) -> None:
    import pyarrow.parquet as pq

    from irp.data.io import PARQUET_SCHEMA, ROW_GROUP_ROWS, atomic_path
    from irp.data.nested import catalog_array

    catalog = catalog_array(_world(config.catalog_seed).products)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, PARQUET_SCHEMA, compression="zstd") as writer:
        for chunk in chunks:
            writer.write_batch(_arrow_batch(chunk, config, catalog), row_group_size=ROW_GROUP_ROWS)
            advance(len(chunk.label))


def simulate_to_file(path: str | Path, config: SimConfig, progress: bool = True) -> SimSummary:
    """Simulate and stream the records to `path` (JSONL, JSONL.gz or Parquet by suffix, written atomically).

    Parquet is written straight from the simulator's columns (same layout as `irp.data.io.write_records`,
    several times faster); the other formats go through `write_records`.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from irp.data.io import file_format, write_records

    config.check()
    path = Path(path)
    fmt = file_format(path)  # fail before any work on an unsupported suffix
    t0 = time.perf_counter()
    tally = _Tally(len(cv.CATEGORIES))
    bar = Progress(TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress, transient=True)

    def tallied() -> Iterator[_Chunk]:
        for chunk in _chunks(config):
            tally.add(chunk)
            yield chunk

    with bar:
        task = bar.add_task("simulating", total=config.n)
        advance = lambda k: bar.advance(task, k)  # noqa: E731
        if fmt == ".parquet":
            _write_parquet(path, tallied(), config, advance)
        else:
            def records() -> Iterator[dict]:
                for chunk in tallied():
                    yield from _records(chunk, config)
                    advance(len(chunk.label))
            write_records(path, records(), total=config.n)
    return tally.summary(path, time.perf_counter() - t0)


# ---- simulated reactions to a served decision (the feedback loop) --------------------------------------
#
# The decision log (docs/loop.md) records what the service did; these functions say what the simulated user
# did next, so that every counterfactual has ground truth:
#   - an offer to switch to a screen is accepted with probability accept_probability(true_intent): a user
#     with a latent visual intent mostly says yes, others rarely do;
#   - the carousel tap is the record's existing proxy `label` (step 5 of the story above): it does not
#     depend on whether an offer was made, so "what if the candidate had offered" is known on every record.
# The accept draw is one uniform number per (seed, record id), shared by "offered" and "not offered", so the
# same record gets the same answer whichever policy offers it.

ACCEPT_PROB_VISUAL = 0.6  # P(offer accepted | true_intent = 1)
ACCEPT_PROB_OTHER = 0.05  # P(offer accepted | true_intent = 0): a polite yes, or curiosity


def accept_probability(true_intent: int | bool) -> float:
    """P(an offer to continue on a screen is accepted) for a record's latent visual intent.

    >>> accept_probability(1), accept_probability(0)
    (0.6, 0.05)
    """
    if true_intent not in (0, 1):  # also True/False
        raise ValueError(f"true_intent must be 0 or 1, got {true_intent!r}")
    return ACCEPT_PROB_VISUAL if true_intent else ACCEPT_PROB_OTHER


def _reaction_uniform(seed: int, record_id: str) -> float:
    """One U(0, 1) draw per (seed, record id), independent of everything else drawn."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}\x00{record_id}".encode(), digest_size=8).digest()
    return float(np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest, "little")]).random())


def reactions(record: dict[str, Any], offered: bool, seed: int) -> list[str]:
    """The feedback events of one served decision, deterministic in (seed, record id).

    offered -> "offer_accepted" with P = accept_probability(record["true_intent"]) else "offer_declined";
    then always "carousel_tap" if record["label"] == 1 else "no_tap". The record needs `id`, `label` and
    (when offered) `true_intent`, as simulated records have.

    >>> rec = {"id": "sim-1-0", "label": 1, "true_intent": 1}
    >>> reactions(rec, offered=False, seed=0)
    ['carousel_tap']
    >>> reactions(rec, True, 0) == reactions(rec, True, 0) and reactions(rec, True, 0)[0] in ("offer_accepted", "offer_declined")
    True
    """
    label = record.get("label")
    if label not in (0, 1):
        raise ValueError(f"record {record.get('id')!r}: reactions need a 0/1 `label`, got {label!r}")
    events = []
    if offered:
        events.append("offer_accepted" if would_accept(record, seed) else "offer_declined")
    events.append("carousel_tap" if label == 1 else "no_tap")
    return events


def would_accept(record: dict[str, Any], seed: int) -> bool:
    """Whether the record's user accepts an offer if one is made (the counterfactual of `reactions`).

    >>> rec = {"id": "x", "label": 0, "true_intent": 0}
    >>> would_accept(rec, 3) == (reactions(rec, True, 3)[0] == "offer_accepted")
    True
    """
    return _reaction_uniform(seed, str(record["id"])) < accept_probability(record.get("true_intent"))
