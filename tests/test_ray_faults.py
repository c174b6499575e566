"""A node lost in the middle of a sharded run: the job finishes, every input row exactly once.

A local multi-node cluster (``ray.cluster_utils.Cluster``: a head for the driver and two worker
nodes, all on this machine, small logical CPU counts). Skipped without Ray.
"""

from __future__ import annotations

import json
import shutil
import tempfile

import orjson
import pytest

from stackscore.options import ScoreOptions

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from stackscore.integrations.ray import RayOptions, score_ray  # noqa: E402

pytestmark = pytest.mark.ray_cluster


@pytest.fixture
def three_nodes():
    tmp = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Fast failure detection: the head notices a killed node within about a second.
    system = {"health_check_period_ms": 200, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": system, "temp_dir": tmp}
    )
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]  # 1 actor each (SPREAD) + room for a restart
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_worker_node_removed_mid_run_loses_no_row_and_doubles_none(artifact, corpus_rows, tmp_path, three_nodes):
    cluster, workers = three_nodes
    src = tmp_path / "in"
    src.mkdir()
    expected: dict[str, list[str]] = {}
    for k in range(8):  # 8 shards of 300 rows; windows of 30 rows, so a shard takes a while
        rows = [{"id": f"s{k}-{i}", "text": corpus_rows[(k * 300 + i) % len(corpus_rows)]["text"]} for i in range(300)]
        (src / f"shard{k}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        expected[f"shard{k}.jsonl"] = [r["id"] for r in rows]
    removed: list[str] = []

    def lose_a_node(state):
        if removed or state.done < 1:
            return
        busy = {a["node_id"] for a in state.actors if a["busy"] and a["state"] == "ready"}
        victim = next((w for w in workers if w.node_id in busy), None)
        if victim is not None:
            removed.append(victim.node_id)
            cluster.remove_node(victim)  # its raylet, object store and actor processes, killed

    out = tmp_path / "out"
    result = score_ray(
        artifact, src, str(out) + "/", ScoreOptions.from_kwargs(progress=False, chunk_rows=30),
        RayOptions(actors=2, cpus_per_actor=1, stall_timeout=90, on_progress=lose_a_node),
    )
    assert removed, "no node was removed: the run finished before a shard was in flight"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert len(manifest["shards"]) == 8 and manifest["rows"] == 8 * 300 == manifest["scored"]
    seen: list[str] = []
    for rec in manifest["shards"]:
        lines = [orjson.loads(l) for l in (out / rec["output"]).read_bytes().splitlines()]
        assert [r["row"] for r in lines] == list(range(300))  # each row once, in order
        assert [r["id"] for r in lines] == expected[rec["input"].rsplit("/", 1)[-1]]
        assert all(r["error"] is None and r["label"] for r in lines)
        seen += [r["id"] for r in lines]
    assert sorted(seen) == sorted(i for ids in expected.values() for i in ids)  # exactly once, all of them
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", *sorted(r["output"] for r in manifest["shards"])]
    assert result.stats.rows <= 8 * 300  # a shard taken over after the loss went on from its committed parts
