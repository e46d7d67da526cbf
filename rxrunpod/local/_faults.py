"""Fault injection and server-side counters of the local endpoint."""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["FAULT_KINDS", "ROUTES", "FaultRule", "Faults", "Stats"]

FAULT_KINDS = ("429", "500", "502", "503", "drop", "slow")
ROUTES = (
    "run",
    "runsync",
    "status",
    "stream",
    "cancel",
    "retry",
    "purge-queue",
    "health",
    "openai",
)


@dataclass(frozen=True)
class FaultRule:
    """One kind of failure and the requests it hits.

    ``kind`` is an HTTP status (``"429"``, ``"500"``, ``"502"``, ``"503"``),
    ``"drop"`` (the connection closes without an answer) or ``"slow"`` (the
    answer is delayed by ``delay`` seconds and then sent normally). ``share``
    is the probability (0 to 1) that a matching request is hit; ``routes``
    limits the rule to some routes (None: every route); ``times`` caps how
    many requests it hits in total. With ``after=True`` the request is carried
    out first (a job is created) and only its answer is replaced: the case in
    which a client must not resubmit. 429 and 503 answers carry a
    ``Retry-After`` header of ``retry_after`` seconds.
    """

    kind: str
    share: float = 1.0
    routes: frozenset[str] | None = None
    after: bool = False
    times: int | None = None
    retry_after: float = 1.0
    delay: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"fault share must be between 0 and 1, got {self.share}")
        if self.routes is not None:
            unknown = sorted(set(self.routes) - set(ROUTES))
            if unknown:
                raise ValueError(
                    f"unknown route(s) {', '.join(unknown)}; expected some of {', '.join(ROUTES)}"
                )
        if self.times is not None and self.times < 0:
            raise ValueError(f"fault times must be 0 or more, got {self.times}")
        for name, value in (("retry_after", self.retry_after), ("delay", self.delay)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"fault {name} must be a finite number of 0 or more seconds, got {value!r}"
                )

    @property
    def status(self) -> int | None:
        """The HTTP status this rule responds with, or None for ``drop`` and ``slow``."""
        return int(self.kind) if self.kind.isdigit() else None

    @classmethod
    def parse(cls, text: str, *, retry_after: float = 1.0, delay: float = 1.0) -> FaultRule:
        """Parse the command-line form ``KIND[-after][@ROUTE,ROUTE...][=SHARE]``.

        Examples: ``429=0.1``, ``503-after@run=0.05``, ``drop@status,stream=0.02``,
        ``slow=0.2``. Raises ``ValueError`` naming the part that is wrong.
        """
        spec, _, share_text = text.partition("=")
        share = 1.0
        if share_text:
            try:
                share = float(share_text)
            except ValueError:
                raise ValueError(f"fault {text!r}: share {share_text!r} is not a number") from None
        kind, _, routes_text = spec.partition("@")
        after = kind.endswith("-after")
        if after:
            kind = kind[: -len("-after")]
        routes = frozenset(part for part in routes_text.split(",") if part) if routes_text else None
        try:
            return cls(kind, share, routes, after, retry_after=retry_after, delay=delay)
        except ValueError as error:
            raise ValueError(f"fault {text!r}: {error}") from None


class Faults:
    """The fault rules of a running local endpoint; safe to change from any thread.

    For each request the first rule that matches the route and wins its
    random draw applies. ``seed`` makes the draws repeatable.
    """

    def __init__(
        self, rules: list[FaultRule] | tuple[FaultRule, ...] = (), *, seed: int | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules)
        self._used: list[int] = [0] * len(self._rules)
        self._random = random.Random(seed)

    def add(
        self,
        kind: str | int,
        share: float = 1.0,
        *,
        routes: str | list[str] | tuple[str, ...] | frozenset[str] | None = None,
        after: bool = False,
        times: int | None = None,
        retry_after: float = 1.0,
        delay: float = 1.0,
    ) -> FaultRule:
        """Add a rule (see ``FaultRule``) and return it; ``routes`` may be one route name."""
        if isinstance(routes, str):
            routes = (routes,)
        rule = FaultRule(
            str(kind),
            share,
            frozenset(routes) if routes is not None else None,
            after,
            times,
            retry_after,
            delay,
        )
        with self._lock:
            self._rules.append(rule)
            self._used.append(0)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """Remove a rule added earlier; raises ``ValueError`` when it is not present."""
        with self._lock:
            index = self._rules.index(rule)
            del self._rules[index]
            del self._used[index]

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()
            self._used.clear()

    def seed(self, value: int) -> None:
        """Reseed the random draws so a run can be repeated."""
        with self._lock:
            self._random.seed(value)

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """The rules in the order they are tried."""
        with self._lock:
            return tuple(self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def pick(self, route: str) -> FaultRule | None:
        """Draw the rule that hits this request, if any, and count its use."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.routes is not None and route not in rule.routes:
                    continue
                if rule.times is not None and self._used[index] >= rule.times:
                    continue
                if rule.share < 1.0 and self._random.random() >= rule.share:
                    continue
                self._used[index] += 1
                return rule
        return None

    def __repr__(self) -> str:
        return f"Faults({list(self.rules)!r})"


class Stats:
    """Counters kept by the server, readable from any thread while it runs.

    ``requests`` counts requests received per route, ``submissions`` the jobs
    created per route (``run``, ``runsync``, ``openai``), ``responses`` the
    responses sent per HTTP status, ``faults`` the injected faults per kind and
    ``webhooks`` the webhook deliveries per result (``delivered``, ``retried``,
    ``failed``).
    Every property returns a copy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._submissions: Counter[str] = Counter()
        self._responses: Counter[int] = Counter()
        self._faults: Counter[str] = Counter()
        self._webhooks: Counter[str] = Counter()

    def count_request(self, route: str) -> None:
        with self._lock:
            self._requests[route] += 1

    def count_submission(self, route: str) -> None:
        with self._lock:
            self._submissions[route] += 1

    def count_response(self, status: int) -> None:
        with self._lock:
            self._responses[status] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def count_webhook(self, result: str) -> None:
        with self._lock:
            self._webhooks[result] += 1

    @property
    def requests(self) -> dict[str, int]:
        """Requests received per route."""
        with self._lock:
            return dict(self._requests)

    @property
    def submissions(self) -> dict[str, int]:
        """Jobs created per route."""
        with self._lock:
            return dict(self._submissions)

    @property
    def responses(self) -> dict[int, int]:
        """Answers sent per HTTP status (dropped connections are not answers)."""
        with self._lock:
            return dict(self._responses)

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults per kind."""
        with self._lock:
            return dict(self._faults)

    @property
    def webhooks(self) -> dict[str, int]:
        """Webhook deliveries per result: delivered, retried, failed."""
        with self._lock:
            return dict(self._webhooks)

    @property
    def total_submissions(self) -> int:
        """Jobs created on all routes."""
        with self._lock:
            return sum(self._submissions.values())

    def snapshot(self) -> dict[str, Any]:
        """Return a copy of all counters taken at one instant."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "submissions": dict(self._submissions),
                "responses": dict(self._responses),
                "faults": dict(self._faults),
                "webhooks": dict(self._webhooks),
            }

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._requests.clear()
            self._submissions.clear()
            self._responses.clear()
            self._faults.clear()
            self._webhooks.clear()

    def __repr__(self) -> str:
        return f"Stats({self.snapshot()!r})"
