"""What replicas must share: the session cooldown and the offer records that feedback is attributed with.

    irp serve --state memory                  this process only (one replica; the default)
    irp serve --state redis://HOST:PORT/DB    a Redis server shared by every replica behind the balancer

One interface, two implementations. `decide` runs the switch policy (irp.policy) for a batch of scored
records and remembers each offer (its model version, and which kinds of answer were already counted);
`answer` attributes feedback events to the offer they answer, exactly once per kind of answer ("offer":
accepted / declined, "tap": carousel tap / no tap), whichever replica made the offer.

A request reads its sessions' cooldowns (MGET) on a reader thread while the model scores; after scoring, only the
records to offer go to a Lua script that checks the cooldown again, starts it and stores the offer record in one
step. Redis runs a script atomically, so two replicas can never both start one session's cooldown, nor both
count one answer. Keys:

    irp:cd:<session_id>   "1", expiring after the cooldown (PX)       set only by an offer, only if absent
    irp:offer:<id>        hash {v: model_version, offer: T, tap: T}   expiring after `offer_ttl_s` (the
                                                                      feedback window; default 24 h); T is the
                                                                      token of the event counted for that kind
    irp:counts:<replica>  hash {"<version>|offers": n, "<version>|<event>": n}   this replica's counters, bumped
                                                                      by the scripts above (Prometheus reads them
                                                                      from the replica's /metrics)
    irp:shown:<replica>   set of "<version>|<key>" already exported once (a new series is first exported at 0)

When Redis cannot be reached within `timeout_s` (default 50 ms: connection refused, or a server that no
longer answers) the replica keeps answering predictions but makes no offer: every record of the request is
logged as not eligible (propensity 0), so off-policy estimates over the log stay exact. The failure is
counted (`errors`, Prometheus irp_state_errors_total{operation}) and reported (`status()`, GET /readyz and
GET /v1/model). For `retry_after_s` (1 s) the store is not asked at all (so a frozen server costs one
timeout per second, not one per request); then the next request tries again, and the store is back by
itself as soon as one call succeeds.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from irp.policy import Decision, SwitchPolicy
from irp.serve.feedback import OfferMemory

log = logging.getLogger("irp.serve.state")

STATE_TIMEOUT_S = 0.05  # a store slower than this counts as down: the request is answered without an offer
RETRY_AFTER_S = 1.0  # after a failure, the store is left alone this long
OFFER_TTL_S = 86_400.0  # offer records live this long: answers later than this are not attributed
OPERATIONS = ("decide", "answer")
KEY_PREFIX = "irp:"
NOT_ELIGIBLE = Decision(False, False, False, 0.0)
COOLDOWN, FREE, OFFERED = 0, 1, 2  # what the decide script says of one record

# KEYS: per record, its cooldown key ("" without a session) then its offer key.
# ARGV: cooldown ms, offer ttl ms, model version, deadline (unix ms), the replica's counts key, then per record
# "1" when the policy wants to offer (an offer also counts `<version>|offers` in the replica's counts). Returns per record COOLDOWN (in the session's cooldown: not eligible), FREE (eligible, no offer) or OFFERED
# (eligible; the cooldown started and the offer record stored). A call that reaches Redis after its deadline (the
# replica gave up waiting: a frozen server that wakes up) changes nothing: the replica answered without an offer.
_DECIDE_LUA = """
local cooldown, ttl, version, deadline, counts = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then return {} end
local out = {}
for i = 1, #KEYS / 2 do
  local session, offer = KEYS[2 * i - 1], KEYS[2 * i]
  local result = 1
  if session ~= '' and cooldown > 0 and redis.call('EXISTS', session) == 1 then
    result = 0
  elseif ARGV[5 + i] == '1' then
    if session ~= '' and cooldown > 0 then redis.call('SET', session, '1', 'PX', cooldown) end
    redis.call('DEL', offer)
    redis.call('HSET', offer, 'v', version)
    redis.call('PEXPIRE', offer, ttl)
    redis.call('HINCRBY', counts, version .. '|offers', 1)
    result = 2
  end
  out[i] = result
end
return out
"""

# KEYS: offer keys; ARGV: the replica's counts key, then per key the kind of answer ("offer" or "tap"), the
# event's token and the event. Returns per key {version, first}: version "" when no offer is remembered, first 1
# when this kind of answer is the first one (counted as `<version>|<event>` in the replica's counts), or was first
# under the same token (a retry of a call that timed out but ran: counted then, not again).
_ANSWER_LUA = """
local out, counts = {}, ARGV[1]
for i = 1, #KEYS do
  local version = redis.call('HGET', KEYS[i], 'v')
  if version then
    local kind, token, event = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
    local first = redis.call('HSETNX', KEYS[i], kind, token)
    if first == 1 then
      redis.call('HINCRBY', counts, version .. '|' .. event, 1)
    elseif redis.call('HGET', KEYS[i], kind) == token then
      first = 1
    end
    out[i] = {version, first}
  else
    out[i] = {'', 0}
  end
