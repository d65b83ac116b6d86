"""Encoder runtimes (QA_BACKEND), devices (QA_DEVICE) and which index a backend may query."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import json
import os
import shutil
from collections import Counter
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from qa.config import Settings, SettingsError
from qa.embedding import Embedder, ModelError, model_fingerprint
from qa.indexing import IndexBuilder, IndexUnavailable, load_index
from qa.onnx_encoder import META_FILE, PROBES

TEXTS = [*PROBES, "Nicolás Maduro enacted the law on October 7, 2025.", "¿Cuándo se firmó el tratado?"]


@pytest.mark.parametrize("env, named", [({"QA_BACKEND": "tensorflow"}, "QA_BACKEND"), ({"QA_DEVICE": "tpu"}, "QA_DEVICE"),
                                        ({"QA_BACKEND": "onnx", "QA_DEVICE": "cuda"}, "QA_BACKEND=torch with QA_DEVICE=cuda")])
def test_backend_and_device_settings_are_checked_at_start(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env=env)


@pytest.fixture(scope="module")
def torch_embedder(embedder):
    return Embedder(embedder.model_path, backend="torch")


def test_the_encoder_runs_on_the_threads_it_is_given_and_workers_share_the_cores(embedder, monkeypatch):
    from qa.serving import worker_encoder_threads

    one = Embedder.for_settings(Settings.from_env(env={"QA_ENCODER_THREADS": "1"}))
    assert one.model.session.get_session_options().intra_op_num_threads == 1
    assert np.allclose(one.encode(TEXTS), embedder.encode(TEXTS), atol=1e-5)  # the same vectors on fewer threads
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [worker_encoder_threads(n) for n in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]


def test_auto_device_is_cuda_only_when_torch_sees_one(torch_embedder):
    import torch

    torch_embedder.encode(["load"])
    assert torch_embedder.device == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("backend, floor", [("onnx", 0.9999), ("onnx-int8", 0.97)])
def test_onnx_export_is_made_once_from_the_bundled_weights_and_matches_torch(backend, floor, torch_embedder, tmp_path):
    onnx = Embedder(torch_embedder.model_path, backend=backend, cache_dir=tmp_path)
    vectors = onnx.encode(TEXTS)
    reference = torch_embedder.encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.min(np.sum(vectors * reference, axis=1)) >= floor
    exports = sorted(p.name for p in (tmp_path / "onnx").iterdir() if not p.name.startswith("."))  # beside each: its lock
    assert [e.split("-", 1)[1] for e in exports] == (["onnx"] if backend == "onnx" else ["onnx", "onnx-int8"])  # int8: from fp32
    folder = tmp_path / "onnx" / exports[-1]
    meta = json.loads((folder / META_FILE).read_text())
    against = "torch" if backend == "onnx" else "fp32_export"
    assert meta[f"min_cosine_vs_{against}"] >= floor and meta["weights"] == {"onnx": "fp32", "onnx-int8": "int8"}[backend]
    exported = (folder / "model.onnx").stat().st_mtime_ns
    again = Embedder(torch_embedder.model_path, backend=backend, cache_dir=tmp_path)
    # Batched with other texts or not: fp32 gives the same vectors; int8 quantizes activations per batch, so not quite.
    assert np.min(np.sum(again.encode(TEXTS[:2]) * vectors[:2], axis=1)) >= (0.99999 if backend == "onnx" else floor)
    assert (folder / "model.onnx").stat().st_mtime_ns == exported


@pytest.fixture(scope="module")
def w8_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("w8-cache")


def test_onnx_w8_embeds_passages_as_onnx_does_and_questions_with_8_bit_weights(torch_embedder, w8_cache):
    import onnx

    w8 = Embedder(torch_embedder.model_path, backend="onnx-w8", cache_dir=w8_cache)
    reference = torch_embedder.encode(TEXTS)
    assert np.min(np.sum(w8.encode(TEXTS) * reference, axis=1)) >= 0.9999  # passages: the fp32 export
    questions = w8.encode_questions(TEXTS)
    cosines = np.sum(questions * reference, axis=1)
    assert questions.dtype == np.float32 and np.allclose(np.linalg.norm(questions, axis=1), 1, atol=1e-3)
    assert cosines.min() >= 0.998 and cosines.min() < 0.99999  # close to torch's, yet another model's vectors
    assert np.allclose(w8.encode_question(TEXTS[0]), questions[0], atol=1e-5)  # the batcher asks the same model
    folders = {p.name.rsplit("-", 1)[-1]: p for p in (w8_cache / "onnx").iterdir() if not p.name.startswith(".")}
    assert sorted(folders) == ["onnx", "w8"]
    assert json.loads((folders["w8"] / META_FILE).read_text())["weights"] == "w8"
    ops = {name: Counter(node.op_type for node in onnx.load(str(folders[name] / "model.onnx")).graph.node) for name in folders}
    # Every weight matrix quantized (6 layers: query, key, value, output, 2 feed-forward); attention's own products stay.
    assert ops["w8"]["MatMulNBits"] == ops["onnx"]["MatMul"] - ops["w8"]["MatMul"] == 36
    assert w8.space == torch_embedder.space  # it queries an index embedded by torch or onnx


def test_questions_asked_together_from_many_threads_each_get_their_own_vector_or_error(torch_embedder, w8_cache):
    w8 = Embedder(torch_embedder.model_path, backend="onnx-w8", cache_dir=w8_cache)
    questions = [f"What did report number {i} say about the treaty?" for i in range(24)]
    alone = w8.encode_questions(questions)
    with ThreadPoolExecutor(12) as pool:  # more callers than the batcher takes at once: several batches
        together = list(pool.map(w8.encode_question, questions))
    assert all(np.allclose(v, a, atol=1e-5) for v, a in zip(together, alone))
    assert len({v.tobytes() for v in together}) == len(questions)
    w8.question_model.session = None  # every model call now fails: each waiting caller gets the error
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(w8.encode_question, q) for q in questions[:6]]
        assert all(isinstance(f.exception(timeout=60), AttributeError) for f in futures)


def test_a_worker_on_onnx_w8_loads_only_the_question_model(torch_embedder, w8_cache):
    w8 = Embedder(torch_embedder.model_path, backend="onnx-w8", cache_dir=w8_cache)
    w8.encode_question("When was the treaty signed?")
    assert w8._question_model is not None and w8._model is None


def test_an_index_is_queried_by_a_backend_of_its_vector_space_and_refused_by_another(seed_index, embedder):
    built_with = embedder.backend
    for other_fp32 in {"torch", "onnx", "onnx-w8"} - {built_with}:  # the same vectors
        load_index(Settings.from_env({"index_dir": seed_index.index_dir, "backend": other_fp32})).close()
    int8 = Settings.from_env({"index_dir": seed_index.index_dir, "backend": "onnx-int8"})
    with pytest.raises(IndexUnavailable, match=f"QA_BACKEND={built_with}.*QA_BACKEND=onnx-int8.*qa index --full"):
        load_index(int8)


def test_the_build_progress_bar_shows_chunks_per_second_and_the_time_left(tmp_path, embedder, capsys):
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "a.txt").write_text("The treaty was signed in May. " * 40 + "\n\nIt came into force in October.", encoding="utf-8")
    settings = Settings.from_env({"sources_dir": sources, "index_dir": tmp_path / "index"})
    report = IndexBuilder(settings, embedder=embedder, progress=True).run()
    err = capsys.readouterr().err
    assert f"embedding ({embedder.device})" in err and "chunk/s" in err and f"{report.chunks}/{report.chunks} [" in err


def _fp32_export_only(embedder, cache: Path) -> Path:
    """A cache holding only the fp32 export, as `qa index` leaves it; the fp32 folder."""
    Embedder(embedder.model_path, backend="onnx", cache_dir=embedder.cache_dir).encode(["exported"])  # made once per machine
    name = f"{model_fingerprint(embedder.model_path)}-onnx"
    shutil.copytree(Path(embedder.cache_dir) / "onnx" / name, cache / "onnx" / name)
    return cache / "onnx" / name


def test_a_worker_answers_without_importing_torch_or_the_document_readers(seed_index, embedder, tmp_path):
    """Cold start: what a request does not need is imported only when a build or an upload needs it; a
    worker after `qa index` makes its question model from the fp32 export without torch, and loads no other."""
    if embedder.backend == "torch":
        pytest.skip("QA_BACKEND=torch answers with torch")
    _fp32_export_only(embedder, tmp_path)
    script = (f"import sys; from qa.app import create_app; app = create_app({{'index_dir': {str(seed_index.index_dir)!r}}}); "
              "assert app.extensions['qa'].ask('When did Maduro enact the treaty law?', 1)['results']; "
              "embedder = app.extensions['qa'].embedder; "
              "print(sorted(m for m in ('torch', 'sentence_transformers', 'qa.sources', 'ftfy', 'trafilatura') if m in sys.modules), "
              "embedder._model is None or embedder.backend != 'onnx-w8')")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QA_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[] True"
    if embedder.backend == "onnx-w8":
        assert (tmp_path / "onnx" / f"{model_fingerprint(embedder.model_path)}-onnx-w8" / META_FILE).is_file()


def test_chroma_is_imported_when_a_store_opens_not_with_the_app(seed_index):
    """Cold start: a large version's store opens in the background while the worker answers; importing
    chromadb (1.6 s) happens there, not before the worker can load its index."""
    script = ("import sys; from dataclasses import replace; from pathlib import Path; import qa.app, qa.published, qa.service; "
              "before = 'chromadb' in sys.modules; from qa.config import Settings; from qa.indexing import load_index; "
              f"index = load_index(replace(Settings.from_env(), index_dir=Path({str(seed_index.index_dir)!r}))); "
              "index.opening.result(); print(before, 'chromadb' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False True"


def test_a_quantized_export_that_fails_or_falls_short_is_refused_and_leaves_nothing_behind(embedder, tmp_path, monkeypatch):
    import qa.onnx_encoder as onnx_encoder

    fp32 = _fp32_export_only(embedder, tmp_path)
    monkeypatch.setitem(onnx_encoder.MIN_COSINE, "w8", 1.01)  # no export reaches it
    with pytest.raises(ModelError, match=r"w8 export's vectors reach only cosine 0\.99\d+ .*QA_BACKEND=onnx"):
        Embedder(embedder.model_path, backend="onnx-w8", cache_dir=tmp_path).encode_questions(["When?"])
    monkeypatch.undo()

    def broken(path, weights):
        path.write_bytes(b"half a model")
        raise onnx_encoder.OnnxExportError("the quantizer stopped")

    monkeypatch.setattr(onnx_encoder, "_quantize", broken)
    with pytest.raises(ModelError, match="the quantizer stopped"):
        Embedder(embedder.model_path, backend="onnx-int8", cache_dir=tmp_path).encode(["When?"])
    assert sorted(p.name for p in fp32.parent.iterdir() if not p.name.endswith(".lock")) == [fp32.name]  # no partial folder


def test_a_damaged_export_is_named_in_the_error(embedder, tmp_path):
    fp32 = _fp32_export_only(embedder, tmp_path)
    (fp32 / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=f"{fp32}.*delete that folder to export it again"):
        Embedder(embedder.model_path, backend="onnx", cache_dir=tmp_path).encode(["When?"])
