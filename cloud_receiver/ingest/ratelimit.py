"""A rate limit per sender on what the ingest quarantines.

Refused messages cost a database write each; a sender (the concentrator the topic names,
or "" when none) may have ``per_minute`` of them kept on average, in bursts of up to
``burst``. Beyond that they are counted (`Counters.rate_limited`, the metrics, the log
line at stop) and dropped before the database: the quarantine keeps a sample of a flood,
not the flood. Valid batches are never limited. Token buckets in this process: with
several receivers each applies its own share of the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SENDERS = 10_000  # buckets kept; full ones are forgotten first beyond this


@dataclass(frozen=True)
class SenderRate:
    per_minute: float = 60.0
    burst: int = 60

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ValueError(f"quarantine rate {self.per_minute} per minute must be above 0")
        if self.burst < 1:
            raise ValueError(f"quarantine burst {self.burst} must be at least 1")


@dataclass
class RateLimiter:
    """``allow(sender, now)``: True while ``sender`` is within its `SenderRate`."""

    rate: SenderRate = field(default_factory=SenderRate)
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def allow(self, sender: str, now: float) -> bool:
        per_s = self.rate.per_minute / 60.0
        tokens, at = self._buckets.get(sender, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + max(0.0, now - at) * per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if sender not in self._buckets and len(self._buckets) >= MAX_SENDERS:
            self._forget_full(now)
        self._buckets[sender] = (tokens, now)
        return allowed

    def _forget_full(self, now: float) -> None:
        per_s = self.rate.per_minute / 60.0
        full = [
            s for s, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * per_s >= self.rate.burst
        ]  # fmt: skip
        for s in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[s]
