"""Which answer an elastic inference holds: the one place that defines the output rules.

- ``latest`` (the paper's default): the latest finished branch's answer.
- ``best``: the most confident finished branch's answer.
- ``ensemble`` (ours): the class with the highest weighted sum of the log-probabilities of
  every finished branch (per-exit weights fitted on held-out data), kept as a running
  per-class sum: O(classes) per finished branch.

Before the first branch finishes, an :class:`AnswerRule` may hold a *time-zero answer*: the
most frequent class of the held-out split, credited with its held-out share. Without it
that share of the exit-time mass is always wrong.

The simulator scores these rules on CS-profiles (vectorised, :func:`held_correctness`); the
runtime keeps them live (:class:`RunningAnswer`). A test checks the two agree. Numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EinetTypeError, EinetValueError
from .validation import MAX_CLASSES, number

if TYPE_CHECKING:
    from .formats.profiles import CSProfile

RULES = ("latest", "best", "ensemble")
_OLDER_NAMES = {"prior_class": "time_zero_class", "prior_accuracy": "time_zero_accuracy"}  # files before the rename
MAX_EXITS = 100_000  # far above any network's; bounds what a file can make einet allocate
MAX_WEIGHT = 1e6  # fitted weights start at 1 and stay near it; far larger ones overflow the float32 sums


@dataclass(frozen=True)
class AnswerRule:
    """An output rule with what it needs: ensemble weights and the optional time-zero answer."""

    name: str = "latest"
    weights: tuple[float, ...] | None = None  # rule ensemble: one weight per exit
    time_zero_class: int | None = None  # the time-zero answer: held before any branch has finished
    time_zero_accuracy: float = 0.0  # its held-out share: the planner's credit for it (`held`)

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise EinetValueError(f"unknown rule {self.name!r}: expected one of {', '.join(RULES)}")
        if (self.name == "ensemble") != (self.weights is not None):
            raise EinetValueError("rule 'ensemble' needs per-exit weights, and only it takes them")
        if self.weights is not None:
            object.__setattr__(self, "weights", _checked_weights(self.weights))
        if self.time_zero_class is not None:
            number("time_zero_class (the time-zero answer)", self.time_zero_class, 0, MAX_CLASSES - 1, integer=True)
            if not isinstance(self.time_zero_class, (int, np.integer)):
                raise EinetTypeError(f"time_zero_class must be an integer class index, got {self.time_zero_class!r}")
        number("time_zero_accuracy", self.time_zero_accuracy, 0.0, 1.0)

    @property
    def native(self) -> str:
        """The rule the native planner scores with. Under ``ensemble`` the scores it is given are
        already the ensemble's (s_i: the ensemble up to exit i is right), so it plans as ``latest``."""
        return "best" if self.name == "best" else "latest"

    @property
    def time_zero_score(self) -> float:
        """The planner's `held` score before any branch has finished."""
        return self.time_zero_accuracy if self.time_zero_class is not None else 0.0

    def record(self) -> dict[str, Any]:
        """The rule as files store it (predictor headers, deployments): read back by :meth:`from_record`."""
        return {"name": self.name, "weights": None if self.weights is None else [float(w) for w in self.weights],
                "time_zero_class": None if self.time_zero_class is None else int(self.time_zero_class),
                "time_zero_accuracy": float(self.time_zero_accuracy)}

    @classmethod
    def from_record(cls, record: object, num_exits: int | None = None) -> AnswerRule:
        """A rule read from a file, every field checked (TypeError / ValueError naming it); with
        `num_exits`, ensemble weights must match it. Files written before the time-zero answer had
        one name call its fields ``prior_class`` / ``prior_accuracy``: still read."""
        if not isinstance(record, dict):
            raise EinetTypeError(f"the rule must be an object, got {record!r:.80}")
        renamed = {_OLDER_NAMES.get(key, key): value for key, value in record.items()}
        fields = {"name", "weights", "time_zero_class", "time_zero_accuracy"}
        unknown = sorted(str(key) for key in set(renamed) - fields)
        if unknown or len(renamed) < len(record):  # (both spellings of a field: ambiguous)
            raise EinetTypeError(f"the rule must have the fields name, weights, time_zero_class, time_zero_accuracy "
                                 f"(each spelt once), got {sorted(map(str, record))!r:.200}")
        record = renamed
        name, weights, answer = record.get("name"), record.get("weights"), record.get("time_zero_class")
        if not isinstance(name, str):
            raise EinetTypeError(f"the rule's name must be a string, got {name!r:.80}")
        if weights is not None:
            if not isinstance(weights, list):
                raise EinetTypeError(f"ensemble weights must be a list of numbers, got {weights!r:.80}")
            if num_exits is not None and len(weights) != num_exits:
                raise EinetValueError(f"ensemble weights must be a list of {num_exits} numbers, got {len(weights)}")
            weights = tuple(weights)
        if answer is not None and type(answer) is not int:
            raise EinetTypeError(f"time_zero_class must be an integer class index, got {answer!r:.80}")
        return cls(name, weights, answer, record.get("time_zero_accuracy", 0.0))

    def label(self) -> str:
        return self.name + (" + time-zero answer" if self.time_zero_class is not None else "")


