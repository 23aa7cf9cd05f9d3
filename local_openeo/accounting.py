"""What happened, for tests: requests, jobs per user/title/tag, starts, cancels, limits, injected faults."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from local_openeo.jobs import Job, JobStore

_TAG = re.compile(r"\[([^\[\]]+)\]")
MAX_EVENTS = 1000
MAX_CORRELATION_IDS = 10_000


def _duplicates(counter: Counter[str]) -> dict[str, int]:
    return {key: count for key, count in counter.items() if count > 1}


class Accounting:
    """Cumulative counters since start or the last reset (deleting a job does not uncount it)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.requests: Counter[str] = Counter()
        self.faults: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.lost_responses: list[dict] = []
        self.created: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.restarted: Counter[str] = Counter()
        self.canceled: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.rejections: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.sync_results: defaultdict[str, Counter[str]] = defaultdict(Counter)  # user → ok/error of POST /result
        self.max_active: Counter[str] = Counter()
        self.failing_jobs: Counter[str] = Counter()
        self.titles: Counter[str] = Counter()
        self.descriptions: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.correlation_ids: dict[str, Counter[str]] = {}

    def correlated(self, cid: str, endpoint: str) -> None:
        """Count a request that carried the `X-Correlation-ID` header `cid` (the first MAX_CORRELATION_IDS ids)."""
        counts = self.correlation_ids.get(cid)
        if counts is None:
            if len(self.correlation_ids) >= MAX_CORRELATION_IDS:
                return
            counts = self.correlation_ids[cid] = Counter()
        counts[endpoint] += 1

    def job_created(self, job: Job) -> None:
        self.created[job.user] += 1
        if job.title:
            self.titles[job.title] += 1
        if job.description:
            self.descriptions[job.description] += 1
        tags = set(_TAG.findall(job.title or "")) | set(_TAG.findall(job.description or ""))
        for tag in tags:
            self.tags[tag] += 1

    def job_started(self, job: Job, active: int) -> None:
        self.started[job.user] += 1
        if job.starts > 1:
            self.restarted[job.user] += 1
        if job.fails:
            self.failing_jobs[job.user] += 1
        self.max_active[job.user] = max(self.max_active[job.user], active)

    def fault(self, endpoint: str, kind: str) -> None:
        self.faults[endpoint][kind] += 1

    def lost_response(self, event: dict) -> None:
        if len(self.lost_responses) < MAX_EVENTS:
            self.lost_responses.append(event)

    def report(self, store: JobStore, now: float, extra: dict) -> dict:
        by_user: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for job in store.jobs.values():
            by_user[job.user][job.status(now)] += 1
        users = set(self.created) | set(by_user) | set(self.rejections) | set(self.sync_results)
        totals = {
            "created": sum(self.created.values()),
            "started": sum(self.started.values()),
            "restarted": sum(self.restarted.values()),
            "canceled": sum(self.canceled.values()),
            "deleted": sum(self.deleted.values()),
            "failing": sum(self.failing_jobs.values()),
            "existing": len(store.jobs),
            "rejections": dict(sum(self.rejections.values(), Counter())),
            "sync_results": dict(sum(self.sync_results.values(), Counter())),
            "faults": sum(sum(c.values()) for c in self.faults.values()),
            "lost_responses": sum(
                count for c in self.faults.values() for kind, count in c.items() if kind.startswith("lost")
            ),
        }
        return {
            "totals": totals,
            "users": {
                user: {
                    "created": self.created[user],
                    "started": self.started[user],
                    "restarted": self.restarted[user],
                    "canceled": self.canceled[user],
                    "deleted": self.deleted[user],
                    "failing": self.failing_jobs[user],
                    "rejections": dict(self.rejections[user]),
                    "sync_results": dict(self.sync_results[user]),
                    "max_active": self.max_active[user],
                    "by_status": dict(by_user[user]),
                }
                for user in sorted(users)
            },
            "titles": dict(self.titles),
            "descriptions": dict(self.descriptions),
            "tags": dict(self.tags),
            "duplicates": {
                "titles": _duplicates(self.titles),
                "descriptions": _duplicates(self.descriptions),
                "tags": _duplicates(self.tags),
            },
            "requests": dict(self.requests),
            "faults": {endpoint: dict(kinds) for endpoint, kinds in self.faults.items()},
            "lost_responses": self.lost_responses,
            "downloads": dict(self.downloads),
            "correlation_ids": {cid: dict(counts) for cid, counts in self.correlation_ids.items()},
            **extra,
        }
