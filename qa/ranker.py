"""Fitted linear models: how much each ranking signal counts, and when to abstain.

The weights are not chosen by hand: `qa fit` (see `qa/fitting.py`) fits them by logistic
regression on the development splits of several collections of different shapes and writes
them here as a small versioned JSON file, shipped with the package. Scoring is a dot product
over standardised features, so it costs microseconds per candidate.

Usage:
    >>> model = RankerModel.load()
    >>> logits = model.passage.score(features)          # one row per candidate sentence
    >>> confidence = model.abstention.probability(q_features)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

MODEL_FILE = Path(__file__).with_name("ranker.json")
MODEL_FORMAT = 1


class RankerError(Exception):
    """The ranking model file is missing or does not fit this program; the message names the fix."""


@dataclass(frozen=True)
class LinearModel:
    """Logistic regression over named, standardised features."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def score(self, x: np.ndarray, disabled: frozenset[str] = frozenset()) -> np.ndarray:
        """Logits for rows of `x` (columns in `features` order). A disabled feature is held at its
        mean, which removes its contribution without refitting (the ablations of `qa eval`)."""
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        w = np.asarray(self.weights)
        if disabled:
            w = np.where([f in disabled for f in self.features], 0.0, w)
        return z @ w + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.score(x)))


@dataclass(frozen=True)
class RankerModel:
    passage: LinearModel  # scores (passage, sentence) pairs: ranks passages and picks the highlight
    abstention: LinearModel  # probability that the top passage answers the question at all
    threshold: float  # abstain below this probability
    fitted_on: dict = field(default_factory=dict)  # collections, questions, and the figures of the fit

    def save(self, path: Path = MODEL_FILE) -> None:
        body = {"format": MODEL_FORMAT, **asdict(self)}
        path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")

    @staticmethod
    def load(path: Path = MODEL_FILE) -> "RankerModel":
        return _load(str(path))


@cache
def _load(path: str) -> RankerModel:
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RankerError(f"cannot read the ranking model {path} ({err}); run `qa fit` to make it") from err
    if body.get("format") != MODEL_FORMAT:
        raise RankerError(f"the ranking model {path} is in format {body.get('format')}, this program reads {MODEL_FORMAT}; run `qa fit`")

    def linear(raw: dict) -> LinearModel:
        return LinearModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    try:
        return RankerModel(linear(body["passage"]), linear(body["abstention"]), float(body["threshold"]), body.get("fitted_on", {}))
    except (KeyError, TypeError, ValueError) as err:
        raise RankerError(f"the ranking model {path} is incomplete ({type(err).__name__}: {err}); run `qa fit`") from err
