"""The timeline's pure helpers: the critical path (as Jaeger defines it) and tree order."""

from __future__ import annotations

from flock.tracing._waterfall import critical_path, tree_order

# (span_id, parent_id, start, end)


def test_only_the_sibling_that_ends_last_is_critical_among_concurrent_ones() -> None:
    spans = [
        ("root", None, 0, 100),
        ("a", "root", 10, 90),  # ends last: decides the end
        ("b", "root", 10, 50),  # concurrent with a, done earlier: waiting on it costs nothing
        ("c", "root", 20, 80),
        ("b1", "b", 11, 49),
        ("a1", "a", 12, 88),
    ]
    assert critical_path(spans) == {"root", "a", "a1"}


def test_the_walk_continues_before_the_critical_child_started() -> None:
    # prepare (0-30) then two concurrent fetches (30-70, 30-60), then render (75-95):
    # render and the slower fetch and prepare are critical; the faster fetch is not.
    spans = [
        ("root", None, 0, 100),
        ("prepare", "root", 0, 30),
        ("fetch1", "root", 30, 70),
        ("fetch2", "root", 30, 60),
        ("render", "root", 75, 95),
    ]
    assert critical_path(spans) == {"root", "prepare", "fetch1", "render"}


def test_a_sibling_overlapping_the_cursor_is_skipped_but_an_earlier_one_is_not() -> None:
    spans = [
        ("root", None, 0, 100),
        ("last", "root", 50, 100),
        ("overlap", "root", 40, 60),  # ends after "last" started: not what "last" waited on
        ("first", "root", 5, 45),  # ends before 50: it is
    ]
    assert critical_path(spans) == {"root", "last", "first"}


def test_a_child_that_outlives_its_parent_is_not_waited_for_by_it() -> None:
    spans = [
        ("root", None, 0, 100),
        ("publish", "root", 0, 10),
        ("agent", "publish", 20, 95),  # started by the publish after it ended
        ("tool", "agent", 30, 90),
        ("wait", "root", 15, 98),
        ("long", "wait", 16, 200),  # outlives "wait": "wait" did not wait for it
        ("other", "wait", 16, 50),
    ]
    # "wait" ended at 98 after "agent" (95), not after "long" or "other": it waited for it.
    assert critical_path(spans) == {"root", "wait", "agent", "tool", "publish"}
    # A span without children of its own is doing its own work: it waits for nothing.
    leaf = [("root", None, 0, 100), ("a", "root", 0, 5), ("b", "a", 1, 60), ("c", "root", 6, 99)]
    assert critical_path(leaf) == {"root", "c", "a"}


def test_running_trace_without_its_root_walks_all_roots_together() -> None:
    spans = [
        ("p1", "missing", 0, 40),
        ("p2", "missing", 10, 30),  # concurrent with p1, ends before it
        ("p3", "missing", 50, 60),
    ]
    assert critical_path(spans) == {"p1", "p3"}


def test_sequential_spans_are_all_critical_and_empty_traces_have_no_path() -> None:
    spans = [("a", None, 0, 10), ("b", "a", 1, 4), ("c", "a", 5, 9)]
    assert critical_path(spans) == {"a", "b", "c"}
    assert critical_path([]) == set()


def test_corrupt_parent_cycles_do_not_hang() -> None:
    spans = [("root", None, 0, 10), ("x", "y", 1, 2), ("y", "x", 3, 4)]
    assert critical_path(spans) == {"root"}
    assert len(tree_order(spans)) == 3


def test_run_until_idle_waits_for_the_agent_runs_that_publishes_started() -> None:
    # flock's shape: an agent run is a child of the publish that started it and outlives
    # it; run_until_idle (not its parent) waits for it. Of two concurrent runs the one that
    # ended last is critical, and so is the run whose output started it (a chain).
    spans = [
        ("workflow", None, 0, 100),
        ("publish", "workflow", 0, 2),
        ("fast_agent", "publish", 1, 40),
        ("fast_llm", "fast_agent", 2, 39),
        ("writer", "publish", 1, 30),
        ("writer_llm", "writer", 2, 29),
        ("editor", "writer", 31, 90),  # started by the writer's output
        ("editor_llm", "editor", 32, 89),
        ("run_until_idle", "workflow", 3, 99),
        ("shutdown", "run_until_idle", 98, 99),
    ]
    assert critical_path(spans) == {
        "workflow",
        "publish",
        "writer",
        "writer_llm",
        "editor",
        "editor_llm",
        "run_until_idle",
        "shutdown",
    }


def test_the_seed_trace_is_critical_from_end_to_end() -> None:
    from tests.tracing.stored import SEED_SPANS

    spans = [
        (name, parent, int(offset * 1000), int((offset + duration) * 1000))
        for name, parent, offset, duration in SEED_SPANS
    ]
    # Everything ran one after the other, the agent run (5.2 s of the 5.3 s) included.
    assert critical_path(spans) == {name for name, *_ in SEED_SPANS}