end
return out
"""


REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # safe in file names, labels and URLs


def default_replica_id() -> str:
    """This host's name plus a short random suffix: unique across hosts and across restarts on one host.

    >>> bool(REPLICA_ID.match(default_replica_id()))
    True
    """
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:48].strip("-.") or "irp"
    return f"{host}-{secrets.token_hex(3)}"


def check_replica_id(value: str) -> str:
    """`value` when it can name a replica, else ValueError saying why."""
    if not REPLICA_ID.match(value):
        raise ValueError(f"{value!r}: 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return value


class StateError(Exception):
    """The shared store could not be used for this call (already counted and logged)."""


@dataclass(frozen=True)
class Ask:
    """One scored record the policy decides on."""

    record_id: str
    image_seeking: bool
    screen_available: bool | None
    session_id: str | None


def parse_state(spec: str) -> str:
    """The canonical form of a --state value ("memory" or "redis://HOST:PORT/DB"), or ValueError saying why.

    >>> parse_state("memory"), parse_state("redis://127.0.0.1:6379/0"), parse_state("redis://cache")
    ('memory', 'redis://127.0.0.1:6379/0', 'redis://cache:6379/0')
    >>> parse_state("mongodb://x")
    Traceback (most recent call last):
    ...
    ValueError: unknown scheme 'mongodb': use memory or redis://HOST:PORT/DB
    """
    if spec == "memory":
        return spec
    try:
        parts = urlsplit(spec)
        port = parts.port or 6379
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from None
    if parts.scheme != "redis":
        raise ValueError(f"unknown scheme {parts.scheme or spec!r}: use memory or redis://HOST:PORT/DB")
    if not parts.hostname:
        raise ValueError("no host: use redis://HOST:PORT/DB")
    db = parts.path.lstrip("/") or "0"
    if not db.isdigit() or "/" in db:
        raise ValueError(f"database {db!r} is not a number: use redis://HOST:PORT/DB")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment allowed: use redis://HOST:PORT/DB")
    auth = parts.netloc.rpartition("@")[0]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"redis://{auth + '@' if auth else ''}{host}:{port}/{int(db)}"


def redacted(url: str) -> str:
    """The URL without its password (for logs and GET /v1/model).

    >>> redacted("redis://user:pw@h:6379/0"), redacted("redis://h:6379/0")
    ('redis://user:***@h:6379/0', 'redis://h:6379/0')
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class SharedState(ABC):
    """The policy's cooldown and the offer records; thread-safe. `errors` counts the calls that could not use
    the store, by operation (every key exists from the start)."""

    kind = "memory"

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter(dict.fromkeys(OPERATIONS, 0))
        self.last_error: str | None = None
        self.down_since: float | None = None  # unix seconds of the first failure of the current outage

    def prefetch(self, session_ids: list[str | None], cooldown_s: float) -> Any:
        """Start reading the sessions' cooldowns now (while the model scores); pass the result to `decide`."""
        return None

    @abstractmethod
    def decide(self, policy: SwitchPolicy, asks: list[Ask], model_version: str, prefetched: Any = None) -> list[Decision]:
        """One Decision per record, in order (a session asked twice in one batch: its first offer counts)."""

    @abstractmethod
    def answer(self, answers: list[tuple[str, str, str, str]]) -> list[tuple[str | None, bool]]:
        """Per (record id, kind of answer "offer" | "tap", token unique to the event, event): (model version of
        the remembered offer or None, whether this kind of answer is the first for it; a retry with the same
        token is still the first). Raises StateError when the store cannot be used."""

    def counts(self, declared: set[tuple[str, str]]) -> dict[tuple[str, str], int] | None:
        """Counts kept by the store itself, to export instead of the process's own (None: the process counts)."""
        return None

    @property
    def ok(self) -> bool:
        return self.down_since is None

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "ok": self.ok, "error": self.last_error, "down_since": self.down_since,
                "errors": dict(self.errors)}

    def close(self) -> None:
        """Release connections (idempotent)."""


