"""The node-local cache's promise, tried on random configurations: make_loader either refuses a configuration at
once, in one line naming --cache-limit and the least limit that would do, or every rank reads its epochs to the end.
Never a hang, never another error.

A seeded sweep (bench.sweep, whose `python -m bench sweep --configs N --seed S` runs larger ones) of configurations
drawn from the seed alone: shards of 1 to 40 samples of uneven bytes (a short last shard; JPEGs padded), served by
the loopback HTTP server; the `cpu` backend (and `dali-cpu` in some rows where DALI is installed); batch, workers,
world size (up to 4 local ranks, real processes in a gloo group that all-reduce once per optimizer step, as DDP
steps), accumulate, the window (asked, or what the limit gives), one or two epochs, and a cache limit: from a tenth
of the least limit a refusal names to four times it, or the smallest limit make_loader accepts (bisected). Each
configuration must end in exactly one of:

  refused    on every rank, the same one-line refusal (common.errors.NoRoom) naming --cache-limit and a least limit
             above the one given;
  completed  on every rank, len(loader) batches (what pipeline.sampling promises), exactly the rank's share of the
             epoch's shard-window order with matching labels, the window the limit gives, the cache within its limit.

Anything else (no result by the deadline, an exception, another refusal, ranks that disagree) fails the test,
naming the configuration and the command that replays it alone: `python -m bench sweep --seed S --only ROW`.
"""
import shutil
from collections import Counter

import pytest

from bench import sweep

SEED, ROWS = 21, 44
DEADLINE_S = 60  # per configuration; they take 1 to 5 s here
STALL_DEADLINE_S = 10


@pytest.fixture(scope="module")
def served(http_server, tmp_path_factory):
    """bench.sweep's DATASETS, prepped once, and the loopback HTTP server's URL of each: {name: (dir, URL)}."""
    made = sweep.make_datasets(tmp_path_factory.mktemp("sweep-data"))
    for name, local in made.items():
        shutil.copytree(local, http_server.root / "sweep" / name)
    return {name: (local, f"{http_server.url}/sweep/{name}") for name, local in made.items()}


@pytest.fixture(scope="module")
def swept(served, tmp_path_factory):
    """The outcomes of the sweep's rows, and last that of a row whose rank 0 stops after its first batch (the
    harness's own check: a hang must be caught, not wait forever)."""
    rows = sweep.draw_rows(SEED, ROWS, sweep.sweep_backends())
    stalled = sweep.Row(seed=SEED, index=ROWS, data="d7-random", backend="cpu", batch=2, workers=1, world=2,
                        accumulate=1, window=None, limit="whole", epochs=(0,), loader_seed=0,
                        deadline=STALL_DEADLINE_S, stall=True)
    *outcomes, stall = sweep.run_sweep([*rows, stalled], served, tmp_path_factory.mktemp("sweep-runs"),
                                       deadline=DEADLINE_S)
    return outcomes, stall


def test_every_configuration_is_refused_at_start_or_runs_to_the_end(swept):
    outcomes, _ = swept
    failed = [outcome for outcome in outcomes if outcome.kind == "failed"]
    assert not failed, "\n\n".join(f"{outcome.describe()}\n{outcome.stacks[-6000:]}" for outcome in failed)


@pytest.mark.parametrize("rule", ["least", "edge"])
def test_the_least_limit_a_refusal_names_and_the_least_make_loader_accepts_run_to_the_end(swept, rule):
    """`least`: the limit named when 1 byte is refused; `edge`: the smallest limit make_loader accepts (bisected),
    where a check that counted too few shards in flight would hang."""
    outcomes, _ = swept
    at_least = [outcome for outcome in outcomes if outcome.row.limit == rule]
    assert len(at_least) >= 3
    assert [outcome.kind for outcome in at_least] == ["completed"] * len(at_least), \
        "\n".join(outcome.describe() for outcome in at_least if outcome.kind != "completed")
    assert all(outcome.limit <= outcome.least for outcome in at_least)


