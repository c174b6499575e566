"""Adaptive ensembles: a cascade that runs the cheap base models first and the rest only where needed.

Base models are ordered cheapest first (measured seconds per row). Stage ``i`` has run
``order[:i+1]`` and fuses just those with a *partial fusion* fitted on their out-of-fold logits; a
row stops there when that fusion's confidence (max probability) reaches ``threshold_i``. The last
stage is the full ensemble (the artifact's own, already chosen fusion) and takes every row left.
A row that stops early never pays for the models after its stage; one that goes on pays for all
models up to where it stops (earlier logits are reused, not recomputed).

Thresholds are learned on the fusion (out-of-fold) rows only, never on the test split's labels
(fit then holds them to their planned stop shares on the final models' confidences there:
``hold_stop_shares``). A stacker
is optimistic on the rows it was fitted on, so the search reads *cross-validated* probabilities of
every partial fusion and of the full one (``cross_val_proba``, same folds for all); the partial
fusions are then refitted on all fusion rows, like ``AutoFusion`` does with its winner.

Single-label only. Numpy at import time: the engine rebuilds a cascade from the manifest (partial
stacks run their skl2onnx graph through ``OnnxMeta``, no pickle) without scikit-learn.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ArtifactError
from ..manifest import FusionSpec
from ..metrics import EPS, accuracy, log_loss
from ..tasks import task_of
from .auto import cross_val_proba
from .base import FusionMethod
from .stack import META_GRAPH, OnnxMeta

#: A threshold no probability reaches: that stage never stops a row (kept, so stage ``i`` is
#: always ``order[:i+1]``). Finite, so the manifest stays strict JSON.
NEVER = 2.0
CASCADE_GRAPH = "fusion/cascade_{i}.onnx"
#: How far a threshold placed between two held-out rows' confidences stays from each (float32
#: graphs vs the training side's float64 differ by ~1e-6 in a probability).
HELD_GAP = 1e-5
MANIFEST_VERSION = 1
#: Learned numbers about the fusion rows (cross-validated), kept in the manifest for the report.
_STATS = ("n_rows_", "stop_share_", "expected_cost_", "full_cost_", "agreement_", "accuracy_", "full_accuracy_", "log_loss_", "full_log_loss_")


@dataclass
class CascadeStage:
    """One stage: the models run so far (cost order), the fusion over them, its stop threshold.

    ``inputs`` is the order the fusion takes its outputs in: ``models`` for a partial fusion, the
    artifact's model order for the last stage (the full fusion was fitted in that order)."""

    models: list[str]
    fusion: FusionMethod
    threshold: float | None  # None: the last stage, which takes every row still open
    inputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inputs = list(self.inputs or self.models)


class _Rows:
    """Per stage and per fusion row, what stopping that row there would change vs the full
    ensemble (all cross-validated): disagreement, correctness and log-loss differences (with
    squares, for the optional margin). Sums of these over the stopped rows are all the search needs."""

    def __init__(self, cv: list[np.ndarray], y: np.ndarray):
        full = cv[-1]
        full_pred = full.argmax(1)
        full_ok = (full_pred == y).astype(np.float64)
        full_ll = -np.log(np.clip(full[np.arange(len(y)), y], EPS, 1.0))
        self.conf, self.q = [], []
        for p in cv[:-1]:
            pred = p.argmax(1)
            dc = (pred == y) - full_ok
            dl = -np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)) - full_ll
            self.conf.append(p.max(1))
            self.q.append(np.stack([(pred != full_pred).astype(np.float64), dc, dc * dc, dl, dl * dl]))


