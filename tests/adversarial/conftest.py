"""Fixtures of the hostile-tenant suite. `run.sh` starts the real `hub-api`
binary (fresh data directory, `--no-worker`) and exports where it is; every
test is one attack, run while a monitor probes `/healthz` and samples the
hub's resident memory (see `hub.Monitor`). The run's figures are printed at
the end (`ATTACK SUMMARY ...`) and asserted by `test_9_summary.py`."""

import json
import os

import pytest

import hub


@pytest.fixture(autouse=True)
def monitor(request):
    """Every test is an attack: probe `/healthz` and sample RSS while it runs."""
    assert hub.hub_alive(), "the hub process is gone (crashed in an earlier attack?)"
    with hub.Monitor(request.node.name) as m:
        yield m
    rec = hub.STATS.per_test[-1]
    print(
        f"\n[attack] {rec['test']}: healthz_worst_ms={rec['healthz_worst_ms']} "
        f"(probes {rec['healthz_probes']}, not 200: {rec['healthz_not_200']}) "
        f"rss_start_mib={rec['rss_start_mib']} rss_peak_mib={rec['rss_peak_mib']}"
    )


@pytest.fixture(scope="session")
def root():
    """A site admin (quotas)."""
    return hub.new_user("root", scopes="read,write,admin", admin_user=True)


@pytest.fixture
def tenant():
    """A fresh user and namespace: the attacker of one test."""
    return hub.new_user("mallory")


@pytest.fixture
def victim():
    """Another fresh tenant, whose requests must stay fast during an attack."""
    return hub.new_user("alice")


def summary_lines() -> list[str]:
    s = hub.STATS.summary()
    lines = [
        "ATTACK SUMMARY requests={requests} 5xx_non_503={5xx_non_503} healthz_worst_ms={healthz_worst_ms} "
        "peak_rss_mib={peak_rss_mib} no_answer={no_answer} healthz_probes={healthz_probes}".format(**s),
        f"  worst /healthz during: {s['healthz_worst_during']}; peak RSS during: {s['peak_rss_during']}",
        f"  statuses: {json.dumps(s['statuses'])}",
    ]
    for m, p, st, b in hub.STATS.bad_5xx[:20]:
        lines.append(f"  5xx: {st} {m} {p} {b[:160]!r}")
    for m, p, why in hub.STATS.no_answer[:20]:
        lines.append(f"  no answer: {m} {p} ({why})")
    for t in hub.STATS.per_test:
        lines.append(
            f"  {t['test']}: healthz_worst_ms={t['healthz_worst_ms']} rss_peak_mib={t['rss_peak_mib']} "
            f"(start {t['rss_start_mib']})"
        )
    return lines


def pytest_terminal_summary(terminalreporter):
    if not hub.STATS.per_test:
        return
    for line in summary_lines():
        terminalreporter.write_line(line)
    out = os.environ.get("ADV_SUMMARY_FILE")
    if out:
        with open(out, "w") as f:
            json.dump({**hub.STATS.summary(), "per_test": hub.STATS.per_test}, f, indent=1)
