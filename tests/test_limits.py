"""Cheap ways to make the service fail or work hard are refused early with a clear message:
`k` parsed strictly, settings checked at start, a failed drop of a Chroma collection reported and retried."""
import os
import subprocess

import chromadb
import pytest

from qa.config import Settings, SettingsError
from qa.store import collection_name
from tests.conftest import QA
from tests.test_lifecycle import _edit


@pytest.mark.parametrize("k", ["²", "٣", "1" * 5000, "+5", " 5", "5.0", "0x5", "-1", "51", "0"])
def test_k_in_the_query_string_is_ascii_digits_from_1_to_50(client, k):
    response = client.get("/api/ask", query_string={"q": "treaty", "k": k})
    assert response.status_code == 400, response.get_data(as_text=True)[:200]
    assert response.get_json()["error"]["code"] in ("invalid_type", "k_out_of_range")


@pytest.mark.parametrize("k", ["003", "0" * 5000 + "3"])
def test_k_with_leading_zeros_is_a_number(client, k):
    assert len(client.get("/api/ask", query_string={"q": "treaty", "k": k}).get_json()["results"]) == 3


@pytest.mark.parametrize("env, named", [
    ({"QA_CHUNK_TOKENS": "0"}, "QA_CHUNK_TOKENS"),
    ({"QA_CHUNK_TOKENS": "8"}, "QA_CHUNK_TOKENS"),
    ({"QA_CHUNK_TOKENS": "many"}, "QA_CHUNK_TOKENS"),
    ({"QA_OVERLAP_SENTENCES": "-1"}, "QA_OVERLAP_SENTENCES"),
    ({"QA_PORT": "70000"}, "QA_PORT"),
    ({"QA_PORT": "0"}, "QA_PORT"),
    ({"QA_CHROMA_URL": "localhost:8000"}, "QA_CHROMA_URL"),
    ({"QA_ENCODER_THREADS": "-1"}, "QA_ENCODER_THREADS"),
    ({"QA_ENCODER_THREADS": "all"}, "QA_ENCODER_THREADS"),
])
def test_settings_are_checked_with_a_message_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env=env)


def test_commands_refuse_bad_settings_at_start(tmp_path, sources_copy):
    env = {**os.environ, "QA_CHUNK_TOKENS": "0"}  # used to loop forever in the chunker
    done = subprocess.run([QA, "index", "--sources", str(sources_copy), "--index", str(tmp_path / "index")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "QA_CHUNK_TOKENS" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([QA, "serve", "--index", str(tmp_path / "index")], env={**os.environ, "QA_PORT": "99999"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "QA_PORT" in done.stderr and "Traceback" not in done.stderr


def test_a_failed_delete_of_old_vector_records_is_reported_and_retried_by_the_next_build(chroma_server, sources_copy, tmp_path, embedder, monkeypatch):
    from chromadb.api.models.Collection import Collection

    from qa.indexing import IndexBuilder

    settings = Settings.from_env({"sources_dir": sources_copy, "index_dir": tmp_path / "index", "chroma_url": chroma_server.url})
    first = IndexBuilder(settings, embedder=embedder).run()
    _edit(sources_copy)
    real_delete = Collection.delete

    def failing_delete(self, *args, **kwargs):
        raise RuntimeError("injected: the server refused")

    monkeypatch.setattr(Collection, "delete", failing_delete)
    second = IndexBuilder(settings, embedder=embedder).run()
    assert any(first.version in w and "next build" in w and "injected" in w for w in second.warnings), second.warnings
    collection = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port).get_collection(collection_name(settings))
    assert collection.count() == first.chunks + second.embedded_chunks  # the edited source's old records too
    assert (settings.index_dir / "trash" / first.version).is_dir()  # its manifest still names them

    monkeypatch.setattr(Collection, "delete", real_delete)
    (sources_copy / "new_source.txt").write_text("The Orinoco bridge opened to traffic in 2031.", encoding="utf-8")
    third = IndexBuilder(settings, embedder=embedder).run()
    assert not third.warnings
    assert collection.count() == third.chunks
    assert not (settings.index_dir / "trash").exists() or not any((settings.index_dir / "trash").iterdir())
