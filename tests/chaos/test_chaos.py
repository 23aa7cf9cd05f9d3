"""The chaos suite (`make chaos`: CHAOS_PROFILE=full, 2,000 jobs, 20 s outages; `make test` runs the short seeded
variant): see tests/chaos/harness.py for the run. Asserts that nothing is lost, duplicated or stranded."""

from __future__ import annotations

import itertools

import pytest

from local_openeo.faults import KINDS
from tests.chaos.harness import ChaosConfig, ChaosRun, summary

pytestmark = pytest.mark.timeout(1800)


def test_no_job_is_stranded_through_kills_and_outages() -> None:
    config = ChaosConfig.from_env()
    with ChaosRun(config) as run:
        outcome = run.run()
        report = summary(outcome)
        print("\n" + report)
        context = f"{report}\n{run.log_tails()}"
        # The task ended and every unit job is terminal: nothing stranded.
        assert outcome.task["status"] in {"finished", "failed"}, context
        assert outcome.not_terminal == 0, context
        assert sum(outcome.job_statuses.values()) == config.jobs, context
        # One backend job per tag, ever.
        assert outcome.report["duplicates"]["tags"] == {}, (outcome.duplicate_jobs, run.logs, context)
        assert all(n == 1 for n in outcome.tags.values()), (outcome.duplicate_jobs, run.logs)
        # Dead letters: none left, and each one that failed a job is explained by that job's message.
        assert outcome.dead_letter_queue == 0, context
        assert outcome.unexplained_failed_dead_letters == [], context
        # The watcher saw every sequence exactly once, in order, up to the terminal event.
        seqs = outcome.watcher.sequences
        assert outcome.watcher.terminal == outcome.task["status"], (outcome.watcher.errors[-5:], context)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] == outcome.last_sequence, (
            [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:10], outcome.last_sequence)
        # Every fault was injected: each service kind killed twice, both outages, every backend fault kind.
        kills = [f for f in outcome.faults if f.kind == "kill"]
        assert {run.services[f.target].kind for f in kills} == {"dispatcher", "monitor", "gateway", "tiler"}
        assert {f.target for f in outcome.faults if f.kind == "outage"} == {"rabbitmq", "postgresql"}
        injected = {kind for kinds in outcome.report["faults"].values() for kind in kinds}
        assert injected == set(KINDS), set(KINDS) - injected
        assert outcome.report["totals"]["failing"] > 0
        # During each outage every service using the server reported NOT_SERVING (the gateway: 503 on /health).
        users = {name for name, service in run.services.items() if service.kind != "tiler"}
        for fault in outcome.faults:
            if fault.kind == "outage":
                assert fault.reported_down == users, (fault.target, users - fault.reported_down)
                assert fault.not_alive == set(), (fault.target, fault.not_alive)  # liveness: never restarted
        # No service needed a restart beyond the suite's own kills: all alive and SERVING.
        assert outcome.unhealthy == [], context
