import json
import subprocess

from tests.conftest import QA, SEEDS


def run(*args, env=None):
    return subprocess.run([QA, *args], capture_output=True, text=True, timeout=300, env=env)


def test_index_ask_sources_round_trip(tmp_path, sources_copy):
    index = tmp_path / "index"
    built = run("index", "--sources", str(sources_copy), "--index", str(index))
    assert built.returncode == 0, built.stderr
    assert "5 sources" in built.stdout and "added 5" in built.stdout
    again = run("index", "--sources", str(sources_copy), "--index", str(index))
    assert "up to date" in again.stdout

    asked = run("ask", "When did Maduro enact the treaty law?", "-k", "2", "--index", str(index))
    assert asked.returncode == 0 and "October 7" in asked.stdout and "[2]" in asked.stdout

    as_json = json.loads(run("ask", "When did Maduro enact the treaty law?", "--json", "--index", str(index)).stdout)
    assert as_json["answered"] and "October 7" in as_json["results"][0]["text"]

    listed = run("sources", "--index", str(index))
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 5


def test_cli_errors_are_clear(tmp_path):
    missing = run("ask", "hello", "--index", str(tmp_path / "none"))
    assert missing.returncode != 0 and "qa index" in missing.stderr and "Traceback" not in missing.stderr
    empty = run("ask", "   ", "--index", str(tmp_path / "none"))
    assert empty.returncode == 2 and "empty" in empty.stderr
    bad_k = run("ask", "hello", "-k", "0")
    assert bad_k.returncode == 2 and "Traceback" not in bad_k.stderr
    no_folder = run("index", "--sources", str(tmp_path / "nowhere"), "--index", str(tmp_path / "i"))
    assert no_folder.returncode == 1 and "does not exist" in no_folder.stderr and "Traceback" not in no_folder.stderr


def test_missing_model_is_a_clear_error(tmp_path, seed_index):
    import os

    env = {**os.environ, "QA_MODEL_PATH": str(tmp_path / "no-model")}
    asked = run("ask", "treaty", "--index", str(seed_index.index_dir), env=env)
    assert asked.returncode == 1 and "no-model" in asked.stderr and "Traceback" not in asked.stderr
    built = run("index", "--sources", str(SEEDS), "--index", str(tmp_path / "i"), env=env)
    assert built.returncode == 1 and "QA_MODEL_PATH" in built.stderr and "Traceback" not in built.stderr


def test_index_reports_bad_files_and_finishes(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "ok.txt").write_text((SEEDS / "001_fb017212c236a2a6.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "bin.dat").write_bytes(b"\x00\x01\x02" * 100)
    result = run("index", "--sources", str(folder), "--index", str(tmp_path / "i"))
    assert result.returncode == 0
    assert result.stderr.count("empty.txt") == 1 and result.stderr.count("bin.dat") == 1
    assert "1 sources" in result.stdout