def test_the_sweep_reaches_both_outcomes_over_the_dimensions_it_draws(swept):
    """What this seed's rows cover, so that a change to the drawing that narrows them shows here."""
    outcomes, _ = swept
    kinds = Counter(outcome.kind for outcome in outcomes)
    assert kinds["refused"] >= 4 and kinds["completed"] >= 12
    completed = [outcome.row for outcome in outcomes if outcome.kind == "completed"]
    assert {row.world for row in completed} == {1, 2, 3, 4}
    assert {row.window is None for row in completed} == {True, False}
    assert any(row.accumulate > 1 and row.world > 1 for row in completed)
    assert any(row.workers > 1 and row.world > 1 for row in completed)
    assert len({row.data for row in completed}) >= 4
    if "dali-cpu" in sweep.sweep_backends():
        assert any(row.backend == "dali-cpu" for row in completed)
    # At or above the least limit named, a run to the end (judge fails a refusal there: the least named would lie).
    assert all(outcome.kind == "completed" for outcome in outcomes if outcome.row.limit in ("least+1", "x2", "x4"))


def test_a_rank_that_stops_mid_epoch_fails_its_row_with_every_ranks_stack(swept):
    _, stall = swept
    assert stall.kind == "failed"
    assert any(f"no result within the {STALL_DEADLINE_S} s deadline" in problem for problem in stall.problems)
    assert "--- rank 0 ---" in stall.stacks and "--- rank 1 ---" in stall.stacks
    assert "_stall" in stall.stacks  # rank 0's stack: where it stopped
    assert "all_reduce" in stall.stacks  # rank 1's: waiting for rank 0 in the step's all-reduce
    assert f"--seed {SEED} --only {ROWS}" in stall.describe()


ROW = sweep.Row(seed=0, index=0, data="d16", backend="cpu", batch=2, workers=1, world=2, accumulate=1, window=None,
                limit="x0.5", epochs=(0,), loader_seed=0)
REFUSAL = ("NoRoom: pipeline: --cache-limit 100 bytes is less than the 300 bytes of shards that the ranks of a node "
           "may be reading at once (batch 2, world size 2, accumulate 1); give at least 300")


def refused(message=REFUSAL, limit=100, least=300):
    return {"kind": "refused", "message": message, "limit": limit, "least": least}


@pytest.mark.parametrize("row, reports, problem", [
    (ROW, {0: refused()}, "ranks [1]: no result"),
    (ROW, {0: refused(), 1: refused(REFUSAL.replace("; give", ";\ngive"))}, "refusals differ"),
    (ROW, {rank: refused(REFUSAL.replace("; give", ";\ngive")) for rank in (0, 1)}, "not one line"),
    (ROW, {0: refused("pipeline: x"), 1: refused("pipeline: x")}, "not for the cache limit"),
    (ROW, {0: refused(limit=300), 1: refused(limit=300)}, "that it is not below"),
    (ROW, {0: refused(least=200), 1: refused(least=200)}, "refusing 1 byte named 200"),
    (sweep.Row(**{**vars(ROW), "limit": "least"}), {0: refused(), 1: refused()}, "was refused"),
    (ROW, {0: refused(), 1: {"kind": "completed", "epochs": []}}, "ranks disagree"),
    (ROW, {0: refused(), 1: {"kind": "error", "error": "Traceback\nDataTimeout: waited"}}, "DataTimeout: waited"),
])
def test_any_other_end_is_a_failure(row, reports, problem):
    outcome = sweep.judge(row, reports)
    assert outcome.kind == "failed"
    assert problem in "\n".join(outcome.problems)


def test_a_row_is_a_function_of_the_seed_and_its_number():
    assert sweep.draw_rows(SEED, 5)[3] == sweep.draw_row(SEED, 3)
    assert sweep.draw_row(SEED, 3) != sweep.draw_row(SEED + 1, 3)
