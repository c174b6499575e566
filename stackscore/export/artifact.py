"""Assemble an artifact directory from a fit work directory.

A fit work directory holds ``fit_state.json`` (``FitState``: labels, base models, the fusion spec), the
fine-tuned models as Hugging Face directories under ``models/<name>/`` (a checkpoint used as
saved stays where it is: its entry names its ``model_dir`` and ``label_order``), the fusion's own files
(``fusion/meta.onnx`` for stacking) and ``oof.npz`` (out-of-fold logits with the training-side
fused probabilities, for the meta-learner's parity check).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__, fusion
from ..errors import ParityError, StackscoreError
from ..fit_state import FitState
from ..manifest import FusionSpec, Manifest, load_manifest, write_manifest
from ..tasks import agreement, manifest_task, scale, task_of
from .onnx_graph import MAX_ERROR_GATE, MEAN_ERROR_GATE, GateSettings, compare, export_transformer
from .tfidf import export_tfidf


def export_artifact(workdir: str | Path, out: str | Path | None = None, log: Callable[[str], None] = print, overwrite: bool = True, check: Callable[[Path, Manifest], None] | None = None, calibration_texts: list[str] | None = None) -> Manifest:
    """Build the artifact in ``<out>.tmp``, run ``check`` on it there, then put it in place.

    Nothing reaches ``out`` unless every gate and ``check`` passed (fit's engine-vs-training
    check), and an artifact already at ``out`` is replaced only by a complete, checked one: a
    failed (re-)export leaves the previous artifact as it was. ``calibration_texts`` replace the
    fit's own static-int8 calibration sample (training texts, never the gate rows).
    """
    workdir = Path(workdir)
    out = Path(out) if out else workdir / "artifact"
    state = FitState.load(workdir)
    if calibration_texts is not None:
        gate = set(map(str, state.parity_texts + (state.confirmation_texts or [])))
        if any(str(t) in gate for t in calibration_texts):
            raise StackscoreError("calibration texts must not include the gate or confirmation rows (the gates measure on rows never used to calibrate)")
        state.calibration_texts = list(calibration_texts)
    if out.exists() and not overwrite:
        raise StackscoreError(f"{out}: exists; pass --overwrite")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _export_into(workdir, tmp, state, log)
        if check is not None:
            check(tmp, load_manifest(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export never leaves a partial artifact
        raise
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        out.replace(old)
    tmp.replace(out)
    if old.exists():
        shutil.rmtree(old)
    return load_manifest(out)


def _export_into(workdir: Path, tmp: Path, state: FitState, log: Callable[[str], None]) -> Manifest:
    samples = state.parity_texts
    variants = GateSettings(
        int8=state.int8, static_int8=state.static_int8, fp16=state.fp16, calibration_texts=state.calibration_texts, task=state.task,
        static_int8_min_speedup=state.static_int8_min_speedup, plain_attention_min_speedup=state.plain_attention_min_speedup, min_rows=state.gate_min_rows,
    )
    specs = []
    searches: dict[str, list] = {}  # per model: its static int8 search, kept open for the ensemble gate
    for m in state.models:
        log(f"  export {m.name}: ONNX fp32 + parity on {len(samples)} {'pairs' if state.text_pair else 'texts'}")
        m.check_unchanged(workdir)
        if m.kind == "tfidf":
            spec = export_tfidf(m.directory(workdir), tmp, m.name)
        else:
            spec = export_transformer(
                m.directory(workdir), tmp, m.name, m.max_length, samples, log=log, variants=variants,
                label_order=m.label_order, label_map=m.label_map, searches=searches.setdefault(m.name, []), output_activation=m.output_activation,
                confirm_texts=state.confirmation_texts,
            )
        log(f"    max |onnx - torch| = {spec.parity['max_abs_diff']:.2e}, label agreement {spec.parity['label_agreement']:.2%}")
        specs.append(spec)

    fspec = FusionSpec(**state.fusion)
    cascade_graphs = [g for st in (state.cascade or {}).get("stages", []) if (g := (st.get("fusion") or {}).get("graph"))]
    for graph in ([fspec.graph] if fspec.graph else []) + cascade_graphs:
        (tmp / graph).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workdir / graph, tmp / graph)
    oof = np.load(workdir / "oof.npz")
    outputs = [oof[f"logits_{m.name}"] for m in state.models]
    task = task_of(manifest_task(state.task, len(state.labels)))
    engine_side = fusion.from_manifest(fspec, tmp, task).predict_proba(outputs)
    train_side = oof["fused_proba"]
    diff = float(np.abs(engine_side - train_side).max())
    tol = 1e-4 * scale(train_side)  # a float32 meta-learner graph rounds relative to its values
    agree = agreement(task, engine_side, train_side, fspec.params.get("thresholds"), 1e-4)
    fspec.parity = {"rows": int(len(engine_side)), "max_abs_diff_vs_training": diff, "tolerance": tol, "label_agreement": agree}
    log(f"  fusion '{fspec.method}': engine vs training max |diff| {diff:.2e}, agreement {agree:.2%}")
    if diff > tol:
        raise ParityError(f"fusion '{fspec.method}': exported result differs from training by {diff:.2e} (tolerance {tol:.1e})")

    manifest = Manifest(
        labels=state.labels, models=specs, fusion=fspec,
        task=manifest_task(state.task, len(state.labels)),
        text_pair=bool(state.text_pair),
        cascade=state.cascade,
        created_by=f"stackscore {__version__}",
    )
    try:
        fspec.parity["ensemble_auto"] = ensemble_gate(
            tmp, manifest, samples, variants.min_agreement, log, tighten={n: s[0].tighter for n, s in searches.items() if s},
            confirmation=state.confirmation_texts if len(state.confirmation_texts or []) >= variants.min_rows else None,
        )
    finally:
        for search in (s for found in searches.values() for s in found):
            search.close()
    write_manifest(tmp, manifest)
    return manifest


def ran_agreement(gate: dict) -> float:
    """A variant's own gate agreement as the ensemble gate's auto ran it: a bf16 gate's plain
    attention figure where export made plain nodes the default on this machine (the ensemble is
    measured here, so the timing holds), else the gate's."""
    plain = gate.get("plain_attention")
    if isinstance(plain, dict) and plain.get("default") and plain.get("passed"):
        return plain.get("label_agreement", 0.0)
    return gate.get("label_agreement", 0.0)


