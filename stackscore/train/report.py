"""The fit report: every base model and every fusion method side by side, on the test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import all_metrics


def error_correlation(y: np.ndarray, logits: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Pearson correlation between base models' error indicators (low = diverse = fusion helps)."""
    errs = {n: (l.argmax(1) != y).astype(float) for n, l in logits.items()}
    out: dict[str, dict[str, float]] = {}
    for a in errs:
        out[a] = {}
        for b in errs:
            ea, eb = errs[a], errs[b]
            if ea.std() == 0 or eb.std() == 0:
                out[a][b] = float("nan") if a != b else 1.0
            else:
                out[a][b] = float(np.corrcoef(ea, eb)[0, 1])
    return out


# Per task: the metric that ranks models and decides the verdict, and whether higher is better.
PRIMARY = {"single_label": ("log_loss", False), "multi_label": ("micro_f1", True), "regression": ("rmse", False)}


def task_metrics(task: str, y: np.ndarray, pred: np.ndarray, thresholds=None) -> dict[str, float]:
    from ..tasks import multilabel_metrics, regression_metrics

    if task == "multi_label":
        return multilabel_metrics(y, pred, thresholds if thresholds is not None else np.full(pred.shape[1], 0.5))
    if task == "regression":
        return regression_metrics(y, pred)
    return all_metrics(y, pred)


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (e.g. Pearson of a constant prediction) as null: report.json stays valid JSON."""
    return {k: (None if v != v else v) for k, v in metrics.items()}


BOOTSTRAP = 1000  # resamples of the test split for the verdict's interval


def per_row(task: str, y: np.ndarray, pred: np.ndarray, thresholds=None) -> np.ndarray:
    """The primary metric's per-row parts, whose column sums give it back (``from_sums``):
    single-label log-loss terms; multi-label true / false positives and false negatives at the
    thresholds; regression squared errors."""
    from ..metrics import EPS
    from ..tasks import decide

    if task == "multi_label":
        on, t = decide(pred, thresholds if thresholds is not None else np.full(pred.shape[1], 0.5)), np.asarray(y) > 0.5
        return np.stack([(on & t).sum(1), (on & ~t).sum(1), (~on & t).sum(1)], 1).astype(np.float64)
    if task == "regression":
        return ((np.ravel(pred) - np.ravel(y)) ** 2)[:, None]
    return -np.log(np.clip(pred[np.arange(len(y)), np.asarray(y)], EPS, 1.0))[:, None]


def from_sums(task: str, sums: np.ndarray, n: int) -> np.ndarray:
    """The primary metric from ``per_row`` sums over ``n`` rows (last axis: the parts)."""
    if task == "multi_label":
        tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0)
    if task == "regression":
        return np.sqrt(sums[..., 0] / n)
    return sums[..., 0] / n


def paired_interval(task: str, a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0) -> list[float]:
    """95 % paired bootstrap interval of metric(a) - metric(b) on the same test rows (``per_row``
    parts of each): the noise of a test split of this size, which a point difference hides."""
    n = len(a)
    if n == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    diffs = []
    for s in range(0, resamples, 50):  # (50, n) counts at a time: flat memory on large test splits
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(50, resamples - s)).astype(np.float64)
        diffs.append(from_sums(task, w @ a, n) - from_sums(task, w @ b, n))
    lo, hi = np.quantile(np.concatenate(diffs), [0.025, 0.975])
    return [float(lo), float(hi)]


def build_report(y: np.ndarray, model_probs: dict[str, np.ndarray], fusion_probs: dict[str, np.ndarray], chosen: str, reason: str, extra: dict[str, Any], task: str = "single_label", thresholds: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """Every base model and fusion on the test split, with the task's metrics, and a verdict.

    Single-label: the chosen fusion helps when its log-loss is lower than every base model's and
    its accuracy no lower than any's (the lowest log-loss and the highest accuracy may be two
    models: both are named); multi-label: a higher micro-F1 than the best base model's (each
    judged at its own thresholds, tuned on the fusion rows); regression: a lower RMSE. The
    primary metric's difference to the best base model comes with a 95 % paired bootstrap
    interval over the test rows (``difference_vs_best_model``); where it holds 0 the verdict says
    the test split cannot tell them apart.
    """
    model_t, fusion_t = thresholds or ({}, {})
    models = {n: _finite(task_metrics(task, y, p, model_t.get(n))) for n, p in model_probs.items()}
    fusions = {n: _finite(task_metrics(task, y, p, fusion_t.get(n))) for n, p in fusion_probs.items()}
    key, higher = PRIMARY[task]
    rank = (lambda n: -models[n][key]) if higher else (lambda n: models[n][key])
    best_model = min(models, key=rank)
    ch, best = fusions.get(chosen), models[best_model]
    difference = None
    if ch is None:
        helps, verdict = False, ""
    else:
        if task == "single_label":
            most_accurate = max(models, key=lambda n: models[n]["accuracy"])
            top = models[most_accurate]
            helps = ch["log_loss"] < best["log_loss"] and ch["accuracy"] >= top["accuracy"]
            detail = f"log-loss {ch['log_loss']:.4f} vs {best['log_loss']:.4f}, accuracy {ch['accuracy']:.4f} vs {best['accuracy']:.4f}"
            if top["accuracy"] > best["accuracy"]:  # another model is the more accurate: judged against it too
                detail += f"; the most accurate base model '{most_accurate}' {top['accuracy']:.4f}"
        elif task == "multi_label":
            helps = ch["micro_f1"] > best["micro_f1"]
            detail = f"micro-F1 {ch['micro_f1']:.4f} vs {best['micro_f1']:.4f}, log-loss per label {ch['log_loss']:.4f} vs {best['log_loss']:.4f}"
        else:
            helps = ch["rmse"] < best["rmse"]
            pearson = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731 - constant predictions have none
            detail = f"RMSE {ch['rmse']:.4f} vs {best['rmse']:.4f}, Pearson {pearson(ch['pearson'])} vs {pearson(best['pearson'])}"
        lo, hi = paired_interval(task, per_row(task, y, fusion_probs[chosen], fusion_t.get(chosen)), per_row(task, y, model_probs[best_model], model_t.get(best_model)))
        difference = {"metric": key, "value": float(ch[key] - best[key]), "ci95": [lo, hi], "resamples": BOOTSTRAP}
        noise = ""
        if lo <= 0 <= hi:
            noise = f"; the {key.replace('_', '-')} difference's 95 % interval [{lo:+.4f}, {hi:+.4f}] holds 0: this test split cannot tell them apart"
        verdict = f"the chosen fusion '{chosen}' {'beats' if helps else 'does NOT beat'} the best base model '{best_model}' on the test split ({detail}){noise}"
    return {"models": models, "fusions": fusions, "chosen": chosen, "reason": reason, "best_model": best_model, "ensemble_helps": bool(helps),
            "difference_vs_best_model": difference, "verdict": verdict, **extra}


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(report))
    plot_report(report, out / "report.png")


def to_markdown(r: dict[str, Any]) -> str:
    lines = ["# stackscore fit report", "", f"Test rows: {r.get('test_rows')}; train rows: {r.get('train_rows')}; validation rows: {r.get('validation_rows', 0)}", ""]
    rows = r.get("fusion_fitted_on")
    if rows:
        lines += [f"Every fusion was fitted on: {rows['rows']}. How each base model predicted those rows:", ""]
        lines += [f"- `{name}`: {how}" for name, how in rows["models"].items()] + [""]
    keys = list(next(iter(r["models"].values())))
    lines += ["| | " + " | ".join(keys) + " |", "|---" + "|---:" * len(keys) + "|"]
    for kind, table in (("model", r["models"]), ("fusion", r["fusions"])):
        for name, m in table.items():
            mark = " **(chosen)**" if kind == "fusion" and name == r["chosen"] else ""
            lines.append(f"| {kind} `{name}`{mark} | " + " | ".join("n/a" if m[k] is None else f"{m[k]:.4f}" for k in keys) + " |")
    lines += ["", f"Verdict: {r['verdict']}.", "", f"Why this fusion: {r['reason']}", "", "![report](report.png)", ""]
    corr = r.get("error_correlation")
    if corr:
        names = list(corr)
        lines += ["Error correlation between base models (lower = more diverse):", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for a in names:
            lines.append(f"| {a} | " + " | ".join(f"{corr[a][b]:.3f}" for b in names) + " |")
        lines.append("")
    c = r.get("cascade")
    if c:
        lines += cascade_markdown(c)
    return "\n".join(lines)


def cascade_markdown(c: dict[str, Any]) -> list[str]:
    """The cascade on the test split: where rows stop, what they cost, what it costs in quality."""
    if "skipped" in c:
        return [f"Cascade: not used ({c['skipped']}).", ""]
    lines = [
        "## Cascade (test split; thresholds learned on the fusion rows only)", "",
        "| stage | models run | threshold | rows stopping here | cost per row (s) |", "|---|---|---:|---:|---:|",
    ]
    for i, st in enumerate(c["stages"]):
        t = "-" if st["threshold"] is None else ("never stops" if st["threshold"] > 1 else f"{st['threshold']:.4f}")
        lines.append(f"| {i + 1} | {', '.join(st['models'])} | {t} | {st['stop_share']:.1%} | {st['cost_per_row']:.2e} |")
    speed = c.get("speedup")
    lines += [
        "",
        f"Expected cost per row {c['expected_cost_per_row']:.2e} s vs {c['full_cost_per_row']:.2e} s for the full ensemble"
        + (f" ({speed:.2f}x less model time)" if speed else "") + f"; costs: {c.get('costs_measured', 'seconds per row')}.",
        f"Accuracy {c['accuracy']:.4f} vs {c['full_accuracy']:.4f} (full); log-loss {c['log_loss']:.4f} vs {c['full_log_loss']:.4f}; "
        f"agreement with the full ensemble {c['agreement']:.2%}.",
    ]
    if c.get("why_no_gain"):
        lines.append(f"Why little is saved: {c['why_no_gain']}.")
    held = [h for h in c.get("thresholds_held_on_test_split") or [] if h["threshold"] != h["threshold_fold_models"]]
    if held:
        lines.append(
            "Thresholds raised so that the final models (more confident than the fold models the thresholds were learned on) "
            "stop no more rows than planned, measured on these test rows without their labels: "
            + "; ".join(f"{'+'.join(h['models'])} {h['threshold_fold_models']:.4f} -> {h['threshold']:.4f} (planned {h['planned_stop_share']:.1%}, now {h['held_out_stop_share']:.1%})" for h in held) + "."
        )
    return lines + [""]


def plot_report(r: dict[str, Any], path: Path) -> None:
    """Bar chart of accuracy and log-loss for every base model and fusion method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"model:{n}" for n in r["models"]] + [f"fusion:{n}" for n in r["fusions"]]
    rows = list(r["models"].values()) + list(r["fusions"].values())
    colors = ["#7f7f7f"] * len(r["models"]) + ["#1f77b4" if n != r["chosen"] else "#d62728" for n in r["fusions"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.5))
    keys = {"multi_label": ("micro_f1", "log_loss"), "regression": ("pearson", "rmse")}.get(r.get("task", "single_label"), ("accuracy", "log_loss"))
    for ax, key in zip(axes, keys):
        vals = [0.0 if m[key] is None else m[key] for m in rows]
        ax.barh(names, vals, color=colors)
        ax.set_title(f"{key} (test split)" + ("  lower is better" if key in ("log_loss", "rmse") else ""))
        lo, hi = min(vals), max(vals)
        ax.set_xlim(max(0.0, lo - (hi - lo) * 0.5 - 1e-3), hi + (hi - lo) * 0.2 + 1e-3)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle(f"stackscore fit: chosen fusion '{r['chosen']}' (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
