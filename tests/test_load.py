"""Load test against the production server `qa serve` starts (gunicorn, gthread), loopback only.

In `make test` it sends 400 requests from 8 clients; `make loadtest` (QA_LOADTEST_FULL=1) sends
2,000. Bounded in count and time. Asserts zero 5xx, zero dropped connections, and that every valid
answer equals the answer the same question gets when asked alone. Prints p50/p95/p99 and throughput.
"""
import json
import os
import threading
import time

import numpy as np
import requests

from tests.conftest import Server

CLIENTS = 8
TOTAL = 2000 if os.environ.get("QA_LOADTEST_FULL") else 400
TIME_LIMIT = 600

VALID = [
    "When did Maduro enact the treaty law?",
    "Who presented the bill in the National Assembly?",
    "How many agreements were signed in November 2025?",
    "Where did the military exercises take place?",
    "What is the capital of France?",
    "Which Russian official called the ratification very important?",
    "How many Igla-S missiles does Venezuela have?",
    "cancer vaccine",
]
INVALID = [
    ("post", {"json": {"question": ""}}, 400),
    ("post", {"json": {"question": "x", "k": 99}}, 400),
    ("post", {"data": "{broken", "headers": {"Content-Type": "application/json"}}, 400),
    ("get", {"params": {"q": "hi", "k": "many"}}, 400),
]


def _essence(body: dict) -> list:
    return [(r["source"]["id"], r["span"]["start"], r["span"]["end"], r["highlight"]["start"]) for r in body["results"]]


def _same_answer(body: dict, alone: dict) -> bool:
    """The same passages, order, highlights and verdict. Questions asked together are encoded in one
    batch, whose vectors differ from a lone encode by float noise (~1e-7), so scores match to 1e-3."""
    return (body["answered"], _essence(body)) == (alone["answered"], _essence(alone)) and all(
        abs(a["score"] - b["score"]) < 1e-3 for a, b in zip(body["results"], alone["results"]))


def test_load_mixed_valid_and_invalid(seed_index, tmp_path):
    with Server(seed_index.index_dir, workers=1, threads=8) as server:
        url = server.base + "/api/ask"
        alone = {}
        for q in VALID:
            body = requests.post(url, json={"question": q, "k": 5}, timeout=30).json()
            alone[q] = body

        latencies, errors, mismatches, dropped = [], [], [], []
        lock = threading.Lock()
        counter = iter(range(TOTAL))
        deadline = time.monotonic() + TIME_LIMIT

        def client(seed: int):
            session = requests.Session()
            rng = np.random.default_rng(seed)
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                valid = rng.random() < 0.75
                started = time.perf_counter()
                try:
                    if valid:
                        q = VALID[int(rng.integers(len(VALID)))]
                        r = session.post(url, json={"question": q, "k": 5}, timeout=60)
                    else:
                        method, kwargs, expected = INVALID[int(rng.integers(len(INVALID)))]
                        r = getattr(session, method)(url, timeout=60, **kwargs)
                except requests.RequestException as err:
                    with lock:
                        dropped.append(repr(err))
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if r.status_code >= 500:
                        errors.append(r.status_code)
                    elif valid:
                        body = r.json()
                        if r.status_code != 200 or not _same_answer(body, alone[q]):
                            mismatches.append(q)
                    elif r.status_code != expected or "error" not in r.json():
                        mismatches.append(f"invalid got {r.status_code}")

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=TIME_LIMIT + 60)
        wall = time.perf_counter() - started

    ms = np.array(latencies) * 1000
    figures = {
        "requests": len(latencies), "clients": CLIENTS, "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1), "5xx": len(errors), "dropped": len(dropped), "mismatches": len(mismatches),
    }
    print("\nload test:", json.dumps(figures))
    (tmp_path / "load.json").write_text(json.dumps(figures))
    assert not errors and not dropped, (errors[:5], dropped[:5])
    assert not mismatches, mismatches[:5]
    assert len(latencies) == TOTAL
