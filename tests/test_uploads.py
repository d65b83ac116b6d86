"""POST /api/sources and DELETE /api/sources/<id> on a real app, model and index."""
import io
import json
import time

import pytest

from qa.app import create_app
from qa.config import Settings
from qa.indexing import IndexBuilder
from qa.service import QAService
from tests.collection import MARKDOWN, write_pdf

TOKEN = "upload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def app_and_folder(tmp_path, embedder):
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The ferry to Margarita leaves at seven every morning.", encoding="utf-8")
    write_pdf(folder / "scan.pdf", ["", ""])  # no text layer: reported by every build
    (folder / "wire.jsonl").write_text(json.dumps({"id": "w1", "text": "The central bank cut its rate."}) + "\n",
                                       encoding="utf-8")
    config = {"sources_dir": folder, "index_dir": tmp_path / "index", "admin_token": TOKEN, "max_source_bytes": 20_000}
    settings = Settings.from_env(config)
    IndexBuilder(settings, embedder=embedder).run()
    return create_app(config, service=QAService(settings, embedder=embedder)).test_client(), folder


def _upload(client, name, raw, headers=AUTH):
    return client.post("/api/sources", data={"file": (io.BytesIO(raw), name)}, headers=headers, content_type="multipart/form-data")


def _settled(client) -> dict:
    deadline = time.monotonic() + 120
    while (state := client.get("/api/index", headers=AUTH).get_json())["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    return state


def test_upload_then_delete_a_source(app_and_folder):
    client, folder = app_and_folder
    response = _upload(client, "cacao.md", MARKDOWN.encode())
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["id"] == "cacao.md" and response.get_json()["rebuild"]["state"] == "running"
    assert (folder / "cacao.md").is_file() and not list(folder.glob(".upload-*"))
    state = _settled(client)
    assert state["state"] == "succeeded" and state["added"] == ["cacao.md"]
    assert any(p.startswith("scan.pdf: no text layer") for p in state["problems"])
    source = client.get("/api/sources/cacao.md").get_json()
    assert source["author"] == "Luis Ortega" and "**" not in source["text"]
    answer = client.post("/api/ask", json={"question": "What premium did fermented cacao beans earn?"}).get_json()
    assert answer["results"][0]["source"]["id"] == "cacao.md"

    assert _upload(client, "cacao.md", MARKDOWN.encode()).get_json()["error"]["code"] == "source_exists"
    response = client.delete("/api/sources/cacao.md", headers=AUTH)
    assert response.status_code == 202 and not (folder / "cacao.md").exists()
    assert _settled(client)["removed"] == ["cacao.md"]
    assert client.get("/api/sources/cacao.md").status_code == 404


def test_a_pdf_upload_is_indexed_with_its_pages(app_and_folder, tmp_path):
    client, _ = app_and_folder
    write_pdf(tmp_path / "r.pdf", ["First page about cranes.", "The dredging cost 41 million dollars."], title="Port report")
    assert _upload(client, "port report.pdf", (tmp_path / "r.pdf").read_bytes()).status_code == 202
    assert _settled(client)["state"] == "succeeded"
    top = client.get("/api/ask?q=How much did the dredging cost?").get_json()["results"][0]
    assert top["source"]["id"] == "port report.pdf" and top["highlight"]["page"] == 2


@pytest.mark.parametrize("name, raw, status, code", [
    ("../escape.md", b"# x\n\ntext", 400, "invalid_file_name"),
    ("sub/dir.md", b"# x\n\ntext", 400, "invalid_file_name"),
    (".hidden.md", b"# x\n\ntext", 400, "invalid_file_name"),
    ("sources.toml", b"[a]", 415, "unsupported_format"),
    ("tool.exe", b"MZ\x00\x00", 415, "unsupported_format"),
    ("fake.pdf", b"not a pdf at all", 400, "unreadable_file"),
    ("scan.docx", b"PK\x03\x04 broken", 400, "unreadable_file"),
    ("blank.txt", b"   \n\n", 400, "unreadable_file"),
    ("huge.txt", b"word " * 5000, 413, "file_too_large"),
    ("ferry.txt", b"Another ferry.", 409, "source_exists"),
])
def test_bad_uploads_get_a_json_error_and_change_nothing(app_and_folder, name, raw, status, code):
    client, folder = app_and_folder
    before = sorted(p.name for p in folder.iterdir())
    response = _upload(client, name, raw)
    assert response.status_code == status and response.get_json()["error"]["code"] == code, response.get_json()
    assert sorted(p.name for p in folder.iterdir()) == before


def test_uploads_and_deletes_need_the_admin_token_and_one_file(app_and_folder):
    client, _ = app_and_folder
    assert _upload(client, "a.md", b"# a", headers={}).status_code == 401
    assert client.delete("/api/sources/ferry").status_code == 401
    two = client.post("/api/sources", headers=AUTH, content_type="multipart/form-data",
                      data={"file": [(io.BytesIO(b"a"), "a.txt"), (io.BytesIO(b"b"), "b.txt")]})
    assert two.status_code == 400 and two.get_json()["error"]["code"] == "invalid_upload"
    assert client.post("/api/sources", headers=AUTH, json={"file": "x"}).status_code == 400
    assert client.delete("/api/sources/nope", headers=AUTH).status_code == 404
    record = client.delete("/api/sources/w1", headers=AUTH)
    assert record.status_code == 409 and record.get_json()["error"]["code"] == "bulk_record"
