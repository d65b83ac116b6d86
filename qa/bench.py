"""`qa bench`: what users wait for, each figure beside its floor measured in the same run.

Floors: the bare model encoding the same strings (one question at a time for latency, batches
for throughput and builds) with the same torch threads, on the same machine, in the same run.

Scale uses synthetic collections built from the seeds by a fixed recipe (`distractors`):
sentences of the seed articles with every number and every capitalised word after the first
replaced at random, so no distractor states a gold answer's names or dates, packed into
documents of 40 sentences. Sentence vectors are real model vectors (each distinct sentence is
encoded once); a distractor chunk's vector is the normalised mean of its sentences' vectors, an
approximation that keeps 100k chunks within minutes on two cores. Seed chunks are encoded for real.
The distinct sentences are encoded once, before the scale builds are timed: the model's build cost
is the "index build" row; the scale rows measure chunking, the stores and BM25 as they grow.

Usage:
    >>> report = Bench(settings, out_dir=Path("bench/results")).run()
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from qa.chunking import SentenceChunker, split_sentences
from qa.config import BACKENDS, Settings
from qa.data import Source
from qa.embedding import Embedder
from qa.sources import SourceReader
from qa.evaluation import contains_answer, load_questions
from qa.indexing import VERSIONS, IndexBuilder, current_version, load_index
from qa.corroboration import Corroborator
from qa.retrieval import Retriever

CLIENTS = 8
ROUNDS = 3  # throughput rounds, and rounds of its floor
REBUILDS = 3  # one-source rebuilds per size, a different line added each time: the row is their median


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


_connections = threading.local()


def _post(base: str, question: str, k: int = 5) -> dict:
    """POST /api/ask over a kept-alive connection per thread, as a real client library would."""
    host, port = base.removeprefix("http://").split(":")
    pool = _connections.__dict__.setdefault("pool", {})
    body = json.dumps({"question": question, "k": k})
    for attempt in range(2):
        connection = pool.get(base) or pool.setdefault(base, http.client.HTTPConnection(host, int(port), timeout=120))
        try:
            connection.request("POST", "/api/ask", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise OSError(f"/api/ask answered {response.status}")
            return json.loads(data)
        except (http.client.HTTPException, ConnectionError):
            connection.close()
            pool.pop(base, None)
            if attempt:
                raise


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Served:
    """`qa serve` on a free loopback port for the length of a `with` block."""

    def __init__(self, index_dir: Path, workers: int = 1, env: dict | None = None):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        qa = str(Path(sys.executable).with_name("qa"))
        self.args = [qa, "serve", "--port", str(self.port), "--index", str(index_dir), "--workers", str(workers)]
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> "_Served":
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 1800  # a stateless worker's first copy of 1M chunks takes minutes
        while True:  # cold start ends at the first answered question
            try:
                _post(self.base, "When was the treaty signed?")
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("qa serve did not start")
                time.sleep(0.05)
        self.cold_start = time.perf_counter() - self.started
        return self

    def memory_mb(self) -> dict[str, float]:
        """Resident memory of the server's processes (master and workers) and of its largest worker,
        that worker's split into private memory (what each more worker costs) and mapped files
        (libraries: the index's files are read with pread, from the page cache every worker shares)."""
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()]
        sizes = {pid: _memory_mb(pid) for pid in [self.process.pid, *workers]}
        largest = max((sizes[w] for w in workers), key=lambda m: m["VmRSS"], default={"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0})
        return {"server_rss_mb": sum(m["VmRSS"] for m in sizes.values()), "worker_rss_mb": largest["VmRSS"],
                "worker_private_mb": largest["RssAnon"], "worker_shared_mb": largest["RssFile"]}

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def _chroma_server(path: Path) -> Iterator[str]:
    """`chroma run` on a free loopback port for the length of a `with` block; yields its URL."""
    port = _free_port()
    chroma = subprocess.Popen([str(Path(sys.executable).with_name("chroma")), "run", "--path", str(path),
                               "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/v2/heartbeat", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("chroma run did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        chroma.terminate()
        chroma.wait(timeout=30)


def _memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (all resident), RssAnon (private) and RssFile (mapped files) of a process, MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        status = ""
    return {key: int(m.group(1)) / 1024 if (m := re.search(rf"{key}:\s+(\d+)", status)) else 0.0
            for key in ("VmRSS", "RssAnon", "RssFile")}


def _latencies(base: str, questions: list[str]) -> list[float]:
    out = []
    for q in questions:
        started = time.perf_counter()
        _post(base, q)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _throughput(base: str, questions: list[str], total: int) -> float:
    queue = iter(range(total))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                n = next(queue, None)
            if n is None:
                return
            _post(base, questions[n % len(questions)])

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total / (time.perf_counter() - started)


def _median_rate(base: str, questions: list[str]) -> float:
    """Questions/s, the median of ROUNDS rounds of 400. Each round's clients open new connections,
    and how they fall on the workers (each keeps its connections) differs from round to round:
    177 to 215 questions/s from one server of 2 workers on the seeds, in development runs."""
    return float(np.median([_throughput(base, questions, 400) for _ in range(ROUNDS)]))


class CachedEmbedder(Embedder):
    """Real vectors for sentences (each distinct one encoded once); a chunk not seen before gets the
    normalised mean of its sentences' vectors. For synthetic scale collections only (see module doc)."""

    def __init__(self, base: Embedder, chunk_tokens: int, exact: set[str]):
        super().__init__(base.model_path, backend=base.backend, device=base.device, cache_dir=base.cache_dir)
        self._model = base.model
        self.cache: dict[str, np.ndarray] = {}
        self.chunk_tokens = chunk_tokens
        self.exact = exact  # texts encoded for real (the seed sources' chunks)

    def encode(self, texts: list[str]) -> np.ndarray:
        sentences = {t for t in texts if t in self.exact}
        split = {}
        for t in texts:
            if t not in self.exact and t not in self.cache:
                split[t] = [t[s:e] for s, e in split_sentences(t, self.chunk_tokens)]
                sentences.update(split[t])
        todo = [s for s in sentences if s not in self.cache]
        for s, v in zip(todo, super().encode(todo)):
            self.cache[s] = v
        out = []
        for t in texts:
            if t not in self.cache:
                mean = np.mean([self.cache[s] for s in split[t]], axis=0)
                self.cache[t] = mean / max(np.linalg.norm(mean), 1e-12)
            out.append(self.cache[t])
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


NUMBER = re.compile(r"\d+")
CAPITALISED = re.compile(r"(?<=\s)[A-Z][\w’'-]+")


def variant_pool(seed_sentences: list[str], rng: random.Random, variants: int = 24) -> list[str]:
    """Seed sentences with every number and capitalised word after the first replaced at random."""
    syllables = ["ka", "ro", "vel", "tin", "mar", "sol", "bri", "den", "lo", "qua", "zen", "pur"]

    def name() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()

    pool = []
    # Only sentences with a final stop: joined into a paragraph they split back into themselves,
    # so each is one cached vector rather than a new run-on text to encode.
    for sentence in (s for s in seed_sentences if s.endswith((".", "!", "?", '"', "”"))):
        for _ in range(variants):
            varied = NUMBER.sub(lambda m: str(rng.randint(1, 9999)), sentence)
            pool.append(CAPITALISED.sub(lambda m: name(), varied))
    return pool


def distractors(pool: list[str], n_docs: int, rng: random.Random) -> list[str]:
    """Documents of 40 sentences drawn from the pool, a line break every five."""
    docs = []
    for _ in range(n_docs):
        picked = rng.sample(pool, 40)
        docs.append("\n".join(" ".join(picked[i : i + 5]) for i in range(0, 40, 5)))
    return docs


@dataclass
class Bench:
    settings: Settings
    out_dir: Path
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    scaleout: bool = True
    rows: list[dict] = field(default_factory=list)
    scale: list[dict] = field(default_factory=list)
    cached: CachedEmbedder | None = None  # shared by every size: each distinct sentence is encoded once
    worker_floor: dict[str, float] = field(default_factory=dict)  # a worker serving the seeds: the model and libraries

    def row(self, figure: str, value: float, floor: float | None, target: str, unit: str, higher_is_better: bool = False,
            additive: bool = False):
        """`additive`: the target adds to the floor ("≤ floor + 3 s"), so no ratio is printed."""
        ratio = None if not floor or additive else (floor / value if higher_is_better else value / floor)
        self.rows.append({"figure": figure, "value": round(value, 3), "floor": None if floor is None else round(floor, 3),
                          "unit": unit, "ratio": None if ratio is None else round(ratio, 2), "target": target})

    def run(self) -> dict:
        work = Path(tempfile.mkdtemp(prefix="qa-bench-"))
        try:
            embedder = Embedder.for_settings(self.settings)
            embedder.encode(["warm up"])
            # The floor is always the bare PyTorch model, whichever backend the service runs on.
            torch_embedder = Embedder(self.settings.model_path, device=self.settings.device)
            model = torch_embedder.model
            seeds = work / "seeds"
            shutil.copytree(self.settings.sources_dir, seeds)
            settings = replace(self.settings, sources_dir=seeds, index_dir=work / "index")
            self._encoders(embedder, torch_embedder)
            self._build(settings, embedder, model)
            self._serve(settings, model)
            self._ranking(settings, embedder)
            if self.scaleout:
                self._scaleout(settings, embedder, work)
            for size in self.sizes:
                self._scale(settings, embedder, size, work)
            if self.scaleout:  # the same sizes with the vectors on a Chroma server, served by a stateless worker
                with _chroma_server(work / "chroma-scale") as url:
                    for size in self.sizes:
                        self._scale(settings, embedder, size, work, chroma_url=url)
            self._scale_rows()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report = {"machine": {"cores": os.cpu_count(), "torch_threads": _torch_threads(), "device": embedder.device,
                              "backend": embedder.backend}, "rows": self.rows, "scale": self.scale}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "bench.json").write_text(json.dumps(report, indent=2))
        _chart(report, self.out_dir / "bench.png")
        return report

    def _encoders(self, embedder: Embedder, floor: Embedder) -> None:
        """Each encoder runtime against the bare PyTorch model: one question at a time (what a
        request waits for) and passages in batches (what a build waits for)."""
        questions = [q.question for q in load_questions(Path("eval/questions.jsonl"))]
        passages = [c.text for c in SentenceChunker().run(_first_seed(self.settings.sources_dir))] * 4
        runtimes = {backend: floor if backend == "torch" else Embedder(embedder.model_path, backend=backend,
                                                                            cache_dir=embedder.cache_dir)
                    for backend in BACKENDS if backend == "torch" or floor.device == "cpu"}
        single, batch = {}, {}
        for _ in range(2):  # alternated, so another process's load falls on each runtime alike
            for backend, runtime in runtimes.items():
                runtime.encode_questions(questions[:4])
                times = []
                for q in questions:
                    started = time.perf_counter()
                    runtime.encode_questions([q])
                    times.append((time.perf_counter() - started) * 1000)
                single.setdefault(backend, []).extend(times)
                started = time.perf_counter()
                runtime.encode(passages)
                batch.setdefault(backend, []).append(len(passages) / (time.perf_counter() - started))
        for backend in runtimes:
            self.row(f"encode one question p50, ms, {backend} on {runtimes[backend].device} (floor: torch)",
                     _percentile(single[backend], 50), _percentile(single["torch"], 50), "< floor", "ms")
        for backend in runtimes:
            self.row(f"encode passages in batches, texts/s, {backend} (floor: torch)", max(batch[backend]),
                     max(batch["torch"]), "> floor", "texts/s", higher_is_better=True)

    def _build(self, settings: Settings, embedder: Embedder, model) -> None:
        started = time.perf_counter()
        report = IndexBuilder(settings, embedder=embedder).run(full=True)
        build = time.perf_counter() - started
        index = load_index(settings)
        chunk_texts = [c.text for c in index.chunks]
        sentence_texts = [index.sources[c.source_id].text[s:e] for c in index.chunks for s, e in c.sentences]
        started = time.perf_counter()
        model.encode(chunk_texts, batch_size=embedder.batch_size)
        floor_chunks = time.perf_counter() - started
        started = time.perf_counter()
        model.encode(list(dict.fromkeys(chunk_texts + sentence_texts)), batch_size=embedder.batch_size)
        floor_all = time.perf_counter() - started
        self.row("index build, chunks/s (vs bare encode of the chunk texts)", report.chunks / build,
                 report.chunks / floor_chunks, "≥ 1/1.25 of floor", "chunks/s", higher_is_better=True)
        self.row("index build, chunks/s (vs bare encode of every text it embeds)", report.chunks / build,
                 report.chunks / floor_all, "—", "chunks/s", higher_is_better=True)
        path = next(p for p in sorted(settings.sources_dir.glob("*.txt")))
        path.write_text(path.read_text(encoding="utf-8") + "\nAn added closing line changes this source.", encoding="utf-8")
        started = time.perf_counter()
        IndexBuilder(settings, embedder=embedder).run()
        self.row(f"incremental rebuild, 1 of {report.sources} sources changed, s (floor: full build)",
                 time.perf_counter() - started, build, "≈ share of the collection changed", "s")

    def _serve(self, settings: Settings, model) -> None:
        questions = [q.question for q in load_questions(Path("eval/questions.jsonl"))]
        with _Served(settings.index_dir) as server:
            self.row("cold start: qa serve to first answer, s", server.cold_start, None, "≤ 4 s", "s")
            _latencies(server.base, questions[:10])
            served = _latencies(server.base, questions * 3)
            floor = []
            for q in questions * 3:
                started = time.perf_counter()
                model.encode(q)
                floor.append((time.perf_counter() - started) * 1000)
            self.row("query latency p50 over loopback, ms", _percentile(served, 50), _percentile(floor, 50), "≤ 1.5× floor", "ms")
            self.row("query latency p95 over loopback, ms", _percentile(served, 95), _percentile(floor, 95), "≤ 3× floor", "ms")
            rate = _median_rate(server.base, questions)
            self.worker_floor = server.memory_mb()
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on, not the machine's
        with _Served(settings.index_dir, workers=cores) as server:  # a worker per core: what `--workers` is for
            _throughput(server.base, questions, 40)  # every worker warm
            rate_per_core = _median_rate(server.base, questions)
        batch = questions * 4
        floor_rate = 0.0
        for _ in range(ROUNDS):  # the floor's best round against the service's median one
            started = time.perf_counter()
            model.encode(batch, batch_size=32)
            floor_rate = max(floor_rate, len(batch) / (time.perf_counter() - started))
        self.row(f"throughput, {CLIENTS} concurrent clients, 1 worker, questions/s", rate, floor_rate, "≥ 0.6× floor", "q/s", higher_is_better=True)
        self.row(f"throughput, {CLIENTS} concurrent clients, a worker per core ({cores}), questions/s", rate_per_core, floor_rate, "≥ 0.6× floor", "q/s",
                 higher_is_better=True)

    def _ranking(self, settings: Settings, embedder: Embedder) -> None:
        """In process, question vectors given: the whole ranking step against its two candidate lookups
        alone. The difference is what reading, scoring, deduping and highlighting cost per question."""
        index = load_index(settings)
        questions = [q.question for q in load_questions(Path("eval/questions.jsonl"))]
        vectors = embedder.encode_questions(questions)
        retriever = Retriever(embedder)
        ranked, lookups = [], []
        for _ in range(3):
            for question, vector in zip(questions, vectors):
                started = time.perf_counter()
                retriever.nearest(index, vector, retriever.candidates)
                index.lexical.search(question, retriever.candidates)
                lookups.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                retriever.run(index, question, 5, query=vector)
                ranked.append((time.perf_counter() - started) * 1000)
        lookup = _percentile(lookups, 50)
        self.row("ranking step per question p50, ms (floor: its dense and BM25 lookups)", _percentile(ranked, 50), lookup,
                 "≤ floor + 3 ms", "ms", additive=True)

    def _scaleout(self, seed_settings: Settings, embedder: Embedder, work: Path) -> None:
        """Throughput with 1 and 2 workers when the vectors live on a Chroma server (`chroma run`)."""
        with _chroma_server(work / "chroma-server") as url:
            settings = replace(seed_settings, index_dir=work / "index-server", chroma_url=url)
            IndexBuilder(settings, embedder=embedder).run(full=True)
            questions = [q.question for q in load_questions(Path("eval/questions.jsonl"))]
            rates = {}
            for workers in (1, 2):
                with _Served(settings.index_dir, workers=workers, env={"QA_CHROMA_URL": url}) as server:
                    _throughput(server.base, questions, 40)  # every worker warm
                    rates[workers] = _median_rate(server.base, questions)
            self.row("Chroma server, 1 worker, 8 clients, questions/s", rates[1], None, "—", "q/s")
            self.row("Chroma server, 2 workers, 8 clients, questions/s", rates[2], rates[1], "—", "q/s", higher_is_better=True)

    def _scale(self, seed_settings: Settings, embedder: Embedder, size: int, work: Path, chroma_url: str | None = None) -> None:
        """One synthetic size: full build, `REBUILDS` one-source rebuilds (each followed by the worker:
        a single one ranged 2.1-4.1 s at 100k chunks), then latency and memory of one worker.
        On a Chroma server (`chroma_url`) the worker is stateless: an empty folder, the URL and the
        published name; its cold start includes copying the index, and it is timed following the rebuild."""
        mode = "server" if chroma_url else "embedded"
        folder = work / f"scale-{size}"
        if not folder.exists():
            self._synthetic(seed_settings, embedder, size, folder)
        settings = replace(seed_settings, sources_dir=folder, index_dir=work / f"index-{size}-{mode}", chroma_url=chroma_url)
        seed_ids = {p.stem for p in seed_settings.sources_dir.glob("*.txt")}
        started = time.perf_counter()
        report = IndexBuilder(settings, embedder=self.cached).run(full=True)
        build = time.perf_counter() - started
        path = folder / f"{sorted(seed_ids)[0]}.txt"
        worker_dir, env = settings.index_dir, {}
        if chroma_url:
            worker_dir, env = work / f"worker-{size}", {"QA_CHROMA_URL": chroma_url, "QA_CHROMA_INDEX": report.published}
        gold = [q for q in load_questions(Path("eval/questions.jsonl")) if q.answerable]
        with _Served(worker_dir, env=env) as server:
            cold = server.cold_start
            rebuilds = []  # (seconds, embedding seconds, seconds until the worker answered from it)
            for i in range(REBUILDS):
                path.write_text(path.read_text(encoding="utf-8") + f"\nAn added closing line changes this source ({mode}, {i}).",
                                encoding="utf-8")
                started = time.perf_counter()
                rebuilt = IndexBuilder(settings, embedder=self.cached).run()
                incremental = time.perf_counter() - started
                while _post(server.base, "When was the treaty signed?")["index_version"] != rebuilt.version:
                    if time.perf_counter() - started > 300:
                        raise RuntimeError(f"the worker did not follow the rebuild at {size:,} chunks ({mode})")
                    time.sleep(0.05)
                rebuilds.append((incremental, rebuilt.embedding_seconds, time.perf_counter() - started - incremental))
            incremental, embedding, follow = (float(np.median(column)) for column in zip(*rebuilds))
            # The target is each rebuild's time beyond its own embedding (the first loads the model).
            beyond_embedding = float(np.median([seconds - embedded for seconds, embedded, _ in rebuilds]))
            _latencies(server.base, [q.question for q in gold[:5]])
            started_all = []
            hits = sources = 0
            for q in gold:
                started = time.perf_counter()
                results = _post(server.base, q.question)["results"]
                started_all.append((time.perf_counter() - started) * 1000)
                top = [r for r in results[:5] if r["source"]["id"] in seed_ids]
                hits += any(contains_answer(r["text"], q.answers) for r in top)
                sources += any(r["source"]["id"] in q.sources for r in top)
            memory = server.memory_mb()
        with _Served(worker_dir, env=env) as again:  # a restart: its files cached, a stateless worker's copy kept
            restart = again.cold_start
        page_cache = self._cold_reads(settings, embedder, gold) if not chroma_url else {}
        served = worker_dir / "mirror" / report.published if chroma_url else settings.index_dir
        version_dir = served / VERSIONS / current_version(served)
        disk = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file()) / 2**20
        # The floor of disk per chunk: its float16 vectors and its sentences', which every query may read.
        vector_bytes = sum((version_dir / f"{name}.npy").stat().st_size for name in ("chunk_vectors", "sentence_vectors"))
        self.scale.append({
            "mode": mode, "chunks": report.chunks, "build_s": round(build, 1), "build_chunks_per_s": round(report.chunks / build, 1),
            "incremental_s": round(incremental, 2), "incremental_max_s": round(max(r[0] for r in rebuilds), 2),
            "incremental_embedding_s": round(embedding, 3), "incremental_beyond_embedding_s": round(beyond_embedding, 2),
            "cold_start_s": round(cold, 2), "restart_s": round(restart, 2), "follow_s": round(follow, 2),
            "query_p50_ms": round(_percentile(started_all, 50), 1),
            "query_p95_ms": round(_percentile(started_all, 95), 1), **{k: round(v) for k, v in memory.items()},
            "disk_mb": round(disk, 1), "disk_kb_per_chunk": round(disk * 1024 / report.chunks, 2),
            "vector_kb_per_chunk": round(vector_bytes / 1024 / report.chunks, 2),
            "answer@5": round(hits / len(gold), 3), "source@5": round(sources / len(gold), 3), **page_cache,
        })

    def _cold_reads(self, settings: Settings, embedder: Embedder, gold: list) -> dict[str, float]:
        """In process, question vectors given: ranking and corroboration with the version's files out
        of the page cache (as a machine that reclaims cold pages, or an index larger than memory,
        leaves them: `POSIX_FADV_DONTNEED` on each), then the same questions with them cached. Both
        passes start with no passage kept, so they differ only in where the reads come from."""
        index = load_index(settings)
        try:
            questions = [q.question for q in gold]
            vectors = embedder.encode_questions(questions)
            passes = {}
            for name in ("cold", "cached"):
                if name == "cold":
                    _evict(settings.index_dir / VERSIONS / index.version)
                retriever = Retriever(embedder)
                corroborator = Corroborator()
                times = []
                for question, vector in zip(questions, vectors):
                    started = time.perf_counter()
                    corroborator.run(index, retriever.run(index, question, 10, query=vector), 5)
                    times.append((time.perf_counter() - started) * 1000)
                passes[name] = round(_percentile(times, 50), 2)
        finally:
            index.close()
        return {"ranking_cold_p50_ms": passes["cold"], "ranking_cached_p50_ms": passes["cached"]}

    def _synthetic(self, seed_settings: Settings, embedder: Embedder, size: int, folder: Path) -> None:
        """The seeds and enough distractors for about `size` chunks (see the module doc)."""
        shutil.copytree(seed_settings.sources_dir, folder)
        seed_index = load_index(seed_settings)
        try:
            sentences = sorted({seed_index.sources[c.source_id].text[a:b] for c in seed_index.chunks for a, b in c.sentences})
            exact = {c.text for c in seed_index.chunks}
            seed_chunks = len(seed_index.chunks)
        finally:
            seed_index.close()
        pool = variant_pool(sentences, random.Random(0))
        per_doc = 20  # chunks a 40-sentence distractor makes at 128 tokens, measured
        for i, doc in enumerate(distractors(pool, max(1, (size - seed_chunks) // per_doc), random.Random(size))):
            (folder / f"synthetic-{i:06d}.txt").write_text(doc, encoding="utf-8")
        if self.cached is None:
            self.cached = CachedEmbedder(embedder, seed_settings.chunk_tokens, exact=exact)
            self.cached.encode(pool)  # untimed: the model's cost is measured above, scale measures the rest

    def _scale_rows(self) -> None:
        """The scale table's figures as rows beside their floors: latency against the smallest size,
        a worker's memory against a worker serving the seeds (model and libraries), disk against the vectors."""
        if not self.scale:
            return
        for r in self.scale:
            base = next(b for b in self.scale if b["mode"] == r["mode"])
            n = f"{r['chunks']:,} chunks, {r['mode']}"
            self.row(f"query p50 at {n}, ms (floor: p50 at {base['chunks']:,})", r["query_p50_ms"], base["query_p50_ms"],
                     "≤ 1.5× floor", "ms")
            self.row(f"query p95 at {n}, ms (floor: p95 at {base['chunks']:,})", r["query_p95_ms"], base["query_p95_ms"],
                     "≤ 1.5× floor", "ms")
            self.row(f"RSS per worker at {n}, MB (floor: a worker serving the seeds)", r["worker_rss_mb"],
                     self.worker_floor.get("worker_rss_mb"), "≤ 1,024 MB at 1M" if r["mode"] == "server" else "≤ 2,560 MB at 1M", "MB")
            self.row(f"of which private to the worker at {n}, MB (floor: a worker serving the seeds)",
                     r["worker_private_mb"], self.worker_floor.get("worker_private_mb"), "—", "MB")
            self.row(f"one-source rebuild at {n}, s, median of {REBUILDS} (floor: the median embedding)", r["incremental_s"],
                     r["incremental_embedding_s"], "—", "s", additive=True)
            self.row(f"one-source rebuild at {n}, s beyond its own embedding, median of {REBUILDS}",
                     r["incremental_beyond_embedding_s"], None, "≤ 3 s", "s")
            self.row(f"one-source rebuild at {n}, s, slowest of {REBUILDS} (floor: the median embedding)", r["incremental_max_s"],
                     r["incremental_embedding_s"], "—", "s", additive=True)
            self.row(f"cold start at {n}, s: the first start after its build", r["cold_start_s"], None, "≤ 4 s", "s")
            self.row(f"cold start at {n}, s: a restart", r["restart_s"], None, "≤ 4 s", "s")
            self.row(f"disk per chunk at {n}, KB (floor: its float16 vectors)", r["disk_kb_per_chunk"],
                     r["vector_kb_per_chunk"], "—", "KB")
            if "ranking_cold_p50_ms" in r:
                self.row(f"ranking in process, files out of the page cache, at {n}, p50 ms (floor: cached)",
                         r["ranking_cold_p50_ms"], r["ranking_cached_p50_ms"], "—", "ms")


def _evict(folder: Path) -> None:
    """Drop a folder's files from the page cache: written back first, since dirty pages stay."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _first_seed(folder: Path) -> Source:
    """The first text source of `folder`, read as a build reads it."""
    sources, _ = SourceReader().run(folder)
    return sources[0]


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def format_bench(report: dict) -> str:
    machine = report["machine"]
    lines = [f"machine: {machine['cores']} cores, torch threads {machine['torch_threads']}, device {machine['device']}, "
             f"service backend {machine['backend']}", ""]
    lines.append(f"{'figure':<76}{'value':>10}{'floor':>10}{'ratio':>8}  target")
    for r in report["rows"]:
        floor = "—" if r["floor"] is None else f"{r['floor']:.2f}"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"{r['figure']:<76}{r['value']:>10.2f}{floor:>10}{ratio:>8}  {r['target']}")
    if report["scale"]:
        lines.append("")
        keys = list(dict.fromkeys(k for row in report["scale"] for k in row))  # server rows have no page-cache pass
        lines.append("".join(f"{k:>19}" for k in keys))
        for row in report["scale"]:
            lines.append("".join(f"{row.get(k, '—'):>19}" for k in keys))
    return "\n".join(lines)


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = report["scale"]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), dpi=100)
    if scale:
        x = [r["chunks"] for r in scale]
        for ax, keys, title in zip(axes, [("query_p50_ms", "query_p95_ms"), ("build_chunks_per_s",), ("server_rss_mb", "worker_rss_mb"), ("disk_mb",)],
                                   ["query latency (ms)", "build rate (chunks/s)", "RSS (MB)", "index on disk (MB)"]):
            for key in keys:
                ax.plot(x, [r[key] for r in scale], marker="o", label=key)
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("chunks")
            ax.set_title(title, fontsize=10)
            if len(keys) > 1:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