def _checked_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Ensemble weights as floats: 1 to MAX_EXITS of them, each finite in [0, MAX_WEIGHT], not all zero
    (all zero leaves no vote, and the simulator and the runtime would then break the tie differently)."""
    if not 1 <= len(weights) <= MAX_EXITS:
        raise EinetValueError(f"rule 'ensemble' needs 1 to {MAX_EXITS} weights, got {len(weights)}")
    checked = tuple(float(number("an ensemble weight", w, 0.0)) for w in weights)
    if max(checked) > MAX_WEIGHT:
        raise EinetValueError(f"an ensemble weight must be at most {MAX_WEIGHT:g} (fitted ones stay near 1), "
                              f"got {max(checked)!r}")
    if not any(checked):
        raise EinetValueError(f"ensemble weights must not all be zero, got {list(weights)!r:.80}")
    return checked


def as_rule(rule: str | AnswerRule) -> AnswerRule:
    """Accept a rule name wherever an AnswerRule is expected (``latest``/``best`` need nothing else)."""
    return rule if isinstance(rule, AnswerRule) else AnswerRule(rule)


def time_zero_answer(labels: np.ndarray) -> tuple[int, float]:
    """The most frequent class of held-out labels and its share: the best answer knowing nothing."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    best = int(counts.argmax())
    return best, float(counts[best] / counts.sum())


def held_correctness(exits: np.ndarray, cs: CSProfile, rule: str | AnswerRule) -> np.ndarray:
    """[S, N + 1]: whether the answer held after the q-th finished branch is right; column 0 is
    the time-zero answer (wrong when there is none).

    `exits` [S, N]: each sample's finished exits in order, -1 after the last; `cs`: the samples'
    CS-profile (rule ensemble needs its log-probabilities)."""
    rule = as_rule(rule)
    labels, correct, confidence = cs.labels, cs.correct, cs.confidence
    s_count, n = exits.shape
    finished = exits >= 0
    index = np.where(finished, exits, 0)
    held = np.zeros((s_count, n + 1), dtype=bool)
    if rule.time_zero_class is not None:
        held[:, 0] = labels == rule.time_zero_class
    if rule.name == "latest":
        held[:, 1:] = np.take_along_axis(correct, index, 1) & finished
    elif rule.name == "best":
        conf = np.where(finished, np.take_along_axis(confidence, index, 1), -1.0)
        best_so_far = np.maximum.accumulate(conf, axis=1)
        argbest = np.zeros((s_count, n), dtype=np.int64)
        for q in range(1, n):  # the position of the running maximum (the first one on ties)
            argbest[:, q] = np.where(conf[:, q] > best_so_far[:, q - 1], q, argbest[:, q - 1])
        held[:, 1:] = np.take_along_axis(np.take_along_axis(correct, index, 1) & finished, argbest, 1)
    else:
        log_probs = cs.dense_log_probs()
        weights = np.asarray(rule.weights, dtype=np.float32)
        terms = np.take_along_axis(log_probs, index[:, :, None], 1) * (weights[index] * finished)[:, :, None]
        held[:, 1:] = (np.cumsum(terms, axis=1).argmax(2) == labels[:, None]) & finished
    return held


def ensemble_prefix_correct(log_probs: np.ndarray, labels: np.ndarray, weights: Sequence[float],
                            observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every exit i: is the ensemble of the observed exits before i plus exit i right, and how
    confident is it (max softmax)? [S, N] each. With `observed` the exits run so far, this is what
    rule ``ensemble`` would hold if exit i ran next: the score the planner needs for exit i."""
    w = np.asarray(weights, dtype=np.float32)[None, :, None]
    terms = log_probs * w
    before = np.cumsum(terms * observed[:, :, None], axis=1) - terms * observed[:, :, None]
    combined = before + terms
    top = combined.max(2, keepdims=True)
    confidence = 1.0 / np.exp(combined - top).sum(2)
    return combined.argmax(2) == labels[:, None], confidence


class RunningAnswer:
    """The answer a live inference holds under a rule, updated as each branch finishes."""

    def __init__(self, rule: AnswerRule, num_classes: int | None = None) -> None:
        self.rule = rule
        self.weights = None if rule.weights is None else np.asarray(rule.weights, dtype=np.float64)
        self._total = np.zeros(num_classes or 0)
        self.reset()

    def reset(self) -> None:
        """A new sample: only the time-zero answer (if any) is held."""
        self.prediction: int | None = self.rule.time_zero_class
        self.exit: int | None = None
        self.confidence = 0.0
        self._started = False

    def add(self, exit_index: int, log_probs: np.ndarray) -> float:
        """A branch finished with these log-probabilities: update the held answer (``prediction``,
        ``exit``, ``confidence``) and return the confidence the policy observes: the ensemble's
        under rule ``ensemble`` (its predictor is trained on that), else this exit's own."""
        # (in double, as the native loop computes it: the two engines hold the same answer on every tie)
        if self.weights is None:
            prediction = int(log_probs.argmax())
            confidence = math.exp(float(log_probs[prediction]))
            if self.rule.name == "latest" or not self._started or confidence > self.confidence:
                self.prediction, self.exit, self.confidence = prediction, exit_index, confidence
            self._started = True
            return confidence
        log_probs = log_probs.astype(np.float64, copy=False)
        if self._total.shape != log_probs.shape:
            self._total = np.zeros(log_probs.shape)
        if self._started:
            self._total += self.weights[exit_index] * log_probs
        else:
            np.multiply(log_probs, self.weights[exit_index], out=self._total)
        prediction = int(self._total.argmax())
        self.prediction, self.exit = prediction, exit_index
        self.confidence = float(1.0 / np.exp(self._total - self._total[prediction]).sum())
        self._started = True
        return self.confidence
