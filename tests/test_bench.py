"""A quick `qa bench` (one small synthetic size, no scale-out) keeps the benchmark's code path alive.
It checks that every figure is measured and sits beside a positive floor, not how fast it is."""
import json
import subprocess

from qa.bench import format_bench
from tests.conftest import QA, ROOT


def test_quick_bench_prints_every_figure_beside_its_floor(tmp_path):
    result = subprocess.run([QA, "bench", "--sizes", "300", "--no-scaleout", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    figures = {r["figure"]: r for r in report["rows"]}
    assert any("query latency p50" in f for f in figures) and any("throughput" in f for f in figures)
    for wanted in ("encode one question p50, ms, onnx on", "encode passages in batches, texts/s, onnx-int8",
                   "cold start", "s: a restart", "clients, a worker per core", "RSS per worker at", "of which private to the worker at", "disk per chunk at", "query p95 at",
                   "ranking in process, files out of the page cache", "one-source rebuild at",
                   "beyond its own embedding"):
        assert any(wanted in f for f in figures), wanted
    assert report["machine"]["device"] in ("cpu", "cuda") and report["machine"]["backend"]
    for row in report["rows"]:
        assert row["value"] > 0
        # Additive targets, and a rebuild beside its embedding (which can round to 0): no ratio.
        if "beyond its own embedding" in row["figure"]:  # the target's figure: nothing to compare it with
            assert row["floor"] is None and row["ratio"] is None and row["target"] == "≤ 3 s"
        elif row["target"].startswith("≤ floor +") or row["figure"].startswith("one-source rebuild"):
            assert row["floor"] is not None and row["ratio"] is None
        elif row["floor"] is not None:
            assert row["floor"] > 0 and row["ratio"] > 0
    (scale,) = report["scale"]
    assert scale["chunks"] >= 300 and scale["query_p50_ms"] > 0 and scale["disk_mb"] > 0 and scale["worker_rss_mb"] > 0
    assert scale["cold_start_s"] > 0 and scale["restart_s"] > 0
    # The bench's cached encoder may hold every text the changed source needs: its embedding can round to 0.
    assert 0 <= scale["incremental_embedding_s"] < scale["incremental_s"] <= scale["incremental_max_s"]
    assert 0 < scale["incremental_beyond_embedding_s"] <= scale["incremental_max_s"]
    # A worker's resident memory is its private memory and the files it maps (model, libraries, the index).
    assert 0 < scale["worker_private_mb"] < scale["worker_rss_mb"] and scale["worker_shared_mb"] > 0
    assert abs(scale["worker_private_mb"] + scale["worker_shared_mb"] - scale["worker_rss_mb"]) <= 0.05 * scale["worker_rss_mb"]
    assert 0 <= scale["answer@5"] <= 1
    assert scale["ranking_cold_p50_ms"] > 0 and scale["ranking_cached_p50_ms"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 5000
    assert "query latency p50" in result.stdout


def test_the_scale_table_prints_rows_of_both_modes():
    """Embedded rows carry the in-process page-cache pass, server rows do not: one table holds both."""
    report = {"machine": {"cores": 2, "torch_threads": 2, "device": "cpu", "backend": "onnx"}, "rows": [],
              "scale": [{"mode": "embedded", "chunks": 1041, "ranking_cold_p50_ms": 5.0},
                        {"mode": "server", "chunks": 1041}]}
    table = format_bench(report).splitlines()
    assert "ranking_cold_p50_ms" in table[-3] and table[-1].split() == ["server", "1041", "—"]
