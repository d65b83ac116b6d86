"""Citation-first question answering: verbatim passages with checkable citations.

Data flows one way through the modules:
sources (readers/) → cleaning → chunking → embedding / lexical → store → indexing (versions) → signals → retrieval
(ranker, fitted by fitting) → citations → api / web / cli.
"""
import os

# No network at any time: the model is loaded from a bundled path and Chroma must not phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "Loading weights" bar on every start
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
