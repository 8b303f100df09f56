"""Rate limits: the headers of every REST answer, and 429s a test injects on chosen routes.

discord.py keys its buckets on ``X-RateLimit-Bucket`` and sleeps on 429 by itself, so a test that
asks for 429s on ``PATCH /channels/*`` sees whether the bot's edits survive being retried.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from dataclasses import dataclass, field

from .payloads import Payload
from .records import RecordedRequest


@dataclass
class RateLimitRule:
    """The next ``remaining`` requests matching ``pattern`` get a 429."""

    pattern: str
    remaining: int
    retry_after: float
    is_global: bool = False
    hits: list[RecordedRequest] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        if re.match(r"^[A-Z]+ ", self.pattern):
            return fnmatch.fnmatchcase(f"{method} {path}", self.pattern)
        return fnmatch.fnmatchcase(path, self.pattern)


class RateLimits:
    """The injected rules, and the headers Discord sends with a normal or a 429 answer."""

    def __init__(self) -> None:
        self.rules: list[RateLimitRule] = []

    def add(
        self, pattern: str, count: int, retry_after: float, *, is_global: bool = False
    ) -> RateLimitRule:
        rule = RateLimitRule(pattern, count, retry_after, is_global)
        self.rules.append(rule)
        return rule

    @staticmethod
    def bucket(method: str, route: str) -> str:
        """One bucket per route template, as Discord hashes them."""
        return hashlib.sha1(f"{method} {route}".encode()).hexdigest()[:16]

    @staticmethod
    def allowed_headers(bucket: str) -> dict[str, str]:
        return {
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
        }

    def limit(self, record: RecordedRequest, bucket: str) -> tuple[Payload, dict[str, str]] | None:
        """The 429 body and headers if an injected rule takes this request, else None."""
        rule = next(
            (r for r in self.rules if r.remaining > 0 and r.matches(record.method, record.path)),
            None,
        )
        if rule is None:
            return None
        rule.remaining -= 1
        rule.hits.append(record)
        body = {
            "message": "You are being rate limited.",
            "retry_after": rule.retry_after,
            "global": rule.is_global,
        }
        headers = {
            # discord.py treats a 429 without Via as a Cloudflare ban and gives up.
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(rule.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Scope": "global" if rule.is_global else "user",
        }
        if rule.is_global:
            headers["X-RateLimit-Global"] = "true"
        return body, headers