def ensemble_gate(directory: Path, manifest: Manifest, samples: list, min_agreement: float, log: Callable[[str], None] = print,
                  tighten: dict[str, Callable[[], dict | None]] | None = None, confirmation: list | None = None) -> dict:
    """The whole ensemble as ``--precision auto`` runs it on this machine, against exact fp32,
    on the gate rows: every model passing its own gate does not make their combination pass
    (MiniLM and RoBERTa each at >= 99.5 % gave a stack at 99.53 %; two models' flips can fall on
    different rows). While the fused answers agree less than ``min_agreement`` (single-label: or
    their probabilities move more than ``MEAN_ERROR_GATE`` on average; multi-label: any
    probability more than ``MAX_ERROR_GATE``; regression: values within 1 % of their range, none
    beyond ``MAX_ERROR_GATE``), the faster variant of the model whose own
    gate agreed least is dropped (its gate marked failed, with why; its graph file removed), and
    the ensemble is measured again. Returns what was measured, for the manifest.

    A static int8 graph chosen by the int8 search is not dropped at once: ``tighten[model]()``
    (``StaticInt8Search.tighter``) puts the next graph up its ladder (more of the most sensitive
    ops in float) in its place, gated and timed as the ladder's, and the ensemble is measured
    again; only when there is none left (or it is too slow to beat what ``auto`` runs instead)
    is the variant dropped. (On a Xeon with AMX, MiniLM's 1-op graph passed its own gate at
    99.61 % while the stack with it agreed 99.22 %: dropping it left MiniLM in bf16.)

    What it covers: what ``auto`` picks on the *export* machine (without OpenVINO there, bf16
    and static int8 take no part; a scoring machine with other CPU features may pick otherwise),
    with the cascade off (every model on every row), and, for an artifact with a cascade, with
    it on (``cascade`` in the record). ``runs`` says which variants were measured.

    A mix that passes with a graph the int8 search chose on these same rows (some ops in float)
    must pass on the ``confirmation`` rows too (test rows apart from the gate rows; see
    ``onnx_graph.Confirmation``), else that graph is dropped, untightened: trying the next graph
    up its ladder would make those rows a second set to choose on."""
    from ..engine.scorer import Scorer
    from ..options import RunOptions

    texts = [t[0] if isinstance(t, tuple) else t for t in samples]
    pairs = [t[1] for t in samples] if samples and isinstance(samples[0], tuple) else None
    task = task_of(manifest.task)
    thresholds = manifest.fusion.params.get("thresholds")

    def fused(run: RunOptions, rows: list | None = None) -> tuple[np.ndarray, Scorer]:
        rows = samples if rows is None else rows
        scorer = Scorer(directory, run, manifest=manifest)
        return scorer.score_texts([t[0] if isinstance(t, tuple) else t for t in rows], [t[1] for t in rows] if pairs is not None else None).proba, scorer

    def judged(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, bool]:
        """(agreement, how far probabilities/values moved, whether both are within bounds)."""
        if task == "regression":
            # Values within 1 % of their range (as each model's gate), the largest within 5 %: a
            # ridge stack can weigh nearly collinear models with large opposite coefficients, so
            # its error is not bounded by its models' own.
            c = compare(ref, got, task)  # each model's gate's own measure: values against their range
            agree, moved = c["label_agreement"], c["max_prob_error"]
            return agree, moved, agree >= min_agreement and moved <= MAX_ERROR_GATE
        agree = agreement(task, got, ref, thresholds, 1e-3)
        if task == "multi_label":
            # label sets at the tuned thresholds, and every probability within MAX_ERROR_GATE as each
            # model's gate: a stacker reads raw logits, where a saturated sigmoid's int8 error is large
            moved = float(np.abs(got - ref).max()) if len(ref) else 0.0
            return agree, moved, agree >= min_agreement and moved <= MAX_ERROR_GATE
        moved = float(np.abs(got - ref).max(1).mean()) if len(ref) else 0.0  # the fused probabilities users read
        return agree, moved, agree >= min_agreement and moved <= MEAN_ERROR_GATE

    confirmed: dict[bool, dict] = {}  # per cascade mode: the last confirmation measured
    confirm_ref: dict[bool, np.ndarray] = {}  # per cascade mode: exact fp32 on the confirmation rows (computed once)

    def confirm(cascade: bool, scorer: Scorer) -> bool:
        """The mix passed the gate rows; if a searched graph (ops in float, chosen on those rows)
        is in it, it must pass the confirmation rows too."""
        def chosen(name: str) -> bool:  # ops in float, or the attention kind, chosen on the gate rows
            gate = next(m for m in manifest.models if m.name == name).parity.get("gates", {}).get("int8_static", {})
            return bool(gate.get("passed")) and (bool(gate.get("fp32_ops", 0)) or gate.get("attention") == "plain")

        searched = [name for name, r in scorer.runners.items() if getattr(r, "choice", None) is not None and r.choice.variant == "int8_static" and chosen(name)]
        if not searched or not confirmation:
            confirmed.pop(cascade, None)
            return True
        if cascade not in confirm_ref:
            confirm_ref[cascade] = fused(RunOptions(precision="fp32", backend="onnxruntime", cascade=cascade), confirmation)[0]
        got_c, _ = fused(RunOptions(precision="auto", cascade=cascade), confirmation)
        agree_c, moved_c, fine_c = judged(confirm_ref[cascade], got_c)
        confirmed[cascade] = {"rows": len(confirmation), "label_agreement": agree_c, "moved": moved_c, "passed": fine_c, "searched": searched}
        log(f"  {'cascade' if cascade else 'ensemble'} at auto on {len(confirmation)} confirmation rows (searched: {', '.join(searched)}): "
            f"agreement {agree_c:.2%} -> {'confirmed' if fine_c else 'not confirmed'}")
        return fine_c

    dropped: list[str] = []
    tightened: list[str] = []
    tighten = dict(tighten or {})
    untightened: set[str] = set()

    def measure(cascade: bool) -> dict:
        """Drop the least-agreeing lossy variant until auto agrees with fp32 in this mode."""
        ref, _ = fused(RunOptions(precision="fp32", backend="onnxruntime", cascade=cascade))
        while True:
            confirmed.pop(cascade, None)  # what this mix measures, not an earlier mix's
            got, scorer = fused(RunOptions(precision="auto", cascade=cascade))
            lossy = [(name, r.choice) for name, r in scorer.runners.items() if getattr(r, "choice", None) is not None and r.choice.precision != "fp32"]
            agree, moved, fine = judged(ref, got)
            if (fine and confirm(cascade, scorer)) or not lossy:
                break
            on_rows = " on the confirmation rows" if fine else ""
            if fine:  # passed the gate rows only: a searched graph goes, untightened (the confirmation rows are one check)
                agree, moved = confirmed[cascade]["label_agreement"], confirmed[cascade]["moved"]
                lossy = [(name, c) for name, c in lossy if name in confirmed[cascade]["searched"]]
                for name, _ in lossy:
                    tighten.pop(name, None)
            spec, key = min(
                ((next(m for m in manifest.models if m.name == name), c.variant) for name, c in lossy),
                key=lambda sk: ran_agreement(sk[0].parity.get("gates", {}).get(sk[1], {})),
            )
            what = "the cascade" if cascade else "the fused ensemble"
            if key == "int8_static" and spec.name in tighten:
                log(f"  {'cascade' if cascade else 'ensemble'} at auto: agreement {agree:.2%} (at least {min_agreement:.1%}); {spec.name} int8_static: more ops in float")
                new = tighten[spec.name]()
                if new is not None:
                    new["tightened_by"] = f"the ensemble gate: {what} at auto agreed {agree:.2%} with fp32 with {len(spec.parity['gates'][key].get('fp32_scope', []))} ops in float"
                    spec.parity["gates"][key] = new
                    tightened.append(f"{spec.name}:{key}:{new.get('fp32_ops', 0)}")
                    continue
                del tighten[spec.name]
                untightened.add(spec.name)
            gate = spec.parity["gates"][key]
            gate["passed"] = False
            bound = f"its values moved up to {moved:.3f} of their range (at most {MAX_ERROR_GATE})" if task == "regression" else \
                f"its probabilities moved up to {moved:.3f} (at most {MAX_ERROR_GATE})" if task == "multi_label" else \
                f"its probabilities moved {moved:.3f} on average (at most {MEAN_ERROR_GATE})"
            gate["reason"] = f"dropped by the ensemble gate: {what} at auto agreed {agree:.2%} with fp32{on_rows} (at least {min_agreement:.1%}), {bound}"
            if key == "int8_static" and spec.name in untightened:
                gate["reason"] += "; no graph with more ops in float passed its own gate and the speed rule"
            if key in spec.graphs and key != "fp32":
                graph = directory / spec.graphs.pop(key)
                graph.unlink(missing_ok=True)
            dropped.append(f"{spec.name}:{key}")
            log(f"  {'cascade' if cascade else 'ensemble'} at auto: agreement {agree:.2%} (at least {min_agreement:.1%}), {bound}; dropping {spec.name} {key}")
        return {
            "rows": len(texts), "runs": scorer.describe(), "label_agreement": agree,
            "max_prob_error": float(np.abs(got - ref).max()) if len(ref) else 0.0,
            ("max_relative_error" if task == "regression" else "mean_prob_error"): moved,
            "confirmation": confirmed.get(cascade),  # None: no searched graph in the mix, or no confirmation rows
        }

    result = {**measure(False), "min_agreement": min_agreement}
    if manifest.cascade:
        # A cascade stops rows on its early stages' probabilities: quantized ones can stop other
        # rows than fp32's would. Measured as scoring runs it (cascade on, auto vs fp32); when that
        # drops a variant, the full ensemble is measured again, so the record names what runs.
        before = len(dropped)
        result["cascade"] = measure(True)
        if len(dropped) > before:
            result.update(measure(False))
    result["dropped"] = dropped
    if tightened:
        result["tightened"] = tightened
    log(f"  ensemble at auto ({result['runs']}): agreement with fp32 {result['label_agreement']:.2%} on {len(texts)} gate rows"
        + (f"; cascade {result['cascade']['label_agreement']:.2%}" if "cascade" in result else "")
        + (f", dropped {', '.join(dropped)}" if dropped else "")
        + (f", static int8 with more ops in float: {', '.join(tightened)}" if tightened else ""))
    return result