class MemoryState(SharedState):
    """One process: the policy's own cooldown memory and an OfferMemory (today's single-replica behaviour).

    >>> state, policy = MemoryState(), SwitchPolicy(cooldown_s=600)
    >>> [d.offer for d in state.decide(policy, [Ask("a", True, None, "s"), Ask("b", True, None, "s")], "v1")]
    [True, False]
    >>> state.answer([("a", "offer", "t1", "offer_accepted"), ("a", "offer", "t2", "offer_accepted"),
    ...               ("b", "tap", "t3", "no_tap")])
    [('v1', True), ('v1', False), (None, False)]
    """

    def __init__(self, capacity: int = 200_000) -> None:
        super().__init__()
        self.offers = OfferMemory(capacity)

    def decide(self, policy: SwitchPolicy, asks: list[Ask], model_version: str, prefetched: Any = None) -> list[Decision]:
        decisions = [policy.decide(a.image_seeking, a.screen_available, a.session_id) for a in asks]
        self.offers.remember([(a.record_id, model_version) for a, d in zip(asks, decisions) if d.offer])
        return decisions

    def answer(self, answers: list[tuple[str, str, str, str]]) -> list[tuple[str | None, bool]]:
        return [self.offers.attribute(record_id, kind) for record_id, kind, _, _ in answers]


