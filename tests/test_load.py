"""Concurrent users: 8 clients x 5 jobs, all different; every job completes and every image's
metadata is its own request's. (Throughput and latency are printed by bench/load.py.)"""

from __future__ import annotations

from bench.load import run_load


def test_eight_clients_five_jobs_no_cross_talk(server):
    result = run_load(server.url, clients=8, jobs=5, steps=3)
    assert result["errors"] == []
    assert result["completed"] == 40
    assert result["cross_talk"] == []
    print(f"\n40 jobs in {result['wall_s']:.1f} s; p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s")