class Cascade:
    """Learn and run a cascade of partial fusions ending with the full ensemble.

    Parameters (constraints checked on the fusion rows, cross-validated, against the full ensemble):

    - ``target_agreement``: share of rows whose cascade label equals the full ensemble's;
    - ``max_accuracy_drop``: accuracy may be at most this much lower (0.003 = 0.3 points);
    - ``max_log_loss_increase``: log-loss may be at most this much higher (absolute);
    - ``folds``, ``seed``: the cross-validation of every fusion (same folds for all stages);
    - ``min_stop_share``: a stage that would stop fewer rows than this share never stops any
      (threshold ``NEVER``): it would save ~nothing and its threshold would rest on a handful of rows;
    - ``z``: safety margin, in standard errors of each constraint's mean over the fusion rows
      (normal approximation, paired per-row differences). The most permissive thresholds spend
      each budget to the last row, so with ``z=0`` (the plain rule) new rows land on either side of
      the target about half the time; the default 1.64 aims at a one-sided 95% guarantee, for a
      slightly smaller early-stop share (and fewer stops when the fusion rows are few).
    - ``grid``: candidate thresholds (quantiles of confidence) per stage before the last partial
      one, whose threshold is searched exactly. Only used with 3+ models.
    """

    def __init__(
        self,
        target_agreement: float = 0.995,
        max_accuracy_drop: float = 0.003,
        max_log_loss_increase: float = 0.01,
        folds: int = 5,
        seed: int = 0,
        min_stop_share: float = 0.01,
        z: float = 1.64,
        grid: int = 64,
    ):
        self.target_agreement = target_agreement
        self.max_accuracy_drop = max_accuracy_drop
        self.max_log_loss_increase = max_log_loss_increase
        self.folds = folds
        self.seed = seed
        self.min_stop_share = min_stop_share
        self.z = z
        self.grid = grid

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("target_agreement", "max_accuracy_drop", "max_log_loss_increase", "folds", "seed", "min_stop_share", "z", "grid")}

    # -- fit ------------------------------------------------------------------------------------
    def fit(
        self,
        outputs: dict[str, np.ndarray],
        y: np.ndarray,
        order: Sequence[str] | None,
        costs: dict[str, float],
        make_partial: Callable[[list[str]], FusionMethod],
        full: FusionMethod,
        model_order: Sequence[str] | None = None,
        make_full: Callable[[], FusionMethod] | None = None,
        task: str = "single_label",
    ) -> "Cascade":
        """Learn the thresholds and refit the partial fusions on all fusion rows.

        ``outputs``: out-of-fold logits ``(n, k)`` by model name; ``order``: cheapest first (None:
        sorted by ``costs``); ``costs``: seconds per row per model; ``make_partial(prefix)``: an
        unfitted fusion over those models, in that order; ``full``: the chosen fusion, fitted on
        ``model_order`` (default: ``outputs``' key order, i.e. the artifact's model order);
        ``make_full``: an unfitted copy of it for the cross-validation (default: a deep copy of
        ``full``, refitted per fold).
        """
        if task_of(task) != "single_label":
            raise ValueError(f"cascade: only single-label ensembles can stop early, this one is {task}")
        names = list(model_order if model_order is not None else outputs)
        if len(names) < 2:
            raise ValueError(f"cascade: needs at least 2 base models, got {len(names)}")
        missing = [n for n in names if n not in outputs or n not in costs]
        if missing:
            raise ValueError(f"cascade: no outputs or no cost for model(s) {missing}")
        order = list(order) if order is not None else sorted(names, key=lambda n: (costs[n], names.index(n)))
        if sorted(order) != sorted(names) or len(set(order)) != len(order):
            raise ValueError(f"cascade: order {order} must name each base model {names} once")
        bad = [n for n in names if not (math.isfinite(costs[n]) and costs[n] >= 0)]
        if bad:
            raise ValueError(f"cascade: cost per row must be a finite number >= 0, not for {bad}")
        outs = {n: np.asarray(outputs[n], dtype=np.float64) for n in names}
        y = np.asarray(y)
        n, k = outs[names[0]].shape if outs[names[0]].ndim == 2 else (0, 0)
        if y.ndim != 1 or k < 2 or not np.issubdtype(y.dtype, np.integer) or any(o.shape != (n, k) for o in outs.values()):
            raise ValueError("cascade: only single-label ensembles can stop early (labels must be class ids, outputs (n, k>=2) logits of one shape)")
        if len(y) != n or (n and (y.min() < 0 or y.max() >= k)):
            raise ValueError(f"cascade: {len(y)} labels in 0..{k - 1} needed for {n} rows of outputs")
        counts = np.bincount(y, minlength=k)
        if n < 2 * self.folds or (counts > 0).sum() < 2 or counts[counts > 0].min() < 2:
            raise ValueError(f"cascade: thresholds are not learnable from {n} fusion rows (class counts {counts.tolist()}, {self.folds} folds)")

        self.order_, self.model_order_ = order, names
        self.costs_ = {m: float(costs[m]) for m in order}
        self.stage_costs_ = np.cumsum([self.costs_[m] for m in order]).tolist()  # per row stopping at stage i
        self.full_cost_ = self.stage_costs_[-1]
        prefixes = [order[: i + 1] for i in range(len(order) - 1)]
        try:  # every fusion cross-validated on the same folds: row r's numbers all come from models that never saw r
            cv = [cross_val_proba(lambda p=p: make_partial(p), [outs[m] for m in p], y, self.folds, self.seed) for p in prefixes]
            cv.append(cross_val_proba(make_full or (lambda: copy.deepcopy(full)), [outs[m] for m in names], y, self.folds, self.seed))
        except ValueError as exc:
            raise ValueError(f"cascade: thresholds are not learnable from these fusion rows: {exc}") from None

        thresholds = self._search(_Rows(cv, y))
        self.stages_ = [CascadeStage(p, make_partial(p).fit([outs[m] for m in p], y), t) for p, t in zip(prefixes, thresholds)]
        self.stages_.append(CascadeStage(list(order), full, None, names))

        # What the search saw, for the report: the cascade on the fusion rows, cross-validated.
        proba, stage_of = _simulate(cv, thresholds)
        self.n_rows_ = n
        self.stop_share_ = (np.bincount(stage_of, minlength=len(order)) / n).tolist()
        self.expected_cost_ = float(np.dot(self.stop_share_, self.stage_costs_))
        self.agreement_ = float(np.mean(proba.argmax(1) == cv[-1].argmax(1)))
        self.accuracy_, self.full_accuracy_ = accuracy(y, proba), accuracy(y, cv[-1])
        self.log_loss_, self.full_log_loss_ = log_loss(y, proba), log_loss(y, cv[-1])
        return self

    def hold_stop_shares(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Raise thresholds so that, on held-out rows scored by the *final* models, no stage stops
        a larger share of rows than the search planned on the fusion rows (``stop_share_``).

        Out-of-fold thresholds are learned on fold models, each trained on (k-1)/k of the rows;
        the engine applies them to the final models, trained on all rows and more confident: a
        fixed threshold then stops more rows than planned, and the cascade agreed 1-1.5 % less
        with the full ensemble on new rows than its 0.995 target (3 TF-IDF models, 3 folds). A
        threshold is a confidence rank in disguise: keeping each stage's share of the rows keeps
        the rank the search chose. Label-free (only the partial fusions' confidences), stage by
        stage on the rows still open, and only ever raised (fewer early stops, never more); the
        planned share less ``z`` standard errors of a share measured on these rows.
        Returns one entry per partial stage: the threshold before and after, and the share of
        ``outputs``' rows it stops."""
        first = np.asarray(outputs[self.order_[0]])
        n = len(first)
        changes: list[dict[str, Any]] = []
        open_idx = np.arange(n)
        for i, st in enumerate(self.stages_[:-1]):
            before = float(st.threshold)
            conf = st.fusion.predict_proba([np.asarray(outputs[m])[open_idx] for m in st.inputs]).max(axis=1) if len(open_idx) else np.zeros(0)
            share = self.stop_share_[i]  # less the sampling error of a share of n rows, as the search's own margin
            allowed = int(math.floor(max(share - self.z * math.sqrt(share * (1 - share) / max(n, 1)), 0.0) * n + 1e-9))
            if int((conf >= st.threshold).sum()) > allowed:
                # stop the j most confident rows, the largest j <= allowed whose threshold sits
                # HELD_GAP clear of both neighbours: the export's engine check replays these rows
                # in float32, and a row on the threshold would stop a stage apart
                c = np.sort(conf)[::-1]
                j = np.flatnonzero(c[:allowed] - c[1 : allowed + 1] > 2 * HELD_GAP)
                st.threshold = float((c[j[-1]] + c[j[-1] + 1]) / 2) if len(j) else NEVER
            stops = conf >= st.threshold
            changes.append({"models": list(st.models), "threshold_fold_models": before, "threshold": float(st.threshold),
                            "planned_stop_share": float(self.stop_share_[i]), "held_out_stop_share": float(stops.sum() / max(n, 1))})
            open_idx = open_idx[~stops]
        return changes

    def _feasible(self, s: np.ndarray, n: int) -> np.ndarray:
        """Which candidate stop sets meet all three constraints; ``s``: (5, c) sums over stopped rows."""
        agree = 1.0 - s[0] / n
        dc, dl = s[1] / n, s[3] / n
        se_a = se_c = se_l = 0.0
        if self.z:
            se_a = np.sqrt(agree * (1 - agree) / n)
            se_c = np.sqrt(np.maximum(s[2] / n - dc * dc, 0) / n)
            se_l = np.sqrt(np.maximum(s[4] / n - dl * dl, 0) / n)
        tol = 1e-12  # sums of floats: a constraint met exactly must not fail on rounding
        return (
            (agree - self.z * se_a >= self.target_agreement - tol)
            & (dc - self.z * se_c >= -self.max_accuracy_drop - tol)
            & (dl + self.z * se_l <= self.max_log_loss_increase + tol)
        )

    def _solve_last(self, rows: _Rows, fixed: list[float]) -> tuple[tuple[float, float], list[float]] | None:
        """Thresholds ``fixed`` for the stages before the last partial one; that one's best
        threshold, found exactly: its stop set is a top-k of the open rows by confidence, so
        prefix sums score every k at once. Returns ((expected cost, disagreement), thresholds), or
        None when no k meets the constraints (or an earlier stage stops too few rows)."""
        n = len(rows.conf[0])
        c = self.stage_costs_
        min_rows = math.ceil(self.min_stop_share * n)
        open_ = np.ones(n, dtype=bool)
        base, base_cost = np.zeros(5), 0.0
        for i, t in enumerate(fixed):
            stop = open_ & (rows.conf[i] >= t)
            cnt = int(stop.sum())
            if 0 < cnt < min_rows:
                return None
            base += rows.q[i][:, stop].sum(axis=1)
            base_cost += cnt * c[i]
            open_ &= ~stop
        j = len(fixed)
        idx = np.flatnonzero(open_)
        idx = idx[np.argsort(-rows.conf[j][idx], kind="stable")]
        conf = rows.conf[j][idx]
        sums = base[:, None] + np.concatenate([np.zeros((5, 1)), np.cumsum(rows.q[j][:, idx], axis=1)], axis=1)
        ks = np.arange(len(idx) + 1)
        pad = np.concatenate([[np.inf], conf, [-np.inf]])  # pad[k], pad[k+1]: last stopped, first kept
        ok = ((ks == 0) | ((ks >= min_rows) & (pad[ks] > pad[ks + 1]))) & self._feasible(sums, n)  # no split inside a tie
        if not ok.any():
            return None
        cost = (base_cost + ks * c[j] + (len(idx) - ks) * c[-1]) / n
        best = ks[ok][np.lexsort((sums[0][ok], cost[ok]))[0]]  # cheapest, then fewest disagreements
        t = NEVER if best == 0 else float(conf[-1] if best == len(idx) else (pad[best] + pad[best + 1]) / 2)
        return (float(cost[best]), float(sums[0][best])), [*fixed, t]

    def _search(self, rows: _Rows) -> list[float]:
        """The cheapest thresholds meeting the constraints. Two models: one exact search. More:
        coordinate descent over a quantile grid for the earlier stages (exhaustive with 3 models),
        the last partial stage exact for each candidate. All-``NEVER`` (the full ensemble for every
        row) always meets the constraints, so a solution always exists."""
        m1 = len(rows.conf)  # partial stages
        grids = [np.append(np.unique(np.quantile(c, np.linspace(0, 1, self.grid))), NEVER) for c in rows.conf[:-1]]
        fixed = [NEVER] * (m1 - 1)
        best = self._solve_last(rows, fixed)
        assert best is not None  # the all-NEVER cascade equals the full ensemble
        for _ in range(4 if m1 > 2 else 1):
            changed = False
            for i in range(m1 - 1):
                for t in grids[i]:
                    got = self._solve_last(rows, [*fixed[:i], float(t), *fixed[i + 1 :]])
                    if got is not None and got[0] < best[0]:
                        best, changed = got, True
                fixed = best[1][:-1]
            if not changed:
                break
        return best[1]

    # -- run ------------------------------------------------------------------------------------
    def stage_proba(self, i: int, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Stage ``i`` on the rows still open: fused probabilities and which rows stop here.

        What the engine calls, stage by stage, with ``outputs`` holding (at least) the logits of
        ``stages_[i].models`` for the open rows only; the last stage stops every row."""
        st = self.stages_[i]
        first = np.asarray(outputs[st.inputs[0]])
        if not len(first):
            return np.zeros((0, first.shape[1] if first.ndim == 2 else 0)), np.zeros(0, dtype=bool)
        proba = st.fusion.predict_proba([outputs[m] for m in st.inputs])
        stops = np.ones(len(proba), dtype=bool) if st.threshold is None else proba.max(axis=1) >= st.threshold
        return proba, stops

    def predict_proba(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The cascade simulated on rows whose every model's logits are known (for evaluation):
        probabilities, and the stage each row stopped at. Each stage sees only its open rows,
        exactly as in the engine."""
        first = np.asarray(outputs[self.order_[0]])
        n, k = first.shape
        proba, stage_of = np.zeros((n, k)), np.full(n, len(self.stages_) - 1)
        open_idx = np.arange(n)
        for i, st in enumerate(self.stages_):
            if not len(open_idx):
                break
            p, stops = self.stage_proba(i, {m: np.asarray(outputs[m])[open_idx] for m in st.inputs})
            proba[open_idx[stops]], stage_of[open_idx[stops]] = p[stops], i
            open_idx = open_idx[~stops]
        return proba, stage_of

    def evaluate(self, test_outputs: dict[str, np.ndarray], y_test: np.ndarray) -> dict[str, Any]:
        """The report's numbers on rows the cascade never learned from (the test split)."""
        y = np.asarray(y_test)
        proba, stage_of = self.predict_proba(test_outputs)
        full = self.stages_[-1]
        full_p = full.fusion.predict_proba([test_outputs[m] for m in full.inputs])
        n = len(y)
        share = np.bincount(stage_of, minlength=len(self.stages_)) / max(n, 1)
        expected = float(np.dot(share, self.stage_costs_))
        return {
            "rows": n,
            "stages": [
                {"models": st.models, "threshold": st.threshold, "stop_share": float(s), "cost_per_row": c, "fusion_rows_stop_share": fs}
                for st, s, c, fs in zip(self.stages_, share, self.stage_costs_, self.stop_share_)
            ],
            "expected_cost_per_row": expected,
            "full_cost_per_row": self.full_cost_,
            "speedup": self.full_cost_ / expected if expected > 0 else None,  # None: free models, no ratio
            "accuracy": accuracy(y, proba) if n else float("nan"),
            "full_accuracy": accuracy(y, full_p) if n else float("nan"),
            "log_loss": log_loss(y, proba) if n else float("nan"),
            "full_log_loss": log_loss(y, full_p) if n else float("nan"),
            "agreement": float(np.mean(proba.argmax(1) == full_p.argmax(1))) if n else float("nan"),
            "criteria": self.get_params(),
            "fusion_rows": self._fit_stats(),
        }

    def _fit_stats(self) -> dict[str, Any]:
        return {k.rstrip("_"): getattr(self, k) for k in _STATS}

    # -- manifest round trip ----------------------------------------------------------------------
    def to_manifest(self, artifact_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """The manifest section (JSON-serializable) and the files written (paths relative to the
        artifact). Each partial stack gets its own graph, ``fusion/cascade_<i>.onnx``; the last
        stage is the artifact's own fusion (``manifest.fusion``), not repeated here."""
        artifact_dir = Path(artifact_dir)
        stages, files = [], []
        for i, st in enumerate(self.stages_):
            entry: dict[str, Any] = {"models": list(st.models), "inputs": list(st.inputs), "threshold": st.threshold, "fusion": None}
            if st.threshold is not None:
                graph = CASCADE_GRAPH.format(i=i)
                spec = st.fusion.to_manifest(artifact_dir, graph=graph) if isinstance(st.fusion, OnnxMeta) else st.fusion.to_manifest(artifact_dir)
                if spec.graph and spec.graph != graph:  # e.g. a stacker writing over the full fusion's META_GRAPH
                    raise ValueError(f"cascade: stage {i}'s fusion '{spec.method}' wrote {spec.graph}, not its own {graph}")
                files += [spec.graph] if spec.graph else []
                entry["fusion"] = asdict(spec)
            stages.append(entry)
        section = {
            "version": MANIFEST_VERSION,
            "order": list(self.order_),
            "model_order": list(self.model_order_),
            "costs": dict(self.costs_),
            "stage_costs": list(self.stage_costs_),
            "stages": stages,
            "criteria": self.get_params(),
            "fusion_rows": self._fit_stats(),
        }
        return section, files

    @classmethod
    def from_manifest(cls, d: dict[str, Any], artifact_dir: Path, full_fusion: FusionMethod, task: str = "single_label") -> "Cascade":
        """Rebuild from ``to_manifest``'s section; ``full_fusion``: the artifact's own fusion
        (``stackscore.fusion.from_manifest(manifest.fusion, ...)``), the last stage."""
        from . import from_manifest as fusion_from_manifest

        if task_of(task) != "single_label":
            raise ArtifactError(f"cascade: only single-label artifacts can have one, this one is {task}")
        try:
            c = cls(**d["criteria"])
            c.order_, c.model_order_ = [str(m) for m in d["order"]], [str(m) for m in d["model_order"]]
            c.costs_ = {m: float(d["costs"][m]) for m in c.order_}
            c.stage_costs_ = [float(x) for x in d["stage_costs"]]
            entries = d["stages"]
            if d.get("version") != MANIFEST_VERSION or len(entries) != len(c.order_) or len(c.order_) < 2:
                raise ValueError(f"version {d.get('version')} with {len(entries)} stages for {len(c.order_)} models")
            if sorted(c.order_) != sorted(c.model_order_) or len(c.stage_costs_) != len(c.order_):
                raise ValueError("order, model_order and stage_costs do not name the same models")
            c.stages_ = []
            for i, e in enumerate(entries):
                models, inputs, last = list(e["models"]), list(e["inputs"]), i == len(entries) - 1
                if models != c.order_[: i + 1] or sorted(inputs) != sorted(models):
                    raise ValueError(f"stage {i} must run the first {i + 1} models of {c.order_}, got {models}")
                if last:
                    if e["threshold"] is not None or e.get("fusion") is not None or inputs != c.model_order_:
                        raise ValueError("the last stage is the artifact's own fusion: no threshold, no fusion, model_order inputs")
                    c.stages_.append(CascadeStage(models, full_fusion, None, inputs))
                    continue
                t = e["threshold"]
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= NEVER:
                    raise ValueError(f"stage {i}'s threshold must be a number in (0, {NEVER}], got {t!r}")
                spec = FusionSpec(**e["fusion"])
                if spec.graph is not None and spec.graph == META_GRAPH:
                    raise ValueError(f"stage {i}'s fusion reads {META_GRAPH}, the full fusion's graph")
                c.stages_.append(CascadeStage(models, fusion_from_manifest(spec, Path(artifact_dir), "single_label"), float(t), inputs))
            stats = d.get("fusion_rows", {})
            for k in _STATS:
                setattr(c, k, stats[k.rstrip("_")])
        except ArtifactError as exc:
            raise ArtifactError(f"cascade: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"cascade: the manifest's cascade section is incomplete or wrong: {exc}") from None
        return c


def _simulate(cv: list[np.ndarray], thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The cascade over precomputed per-stage probabilities (the last one: the full ensemble)."""
    n = len(cv[0])
    stage_of = np.full(n, len(cv) - 1)
    open_ = np.ones(n, dtype=bool)
    for i, t in enumerate(thresholds):
        stop = open_ & (cv[i].max(1) >= t)
        stage_of[stop] = i
        open_ &= ~stop
    return np.stack(cv)[stage_of, np.arange(n)], stage_of