class RedisState(SharedState):
    """A Redis server shared by the replicas (module docstring: keys, scripts, failure handling)."""

    kind = "redis"

    def __init__(self, url: str, timeout_s: float = STATE_TIMEOUT_S, offer_ttl_s: float = OFFER_TTL_S,
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__()
        self.url, self.timeout_s, self.offer_ttl_s, self.retry_after_s = url, timeout_s, offer_ttl_s, retry_after_s
        # No retries inside redis-py: a failed call costs at most one timeout, and the request goes on without it.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._decide = self.client.register_script(_DECIDE_LUA)
        self._answer = self.client.register_script(_ANSWER_LUA)
        self._retry_at = 0.0  # monotonic: the store is not asked before this after a failure
        self._lock = threading.Lock()
        self.replica_id = ""  # set by the app: names this replica's counts in the store
        from concurrent.futures import ThreadPoolExecutor

        self._reader = ThreadPoolExecutor(max_workers=4, thread_name_prefix="irp-state-read")

    @property
    def _counts_key(self) -> str:
        return f"{KEY_PREFIX}counts:{self.replica_id}"

    def counts(self, declared: set[tuple[str, str]]) -> dict[tuple[str, str], int] | None:
        """This replica's counts of offers and answers, kept in Redis by the scripts that decide them: they
        survive a SIGKILL (a restarted replica of the same id goes on counting from them, with no reset) and are
        exact even for a call that timed out but ran. A (version, key) pair reads 0 on its first export (then
        remembered in Redis), so Prometheus never misses its first counts. Raises StateError when Redis fails."""
        shown_key = f"{KEY_PREFIX}shown:{self.replica_id}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._counts_key)
            pipe.smembers(shown_key)
            raw, shown_raw = pipe.execute()
            values = {tuple(k.decode().rsplit("|", 1)): int(v) for k, v in raw.items()}
            shown = {tuple(m.decode().rsplit("|", 1)) for m in shown_raw}
            labels = set(values) | declared
            new = [f"{v}|{k}" for v, k in labels - shown]
            if new:
                self.client.sadd(shown_key, *new)
        except Exception as e:  # noqa: BLE001
            self._failed("answer", e, count=False)
            raise StateError(self.last_error) from None
        return {label: values.get(label, 0) if label in shown else 0 for label in labels}  # type: ignore[misc]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "url": redacted(self.url), "timeout_s": self.timeout_s,
                "offer_ttl_s": self.offer_ttl_s, "retry_after_s": self.retry_after_s}

    def ping(self) -> bool:
        """Whether the store answers now (start-up check; also clears an outage)."""
        try:
            self.client.ping()
        except Exception as e:  # noqa: BLE001  # redis errors and OS errors alike
            self._failed("decide", e, count=False)
            return False
        self._recovered()
        return True

    def _call(self, operation: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self.down_since is not None and time.monotonic() < self._retry_at:
            self.errors[operation] += 1  # still in the back-off: not asked
            raise StateError(self.last_error or "down")
        try:
            result = script(keys=keys, args=args)
        except Exception as e:  # noqa: BLE001  # ConnectionError, TimeoutError, ResponseError, OSError, ...
            self._failed(operation, e)
            raise StateError(self.last_error) from None
        if self.down_since is not None:
            self._recovered()
        return result

    def _failed(self, operation: str, error: Exception, count: bool = True) -> None:
        with self._lock:
            if count:
                self.errors[operation] += 1
            self.last_error = f"{redacted(self.url)}: {type(error).__name__}: {str(error)[:200]}"
            self._retry_at = time.monotonic() + self.retry_after_s
            if self.down_since is None:
                self.down_since = time.time()
                log.error("shared state unavailable, no offers until it is back: %s", self.last_error)

    def _recovered(self) -> None:
        with self._lock:
            if self.down_since is not None:
                log.warning("shared state back after %.1f s", time.time() - self.down_since)
            self.down_since, self.last_error = None, None

    def prefetch(self, session_ids: list[str | None], cooldown_s: float) -> Any:
        """The sessions' cooldown keys, read (MGET, one round trip) on a reader thread while the model scores, so
        that a record that is not offered costs no round trip after scoring; None when there is nothing to read."""
        keys = sorted({f"{KEY_PREFIX}cd:{s}" for s in session_ids if s is not None})
        if not keys or cooldown_s <= 0:
            return None
        if self.down_since is not None and time.monotonic() < self._retry_at:
            return StateError(self.last_error or "down")
        return self._reader.submit(lambda: dict(zip(keys, self.client.mget(keys))))

    def _cooling(self, prefetched: Any) -> set[str] | None:
        """Cooldown keys that exist, from a prefetch; None when the read failed (counted: no offers then)."""
        if prefetched is None:
            return set()
        if isinstance(prefetched, StateError):
            self.errors["decide"] += 1
            return None
        try:
            values = prefetched.result(timeout=self.timeout_s * 2)
        except Exception as e:  # noqa: BLE001  # a timeout, a refused connection, ...
            self._failed("decide", e)
            return None
        return {k for k, v in values.items() if v is not None}

    def decide(self, policy: SwitchPolicy, asks: list[Ask], model_version: str, prefetched: Any = None) -> list[Decision]:
        """With a prefetch: a record whose session is cooling down, or that the policy does not want to offer, is
        decided from the prefetched read (eligibility as of that read); only the records to offer go to the
        decide script, which checks the cooldown again and starts it atomically."""
        decisions: list[Decision | None] = [NOT_ELIGIBLE] * len(asks)
        cooling = self._cooling(prefetched) if prefetched is not None else None
        if prefetched is not None and cooling is None:
            return decisions  # type: ignore[return-value]  # the read failed: no offers, propensity 0
        sessions = Counter(a.session_id for a in asks)
        keys: list[str] = []
        deadline_ms = int((time.time() + self.timeout_s) * 1000)
        args: list[Any] = [int(policy.cooldown_s * 1000), int(self.offer_ttl_s * 1000), model_version, deadline_ms,
                           self._counts_key]
        asked: list[tuple[int, bool, bool]] = []  # (index, explored, wanted)
        for i, a in enumerate(asks):
            if a.screen_available is False:
                continue  # never eligible: no coin, no store
            session_key = f"{KEY_PREFIX}cd:{a.session_id}" if a.session_id is not None else ""
            if cooling is not None and session_key in cooling:
                continue  # cooling down as of the prefetch: not eligible
            explored, want = policy.draw(a.image_seeking)
            if cooling is not None and not want and sessions[a.session_id] == 1:
                # eligible as of the prefetch and nothing to start: no round trip (a session asked twice in one
                # batch goes to the script, where an earlier record may have started its cooldown)
                decisions[i] = policy.shared_decision(a.image_seeking, True, explored, False)
                continue
            asked.append((i, explored, want))
            keys += [f"{KEY_PREFIX}cd:{a.session_id}" if a.session_id is not None else "",
                     f"{KEY_PREFIX}offer:{a.record_id}"]
            args.append("1" if want else "0")
        if not asked:
            return decisions  # type: ignore[return-value]
        try:
            results = self._call("decide", self._decide, keys, args)
        except StateError:
            return decisions  # type: ignore[return-value]  # all not eligible: no offer, propensity 0
        if len(results) != len(asked):  # past its deadline when Redis ran it: treated as a timeout
            self._failed("decide", TimeoutError(f"reached Redis after the {self.timeout_s * 1000:.0f} ms deadline"))
            return decisions  # type: ignore[return-value]
        for (i, explored, _), result in zip(asked, results):
            decisions[i] = policy.shared_decision(asks[i].image_seeking, result != COOLDOWN, explored,
                                                  result == OFFERED)
        return decisions  # type: ignore[return-value]

    def answer(self, answers: list[tuple[str, str, str, str]]) -> list[tuple[str | None, bool]]:
        if not answers:
            return []
        keys = [f"{KEY_PREFIX}offer:{record_id}" for record_id, _, _, _ in answers]
        args = [self._counts_key] + [x for _, kind, token, event in answers for x in (kind, token, event)]
        results = self._call("answer", self._answer, keys, args)
        return [(version.decode() if version else None, bool(first)) for version, first in results]

    def close(self) -> None:
        self._reader.shutdown(wait=False)
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass


def open_state(spec: str, timeout_s: float = STATE_TIMEOUT_S, offer_ttl_s: float = OFFER_TTL_S,
               offer_memory: int = 200_000) -> SharedState:
    """The store a --state value names (ValueError for an unusable value). A Redis server that does not answer
    yet is not an error: the replica serves without offers until it does (see the module docstring)."""
    url = parse_state(spec)
    if url == "memory":
        return MemoryState(offer_memory)
    state = RedisState(url, timeout_s, offer_ttl_s)
    state.ping()
    return state
