"""Parity suite set-up: the run's seed (fresh each run, printed in the header; PARITY_SEED=N repeats
a run), the direction parameter, and a summary of the measured worst errors per group.

PARITY_REPORT=path.json additionally writes the summary as JSON.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

pytest.importorskip("jax")

from . import helpers  # noqa: E402


def pytest_configure(config):
    env = os.environ.get("PARITY_SEED")
    helpers.SEED = int(env) if env else secrets.randbelow(2**31)
    # pytest-xdist workers start after this and inherit the environment: one seed for the whole run
    os.environ["PARITY_SEED"] = str(helpers.SEED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Carry the errors this test measured in its report (from an xdist worker to the main process too)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and helpers.MEASURED:
        report.user_properties.append(("parity", list(helpers.MEASURED)))
    if report.when == "teardown":
        helpers.MEASURED.clear()


def pytest_runtest_logreport(report):
    for key, measured in report.user_properties:
        if key == "parity":
            for group, direction, error, tensor in measured:
                helpers.record(group, direction, error, tensor)


def pytest_report_header(config):
    return f"parity seed: {helpers.SEED} (repeat this run with PARITY_SEED={helpers.SEED})"


@pytest.fixture(params=helpers.DIRECTIONS, ids=["t2j", "j2t"])
def direction(request):
    """Which backend draws the random weights (the other receives them through the converter)."""
    return request.param


@pytest.fixture
def seed(request):
    """A seed for this test, derived from the run's seed and the test's id."""
    return helpers.derive_seed(request.node.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not helpers.RESULTS:
        return
    tr = terminalreporter
    tr.section("parity: worst relative error per group")
    tr.write_line(f"seed {helpers.SEED}")
    for group in sorted(helpers.RESULTS):
        row = helpers.RESULTS[group]
        cells = [f"{d}: {row[d][0]:.2e} ({row[d][1]})" if d in row else f"{d}: -" for d in helpers.DIRECTIONS]
        tr.write_line(f"{group:<34} " + " | ".join(cells))
    path = os.environ.get("PARITY_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"seed": helpers.SEED, "results": {g: {d: {"error": e, "tensor": n} for d, (e, n) in r.items()}
                                                         for g, r in helpers.RESULTS.items()}}, fh, indent=2)
