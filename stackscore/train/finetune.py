"""Fine-tuning and batch prediction with a plain PyTorch loop.

A plain loop rather than ``transformers.Trainer``: for the small models and CPU runs here it has
less overhead, and it batches by sorted length for prediction (the same trick the engine uses).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..hf import EOS_POOLED, classifier_logits, hf_encode
from .models import ModelConfig


def _set_threads() -> None:
    import os

    import torch

    torch.set_num_threads(os.cpu_count() or 1)


def _device() -> str:
    """Train on a GPU when torch sees one (the GPU check fits BERT-base-sized models there)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def item_length(item) -> int:
    return len(item) if isinstance(item, str) else sum(len(t) for t in item)


def finetune(model, tok, texts: list, y: np.ndarray, cfg: ModelConfig, log=None):
    """Fine-tune ``model`` in place on (texts, y); returns it in eval mode."""
    import torch

    _set_threads()
    rng = np.random.default_rng(cfg.seed)
    device = _device()
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = int(total * cfg.warmup_fraction)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    # Class ids for softmax heads; multi-hot rows (sigmoid per label) and values (regression) as floats.
    soft = getattr(model.config, "problem_type", None) in (None, "single_label_classification")
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long if soft else torch.float32)
    accept_tt = "token_type_ids" in _forward_args(model)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(texts))
        losses = []
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            enc = hf_encode(tok, [texts[i] for i in idx], cfg.max_length, accept_tt).to(device)
            if model.config.model_type in EOS_POOLED:  # each row's last <eos>, as scoring reads it
                loss = head_loss(model.config, classifier_logits(model, **enc), y_t[idx].to(device))
            else:
                loss = model(**enc, labels=y_t[idx].to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        if log:
            log(f"    {cfg.name} epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.4f} ({time.perf_counter() - t0:.0f}s)")
    return model.to("cpu").eval()  # saving and ONNX export happen on the CPU


def head_loss(config, logits, labels):
    """transformers' own loss for a classification head's logits, by problem type (used where the
    logits are computed outside the model's forward: ``eos_pooled_logits``)."""
    import torch.nn.functional as F

    pt = getattr(config, "problem_type", None)
    if pt == "regression" or (pt is None and config.num_labels == 1):
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
        return F.mse_loss(logits, labels.float())
    if pt == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))


def _forward_args(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def predict_logits(model, tok, texts: list, max_length: int, token_budget: int = 8192) -> np.ndarray:
    """Logits for ``texts`` (strings or (text, text_pair) tuples; input order), batched by sorted length."""
    import torch

    _set_threads()
    device = _device()
    model.to(device).eval()
    lengths = np.asarray([item_length(t) for t in texts])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    accept_tt = "token_type_ids" in _forward_args(model)
    with torch.inference_mode():
        s = 0
        while s < len(order):
            # Character length is a cheap proxy for token length when cutting batches.
            est = max(8, min(max_length, int(lengths[order[min(len(order) - 1, s + 63)]] / 3) + 2))
            bs = max(1, min(256, token_budget // est))
            idx = order[s : s + bs]
            enc = hf_encode(tok, [texts[i] for i in idx], max_length, accept_tt)
            enc = enc.to(device)
            out[idx] = classifier_logits(model, **enc).float().cpu().numpy()  # as the graph computes them
            s += bs
    model.to("cpu")
    return out
