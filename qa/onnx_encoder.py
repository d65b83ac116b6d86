"""all-MiniLM-L6-v2 on ONNX Runtime: exported once from the bundled PyTorch weights, then run
without torch (tokenizers + onnxruntime), which is faster per question and starts faster.

sentence-transformers' own `backend="onnx"` needs optimum-onnx, whose releases require
transformers < 4.58 while sentence-transformers 6 requires transformers ≥ 5: they cannot be
installed together. So the `fp32` export is done here with `torch.onnx.export` of the transformer
with the model's mean pooling and normalisation inside the graph. Two variants are quantized from
that export (no torch needed, so a server worker can make one):
- `int8`: ONNX Runtime's dynamic quantization (int8 weights per channel, MatMul only): cosine
  0.97–0.995 to PyTorch's on the probes, the fastest;
- `w8`: 8-bit weights in blocks of 32 (ONNX Runtime's MatMulNBits, accuracy level 4): about a
  quarter of the fp32 weight matrices' bytes (computed), which is what a short question's encode
  waits for, at cosine ≥ 0.998 to PyTorch's (0.9990 on the one-letter probe, ≥ 0.9995 on the eval
  questions, on this machine).

Each export goes to its own folder (written to a temporary folder, then renamed; a file lock lets
one process export while the others wait). `meta.json` beside the model records the tokenizer's
length limit and how close its vectors came to PyTorch's (fp32) or to the fp32 export's; an
export below `MIN_COSINE` is refused.

Usage:
    >>> encoder = OnnxEncoder.load(model_path, cache / "w8", weights="w8", fp32_folder=cache / "fp32")
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
# Below these an export is refused. w8 measured 0.9990 here; int8 kernels differ between CPUs.
MIN_COSINE = {"fp32": 0.99, "w8": 0.99, "int8": 0.95}
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


def _export(model_path: str, folder: Path, weights: Weights, fp32_folder: Path) -> None:
    """Make the export in `folder` (which must not exist): fp32 from the PyTorch weights, a quantized
    variant from the fp32 export in `fp32_folder`. A failure leaves no partial folder behind."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if weights == "fp32":
            meta, reference = _export_fp32(model_path, tmp)
            against = "torch"
        else:
            shutil.copy(fp32_folder / MODEL_FILE, tmp / MODEL_FILE)
            _quantize(tmp / MODEL_FILE, weights)
            meta = {**json.loads((fp32_folder / META_FILE).read_text()), "weights": weights}
            reference = OnnxEncoder.open(model_path, fp32_folder).encode(list(PROBES))
            against = "fp32_export"
        (tmp / META_FILE).write_text(json.dumps(meta))
        cosine = round(float(np.min(np.sum(reference * OnnxEncoder.open(model_path, tmp).encode(list(PROBES)), axis=1))), 5)
        if cosine < MIN_COSINE[weights]:
            raise OnnxExportError(f"the {weights} export's vectors reach only cosine {cosine} to "
                                  f"{'PyTorch' if against == 'torch' else 'the fp32 export'}'s "
                                  f"(at least {MIN_COSINE[weights]} is needed) on this machine; set QA_BACKEND="
                                  f"{'torch' if weights == 'fp32' else 'onnx or torch'}")
        (tmp / META_FILE).write_text(json.dumps({**meta, f"min_cosine_vs_{against}": cosine}))
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _export_fp32(model_path: str, tmp: Path) -> tuple[dict, np.ndarray]:
    """The transformer and its pooling as one ONNX graph in `tmp`; its meta and PyTorch's vectors of the probes."""
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

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = model.tokenizer(list(PROBES[:2]), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on branches the eager graph does not take
        torch.onnx.export(Pooled(model[0].auto_model).eval(), tuple(sample[n] for n in names), str(tmp / MODEL_FILE),
                          input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    meta = {"max_seq_length": int(model.max_seq_length), "dimension": int(model.get_embedding_dimension()),
            "weights": "fp32", "torch": torch.__version__}
    return meta, model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)


def _quantize(path: Path, weights: Weights) -> None:
    """Rewrite the fp32 model at `path` with `weights`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name("quantized.onnx")
    logging.disable(logging.WARNING)  # the quantizers' progress, and advice to pre-process that applies to image models
    try:
        if weights == "int8":
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
        else:
            try:  # ONNX Runtime ≥ 1.22 with onnx-ir (pyproject.toml)
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
            except ImportError as err:
                raise OnnxExportError(f"the w8 export needs ONNX Runtime's MatMulNBits quantizer ({err}); set QA_BACKEND=onnx") from err
            # Accuracy level 4 multiplies in int8: levels 0-1 (fp32 activations) took 20 ms a question here, not 4.
            quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(quantized), False)
    except OnnxExportError:
        raise
    except Exception as err:  # the quantizers' own errors are of many kinds
        raise OnnxExportError(f"quantizing the ONNX export to {weights} failed ({type(err).__name__}: {err}); "
                              "set QA_BACKEND=onnx") from err
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
    def load(cls, model_path: str, folder: Path, weights: Weights = "fp32", threads: int = 0,
             fp32_folder: Path | None = None) -> "OnnxEncoder":
        """Open the export in `folder`, making it first if it is not there yet (a quantized one from
        the fp32 export in `fp32_folder`, made first if need be); `threads`: ONNX Runtime's intra-op
        threads (0: its default, one per core)."""
        if weights != "fp32":
            if fp32_folder is None:
                raise ValueError(f"a {weights} export is made from the fp32 one: pass fp32_folder")
            cls._ensure(model_path, fp32_folder, "fp32", fp32_folder)
        cls._ensure(model_path, folder, weights, fp32_folder or folder)
        return cls.open(model_path, folder, threads)

    @staticmethod
    def _ensure(model_path: str, folder: Path, weights: Weights, fp32_folder: Path) -> None:
        if not (folder / META_FILE).is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder.with_name(f".{folder.name}.lock"))):
                if not (folder / META_FILE).is_file():
                    _export(model_path, folder, weights, fp32_folder)

    @classmethod
    def open(cls, model_path: str, folder: Path, threads: int = 0) -> "OnnxEncoder":
        """The export in `folder`; one that cannot be read (a damaged file) raises OnnxExportError naming it."""
        import onnxruntime
        from tokenizers import Tokenizer

        try:
            meta = json.loads((folder / META_FILE).read_text())
            max_length, dimension = int(meta["max_seq_length"]), int(meta["dimension"])
            tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
            tokenizer.enable_truncation(max_length)
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
        except Exception as err:  # ONNX Runtime's own errors derive from Exception alone
            raise OnnxExportError(f"the ONNX export in {folder} cannot be opened ({type(err).__name__}: {err}); "
                                  "delete that folder to export it again") from err
        return cls(tokenizer, session, dimension, meta)

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
