"""`make soak`: mixed asks, rebuilds and source edits against `qa serve --workers 4`, for a while.

Passes when there is no 5xx, no dropped connection, no answer from a version that was already
deleted when its request began, and the workers' memory (RSS, summed) grew by at most 10% from
the end of the warm-up to the end. Prints the figures as JSON; exits 1 when a limit is broken.

    python -m tests.soak --seconds 1200     # make soak (SOAK_SECONDS=120 make soak for two minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from tests.conftest import QA, SEEDS, Server

TOKEN = "soak-token"
QUESTIONS = [json.loads(line)["question"] for line in (Path(__file__).resolve().parent.parent / "eval" / "questions.jsonl").open()]
INVALID = [({"question": ""}, 400), ({"question": "x", "k": 0}, 400), ({"question": "x", "k": "5"}, 400),
           ({"question": "x", "extra": 1}, 400), ({"question": "x" * 1001}, 400)]


def worker_pids(master: int) -> list[int]:
    return sorted(map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, seconds: float, workers: int, clients: int, warmup: float, seed: int):
        self.seconds, self.workers, self.clients, self.warmup = seconds, workers, clients, warmup
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.codes: Counter = Counter()
        self.failures: list[str] = []
        self.deleted_at: dict[str, float] = {}  # version -> when it was first seen gone from versions/
        self.stale: list[tuple[str, float]] = []  # answers from a version deleted before the request began
        self.rebuilds: Counter = Counter()
        self.versions_served: set[str] = set()

    def run(self) -> dict:
        work = Path(tempfile.mkdtemp(prefix="qa-soak-"))
        try:
            return self._run(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, work: Path) -> dict:
        self.sources, self.index_dir = work / "sources", work / "index"
        shutil.copytree(SEEDS, self.sources)
        for path in self.sources.iterdir():
            path.chmod(0o644)
        subprocess.run([QA, "index", "--sources", str(self.sources), "--index", str(self.index_dir)], check=True, capture_output=True)
        with Server(self.index_dir, workers=self.workers, threads=4, env={"QA_ADMIN_TOKEN": TOKEN}) as server:
            self.base = server.base
            threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
            threads += [threading.Thread(target=self._watch_versions, daemon=True),
                        threading.Thread(target=self._mutate, daemon=True)]
            for t in threads:
                t.start()
            time.sleep(self.warmup)
            pids_start = worker_pids(server.process.pid)
            rss_start = {pid: rss_kib(pid) for pid in pids_start}
            started = time.monotonic()
            while time.monotonic() - started < self.seconds - self.warmup and not self.stop.is_set():
                time.sleep(1)
            self.stop.set()
            for t in threads:
                t.join(timeout=300)
            pids_end = worker_pids(server.process.pid)
            rss_end = {pid: rss_kib(pid) for pid in pids_end}
        total_start, total_end = sum(rss_start.values()), sum(rss_end.values())
        report = {
            "seconds": self.seconds, "workers": self.workers, "clients": self.clients,
            "requests": sum(self.codes.values()), "status": dict(sorted(self.codes.items())),
            "errors_5xx": sum(n for code, n in self.codes.items() if isinstance(code, int) and code >= 500),
            "failures": self.failures[:20], "answers_from_deleted_versions": len(self.stale),
            "rebuilds": dict(self.rebuilds), "versions_served": len(self.versions_served),
            "worker_restarts": len(set(pids_end) - set(pids_start)),
            "rss_mib_start": round(total_start / 1024, 1), "rss_mib_end": round(total_end / 1024, 1),
            "rss_growth": round(total_end / total_start - 1, 4) if total_start else None,
            "leftover_versions": sorted(p.name for p in (self.index_dir / "versions").iterdir()),
        }
        report["ok"] = (report["errors_5xx"] == 0 and not self.failures and not self.stale
                        and report["rss_growth"] is not None and report["rss_growth"] <= 0.10)
        return report

    def _client(self) -> None:
        session, used = requests.Session(), 0
        while not self.stop.is_set():
            used += 1
            if used % 20 == 0:  # a new connection now and then, so the kernel spreads clients over the workers
                session.close()
                session = requests.Session()
            began = time.time()
            invalid = self.rng.random() < 0.2
            body, expected = self.rng.choice(INVALID) if invalid else ({"question": self.rng.choice(QUESTIONS), "k": 5}, 200)
            try:
                if not invalid and self.rng.random() < 0.3:
                    r = session.get(self.base + "/api/ask", params={"q": body["question"], "k": 5}, timeout=120)
                else:
                    r = session.post(self.base + "/api/ask", json=body, timeout=120)
            except requests.RequestException as err:
                with self.lock:
                    self.codes["dropped"] += 1
                    self.failures.append(f"{type(err).__name__}: {err}")
                continue
            with self.lock:
                self.codes[r.status_code] += 1
                if r.status_code != expected:
                    self.failures.append(f"{r.status_code} for {str(body)[:60]}: {r.text[:200]}")
                elif r.status_code == 200:
                    version = r.json()["index_version"]
                    self.versions_served.add(version)
                    gone = self.deleted_at.get(version)
                    if gone is not None and gone < began:
                        self.stale.append((version, began))

    def _watch_versions(self) -> None:
        versions, known = self.index_dir / "versions", set()
        while not self.stop.is_set():
            try:
                now = {p.name for p in versions.iterdir() if (p / "manifest.json").is_file()}
            except OSError:
                now = set()
            stamp = time.time()
            with self.lock:
                for version in known - now:
                    self.deleted_at.setdefault(version, stamp)
            known |= now
            time.sleep(0.05)

    def _mutate(self) -> None:
        """Edit a source, then rebuild: over HTTP or with `qa index`, in turn; now and then two in a row."""
        auth = {"Authorization": f"Bearer {TOKEN}"}
        step = 0
        while not self.stop.wait(self.rng.uniform(5, 15)):
            step += 1
            extra = self.sources / "soak.txt"
            if step % 3 == 0 and extra.exists():
                extra.unlink()
            else:
                with extra.open("a", encoding="utf-8") as f:
                    f.write(f"Soak entry {step}: the committee met again to review article {self.rng.randint(1, 99)}.\n")
            for _ in range(2 if step % 4 == 0 else 1):
                if step % 2:
                    r = requests.post(self.base + "/api/index", headers=auth, timeout=30)
                    if r.status_code == 409:
                        self.rebuilds["busy"] += 1
                        continue
                    deadline = time.monotonic() + 600
                    while time.monotonic() < deadline:
                        state = requests.get(self.base + "/api/index", headers=auth, timeout=30).json()
                        if state["state"] != "running":
                            break
                        time.sleep(0.5)
                    self.rebuilds[f"http_{state['state']}"] += 1
                else:
                    done = subprocess.run([QA, "index", "--sources", str(self.sources), "--index", str(self.index_dir), "--wait", "600"],
                                          capture_output=True, text=True)
                    self.rebuilds["cli_succeeded" if done.returncode == 0 else "cli_failed"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("QA_SOAK_SECONDS", 1200)))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the first RSS reading (default: a tenth, 10..120)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(max(args.seconds / 10, 10), 120)
    report = Soak(args.seconds, args.workers, args.clients, warmup, args.seed).run()
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
