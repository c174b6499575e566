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


def build_report(y: np.ndarray, model_probs: dict[str, np.ndarray], fusion_probs: dict[str, np.ndarray], chosen: str, reason: str, extra: dict[str, Any]) -> dict[str, Any]:
    models = {n: all_metrics(y, p) for n, p in model_probs.items()}
    fusions = {n: all_metrics(y, p) for n, p in fusion_probs.items()}
    best_model = min(models, key=lambda n: models[n]["log_loss"])
    ch = fusions.get(chosen)
    helps = ch is not None and ch["log_loss"] < models[best_model]["log_loss"] and ch["accuracy"] >= models[best_model]["accuracy"]
    verdict = (
        f"the chosen fusion '{chosen}' {'beats' if helps else 'does NOT beat'} the best base model "
        f"'{best_model}' on the test split (log-loss {ch['log_loss']:.4f} vs {models[best_model]['log_loss']:.4f}, "
        f"accuracy {ch['accuracy']:.4f} vs {models[best_model]['accuracy']:.4f})"
        if ch
        else ""
    )
    return {"models": models, "fusions": fusions, "chosen": chosen, "reason": reason, "best_model": best_model, "ensemble_helps": bool(helps), "verdict": verdict, **extra}


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(report))
    plot_report(report, out / "report.png")


def to_markdown(r: dict[str, Any]) -> str:
    lines = [f"# stackscore fit report", "", f"Test rows: {r.get('test_rows')}; train rows: {r.get('train_rows')}; validation rows: {r.get('validation_rows', 0)}", ""]
    rows = r.get("fusion_fitted_on")
    if rows:
        lines += [f"Every fusion was fitted on: {rows['rows']}. How each base model predicted those rows:", ""]
        lines += [f"- `{name}`: {how}" for name, how in rows["models"].items()] + [""]
    lines += ["| | accuracy | macro-F1 | log-loss | ECE |", "|---|---:|---:|---:|---:|"]
    for kind, table in (("model", r["models"]), ("fusion", r["fusions"])):
        for name, m in table.items():
            mark = " **(chosen)**" if kind == "fusion" and name == r["chosen"] else ""
            lines.append(f"| {kind} `{name}`{mark} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['log_loss']:.4f} | {m['ece']:.4f} |")
    lines += ["", f"Verdict: {r['verdict']}.", "", f"Why this fusion: {r['reason']}", "", "![report](report.png)", ""]
    corr = r.get("error_correlation")
    if corr:
        names = list(corr)
        lines += ["Error correlation between base models (lower = more diverse):", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for a in names:
            lines.append(f"| {a} | " + " | ".join(f"{corr[a][b]:.3f}" for b in names) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_report(r: dict[str, Any], path: Path) -> None:
    """Bar chart of accuracy and log-loss for every base model and fusion method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"model:{n}" for n in r["models"]] + [f"fusion:{n}" for n in r["fusions"]]
    rows = list(r["models"].values()) + list(r["fusions"].values())
    colors = ["#7f7f7f"] * len(r["models"]) + ["#1f77b4" if n != r["chosen"] else "#d62728" for n in r["fusions"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.5))
    for ax, key in zip(axes, ("accuracy", "log_loss")):
        vals = [m[key] for m in rows]
        ax.barh(names, vals, color=colors)
        ax.set_title(f"{key} (test split)" + ("  lower is better" if key == "log_loss" else ""))
        lo, hi = min(vals), max(vals)
        ax.set_xlim(max(0.0, lo - (hi - lo) * 0.5 - 1e-3), hi + (hi - lo) * 0.2 + 1e-3)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle(f"stackscore fit: chosen fusion '{r['chosen']}' (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
