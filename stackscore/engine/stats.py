"""Counters for one scoring run, and the summary printed at the end."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

_LOCATION = re.compile(r"^(line|row) \d+: ")


@dataclass
class ScoreStats:
    rows: int = 0
    scored: int = 0
    errors: Counter = field(default_factory=Counter)
    real_tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    labelled: int = 0
    correct: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    backends: str = ""  # which backend/precision served each model
    resumed_from: int = 0  # input rows an earlier, interrupted run had committed
    stage_rows: list[int] = field(default_factory=list)  # cascade: rows answered by each stage
    first_row_at: float | None = None  # wall clock (epoch s) when the first window's rows were committed
    # Where a run's time goes, for `stackscore bench`'s account of a whole process: when the
    # scorer began loading (epoch s) and how long it took (None: the caller built it), each
    # model's seconds on the scoring thread (its batches, and tokenizing where the scoring
    # thread does it: a cascade's later stages), and when the run finished (epoch s).
    load_started_at: float | None = None
    load_seconds: float | None = None
    model_seconds: Counter = field(default_factory=Counter)  # model -> seconds (``update`` adds)
    finished_at: float | None = None

    def add_stages(self, stage: np.ndarray) -> None:
        counts = np.bincount(np.asarray(stage, dtype=np.int64), minlength=len(self.stage_rows) + 1)[1:]
        if len(counts) > len(self.stage_rows):
            self.stage_rows += [0] * (len(counts) - len(self.stage_rows))
        for i, c in enumerate(counts):
            self.stage_rows[i] += int(c)

    def add_errors(self, errors: list[str | None]) -> None:
        for e in errors:
            if e is not None:
                self.errors[_LOCATION.sub("", e)] += 1

    def finish(self) -> "ScoreStats":
        self.seconds = time.perf_counter() - self.started
        self.finished_at = time.time()
        return self

    @property
    def errored(self) -> int:
        return sum(self.errors.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds if self.seconds else 0.0

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / computed tokens (1.0 = no padding)."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def to_dict(self) -> dict:
        lat = np.asarray(self.batch_seconds) if self.batch_seconds else np.zeros(1)
        return {
            "rows": self.rows,
            "scored": self.scored,
            "errored": self.errored,
            "errors_by_reason": dict(self.errors),
            "truncated": self.truncated,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "padding_efficiency": round(self.padding_efficiency, 4),
            "batches": len(self.batch_seconds),
            "batch_latency_ms": {f"p{q}": round(v * 1e3, 2) for q, v in zip((50, 95, 99), _percentiles(lat, (50, 95, 99)))},
            "resumed_from": self.resumed_from,
            "first_row_at": self.first_row_at,
            "load_started_at": self.load_started_at,
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 4),
            "model_seconds": {m: round(v, 4) for m, v in self.model_seconds.items()},
            "finished_at": self.finished_at,
            "backends": self.backends,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 4),
            "labelled_rows": self.labelled,
            **({"cascade_stage_rows": list(self.stage_rows)} if self.stage_rows else {}),
        }

    def summary(self) -> str:
        d = self.to_dict()
        lines = [
            f"rows {d['rows']:,}  scored {d['scored']:,}  errored {d['errored']:,}  truncated {d['truncated']:,}",
            f"{d['rows_per_s']:,.1f} rows/s  {d['tokens_per_s']:,.0f} tokens/s  in {d['seconds']:.1f} s",
            f"padding efficiency {d['padding_efficiency']:.1%} (real / computed tokens)",
        ]
        if self.resumed_from:
            lines.insert(0, f"resumed after {self.resumed_from:,} rows committed by an earlier run (counts below are this run's)")
        if self.stage_rows:
            total = max(sum(self.stage_rows), 1)
            lines.append("cascade: " + ", ".join(f"stage {i + 1} answered {c / total:.1%}" for i, c in enumerate(self.stage_rows)))
        if self.model_seconds:
            spent = ", ".join(f"{m} {v:.2f} s" for m, v in sorted(self.model_seconds.items(), key=lambda kv: -kv[1]))
            lines.append(f"time by model: {spent}" + (f"; loading {self.load_seconds:.2f} s" if self.load_seconds is not None else ""))
        if d["accuracy"] is not None:
            lines.append(f"accuracy {d['accuracy']:.4f} on {d['labelled_rows']:,} labelled rows")
        for reason, count in self.errors.most_common(10):
            lines.append(f"  error x{count}: {reason}")
        return "\n".join(lines)


def _percentiles(values: np.ndarray, qs: tuple[int, ...]) -> list[float]:
    """``np.percentile``'s default (linear) percentiles, without its ``np.unique``, whose first
    call imports ``numpy.ma`` (8 ms of a small job's exit)."""
    ordered = np.sort(values)
    return [float(np.interp(q / 100 * (len(ordered) - 1), np.arange(len(ordered)), ordered)) for q in qs]
