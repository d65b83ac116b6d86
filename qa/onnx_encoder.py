"""all-MiniLM-L6-v2 on ONNX Runtime: exported once from the bundled PyTorch weights, then run
without torch (tokenizers + onnxruntime), which is faster per question and starts faster.

sentence-transformers' own `backend="onnx"` needs optimum-onnx, whose releases require
transformers < 4.58 while sentence-transformers 6 requires transformers ≥ 5: they cannot be
installed together. So the export is done here with `torch.onnx.export` of the transformer with the
model's mean pooling and normalisation inside the graph. Two quantized variants of that export:
- `int8`: ONNX Runtime's dynamic quantization (int8 weights per channel, MatMul only): cosine
  0.97–0.995 to PyTorch's on the probes, the fastest;
- `w8`: 8-bit weights in blocks of 32 (ONNX Runtime's MatMulNBits, accuracy level 4): about a quarter of
  the fp32 weights' memory traffic, which is what a short question's encode waits for, at cosine
  ≥ 0.998 to PyTorch's (0.9990 on the one-letter probe, ≥ 0.9995 on the eval questions).

The export goes to `<cache>/<model fingerprint>-<variant>/` (written to a temporary folder, then
renamed; a file lock lets one process export while the others wait). `meta.json` beside the
model records the tokenizer's length limit and how close its vectors came to PyTorch's.

Usage:
    >>> encoder = OnnxEncoder.load(model_path, cache_dir / "onnx", weights="fp32")
    >>> encoder.encode(["When was the treaty signed?"]).shape
    (1, 384)
"""
from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from filelock import FileLock

Weights = Literal["fp32", "int8", "w8"]
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
# Export is checked on these: questions, a long passage cut by the length limit, odd text.
PROBES = (
    "When did Maduro enact the treaty law?",
    "How many agreements were signed in Moscow in May 2025?",
    "  Leading and trailing spaces, ünïcödé, 中文字符 and numbers 1,234.5  ",
    "The treaty covers energy, mining, defence and technology cooperation. " * 30,
    "x",
)


class OnnxExportError(Exception):
    """The model cannot be exported or run on ONNX Runtime; the message says why."""


def _export(model_path: str, folder: Path, weights: Weights) -> None:
    """Export the sentence-transformers model at `model_path` into `folder` (which must not exist)."""
    import torch
    from sentence_transformers import SentenceTransformer

    modules = json.loads((Path(model_path) / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    pooling = json.loads((Path(model_path) / modules[1]["path"] / "config.json").read_text()) if len(modules) > 1 else {}
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    if kinds[:2] != ["Transformer", "Pooling"] or modes != {"pooling_mode_mean_tokens"}:
        raise OnnxExportError(f"the ONNX backend exports transformer + mean pooling models only, not {kinds} {sorted(modes)}")
    normalize = "Normalize" in kinds
    # Eager attention traces to one graph for every batch shape (SDPA's traced branches may not).
    model = SentenceTransformer(model_path, device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"})

    class Pooled(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = model.tokenizer(list(PROBES[:2]), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on branches the eager graph does not take
        torch.onnx.export(Pooled(model[0].auto_model).eval(), tuple(sample[n] for n in names), str(tmp / MODEL_FILE),
                          input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    if weights != "fp32":
        _quantize(tmp / MODEL_FILE, weights)
    meta = {"max_seq_length": int(model.max_seq_length), "dimension": int(model.get_embedding_dimension()),
            "weights": weights, "torch": torch.__version__}
    (tmp / META_FILE).write_text(json.dumps(meta))
    reference = model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
    exported = OnnxEncoder.open(model_path, tmp).encode(list(PROBES))
    meta["min_cosine_vs_torch"] = round(float(np.min(np.sum(reference * exported, axis=1))), 5)
    (tmp / META_FILE).write_text(json.dumps(meta))
    tmp.rename(folder)


def _quantize(path: Path, weights: Weights) -> None:
    """Rewrite the fp32 model at `path` with `weights`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantized = path.with_name("quantized.onnx")
    logging.disable(logging.WARNING)  # the quantizers' progress, and advice to pre-process that applies to image models
    try:
        if weights == "int8":
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
        else:
            # Accuracy level 4 multiplies in int8: levels 0-1 (fp32 activations) took 20 ms a question here, not 4.
            quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(quantized), False)
    finally:
        logging.disable(logging.NOTSET)
    quantized.replace(path)


@dataclass
class OnnxEncoder:
    """Tokenizer and ONNX Runtime session; `encode` returns L2-normalised float32 vectors."""

    tokenizer: object
    session: object
    dimension: int
    meta: dict

    @classmethod
    def load(cls, model_path: str, folder: Path, weights: Weights = "fp32", threads: int = 0) -> "OnnxEncoder":
        """Open the export in `folder`, making it first if it is not there yet; `threads`: ONNX Runtime's
        intra-op threads (0: its default, one per core)."""
        if not (folder / META_FILE).is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder.with_name(f".{folder.name}.lock"))):
                if not (folder / META_FILE).is_file():
                    _export(model_path, folder, weights)
        return cls.open(model_path, folder, threads)

    @classmethod
    def open(cls, model_path: str, folder: Path, threads: int = 0) -> "OnnxEncoder":
        import onnxruntime
        from tokenizers import Tokenizer

        meta = json.loads((folder / META_FILE).read_text())
        tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        tokenizer.enable_truncation(meta["max_seq_length"])
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        # ONNX Runtime's threads otherwise spin between calls, taking the cores the server's other
        # requests need: measured on the seeds, 8 clients got 141 q/s instead of 104 from one worker,
        # for 0.7 ms more per question asked alone (README, Performance).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        return cls(tokenizer, session, meta["dimension"], meta)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Batches of similar length (less padding), as sentence-transformers does; the input order is kept."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            # sentence-transformers strips each text before tokenizing; so must this, or vectors differ.
            encoded = self.tokenizer.encode_batch([texts[r].strip() for r in rows])
            feed = {name: np.array([getattr(e, field) for e in encoded], dtype=np.int64)
                    for name, field in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids"))}
            out[rows] = self.session.run(None, feed)[0]
        return out
