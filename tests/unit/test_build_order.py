"""lifecycle.transform.inprocess.critical_path_first: dbt's queue hands its threads the ready
node with the longest chain of work after it, not the shallowest node (dbt's own order)."""

from __future__ import annotations

import networkx as nx
from dbt.graph.queue import GraphQueue

from lifecycle.transform.inprocess import critical_path_first, critical_path_scores

# a: a heavy model the rest of the build does not wait for; b -> c -> d: the longest chain
GRAPH = [("root", "a"), ("root", "b"), ("b", "c"), ("c", "d")]


def _first_two_ready() -> list[str]:
    graph = nx.DiGraph(GRAPH)
    graph.remove_node("root")  # done: a and b are ready side by side
    queue = GraphQueue(graph, manifest=None, selected=set(graph))
    return [queue.inner.get()[1] for _ in range(2)]


def test_dbts_own_order_takes_the_shallow_node_first_and_ours_the_longest_chain():
    seconds = {"a": 30.0, "b": 5.0, "c": 20.0, "d": 10.0}
    # dbt: both at depth 0, then by name
    assert _first_two_ready() == ["a", "b"]
    with critical_path_first(seconds, threads=2):
        # b's chain is 35 s of work, a's 30 s
        assert _first_two_ready() == ["b", "a"]
    assert _first_two_ready() == ["a", "b"]  # dbt's own again afterwards


def test_scores_weigh_unmeasured_nodes_by_the_median_and_count_nodes_without_figures():
    graph = nx.DiGraph(GRAPH)
    assert critical_path_scores(graph, {}) == {"root": -4, "a": -1, "b": -3, "c": -2, "d": -1}
    # c unmeasured: the median of the others (a 40, b 1, d 1, root 1 -> 1)
    scores = critical_path_scores(graph, {"root": 1.0, "a": 40.0, "b": 1.0, "d": 1.0})
    assert scores["a"] < scores["b"] and scores["root"] == -41.0


def test_the_queue_hands_out_a_node_only_to_a_free_thread():
    """dbt's main thread takes nodes as they become ready and queues them for its pool, first
    in first out: the order would hold only among nodes ready at once. With one thread, the
    second node waits until the first is done, and is then the best ready one."""
    import threading

    graph = nx.DiGraph([("a", "x"), ("b", "x")])
    # threads=0 (a setting of 0) counts as one: it must not wait forever
    with critical_path_first({"a": 1.0, "b": 5.0, "x": 1.0}, threads=0):
        queue = GraphQueue(graph, manifest=None, selected=set(graph))
        queue.manifest = type("M", (), {"expect": staticmethod(lambda uid: _Node(uid))})()
        first = queue.get()
        taken: list[str] = []
        waiting = threading.Thread(target=lambda: taken.append(queue.get().unique_id))
        waiting.start()
        waiting.join(timeout=0.5)
        assert first.unique_id == "b" and taken == []  # b's chain is longer; a waits
        queue.mark_done("b")
        waiting.join(timeout=5)
        assert taken == ["a"]


class _Node:
    def __init__(self, unique_id: str) -> None:
        self.unique_id = unique_id


def test_node_seconds_are_kept_for_the_next_process_and_a_bad_file_is_no_weights(tmp_path):
    from lifecycle.transform.inprocess import _read_seconds, _write_seconds

    path = tmp_path / "dbt-build" / "node_seconds.json"
    assert _read_seconds(path) == {}
    _write_seconds(path, {"model.lifecycle.customer_facts": 19.5})
    assert _read_seconds(path) == {"model.lifecycle.customer_facts": 19.5}
    assert list(path.parent.iterdir()) == [path]  # nothing half-written left beside it
    path.write_text("[1, 2")
    assert _read_seconds(path) == {}
    path.write_text('["not", "a", "mapping"]')
    assert _read_seconds(path) == {}
