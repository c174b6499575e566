"""Hugging Face helpers shared by training, export and the PyTorch baselines.

Export must not import training code (it reads train's typed outputs only), yet both load a
checkpoint's tokenizer and encode texts the way transformers does; that common ground lives here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import StackscoreError

# In a label order (the checkpoint output feeding each artifact label): the constant 0 set beside
# a one-output head's logit z. softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: a sigmoid head
# (cross-encoders, BCE-trained binary classifiers) is a two-label softmax head exactly.
ZERO_LOGIT = -1


def ordered_logits(logits: np.ndarray, order) -> np.ndarray:
    """A checkpoint's logits (rows x outputs) in the artifact's label order (``ZERO_LOGIT``: 0)."""
    order = np.asarray(order, dtype=np.int64)
    if (order >= 0).all():
        return logits[:, order]
    return np.concatenate([np.zeros((len(logits), 1), logits.dtype), logits], 1)[:, order + 1]


def hf_encode(tok, items: list, max_length: int, keep_types: bool):
    """transformers' own encoding of texts or (text, text_pair) tuples, padded, longest-first truncation."""
    if items and isinstance(items[0], tuple):
        enc = tok([a for a, _ in items], [b for _, b in items], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    else:
        enc = tok(list(items), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    if not keep_types:
        enc.pop("token_type_ids", None)
    return enc


def config_pad_id(tok, config) -> int | None:
    """The config's ``pad_token_id`` when it is one of the tokenizer's ids (-1 in some Llama
    configs, or an id past the vocabulary, is not), else None."""
    pad = getattr(config, "pad_token_id", None)
    return int(pad) if pad is not None and 0 <= int(pad) < len(tok) else None


def pad_like_config(tok, config) -> None:
    """A tokenizer saved without a pad token, for a model whose config names one (GPT-2 and Llama
    classifiers are often saved so): pad with the config's id, the one the model finds each row's
    last token by (padding needs a token; any other would be read as text)."""
    if tok.pad_token is not None or getattr(config, "pad_token_id", None) is None:
        return
    pad = config_pad_id(tok, config)
    if pad is None:
        raise StackscoreError(
            f"its tokenizer has no pad token and its config's pad_token_id {config.pad_token_id} is not one of the tokenizer's {len(tok)} ids: "
            "set pad_token_id in config.json to the id its batches were padded with"
        )
    tok.pad_token = tok.convert_ids_to_tokens(pad)


def load_tokenizer(path: Path):
    """The checkpoint's fast tokenizer: AutoTokenizer, or its ``tokenizer.json`` wrapped directly.

    transformers converts a checkpoint that has only a slow tokenizer's files (``vocab.txt``, a
    SentencePiece model: needs the ``sentencepiece`` package) to a fast one; export writes that
    as ``tokenizer.json`` and checks it gives the same ids as transformers on the parity texts.
    transformers 5 cannot build some older checkpoints' tokenizers (a ``BertTokenizer`` class
    name plus ``tokenizer.json``, as sentence-transformers ship them); the fast tokenizer file is
    all we need, with the special tokens from the config.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a user's checkpoint: one line, or the fallback below
        if not (path / "tokenizer.json").is_file():
            hint = " (a SentencePiece tokenizer needs: pip install sentencepiece)" if any(path.glob("*.model")) else ""
            raise StackscoreError(f"{path}: cannot build its tokenizer: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}{hint}") from None
        tok = None
    if tok is not None:
        if getattr(tok, "backend_tokenizer", None) is None:
            raise StackscoreError(f"{path}: its tokenizer ({type(tok).__name__}) has no fast (tokenizers) form that the engine can run")
        return _pads_right(tok)
    specials, settings = {}, {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = path / name
        if f.is_file():
            for k, v in json.loads(f.read_text()).items():
                if k in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token"):
                    specials.setdefault(k, v["content"] if isinstance(v, dict) else v)
                elif k in ("truncation_side", "split_special_tokens", "model_input_names") and name == "tokenizer_config.json":  # settings the engine follows
                    specials[k] = v
                elif k == "do_lower_case" and name == "tokenizer_config.json":
                    settings[k] = v
    if "model_input_names" not in specials:
        # PreTrainedTokenizerFast's own default has no token_type_ids: a BERT pair model was fitted
        # and exported with every token type 0, and all checks agreed on that wrong input
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        types = int(config.get("type_vocab_size") or 0) if isinstance(config, dict) else 0
        specials["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"] if types > 1 else ["input_ids", "attention_mask"]
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    if "do_lower_case" in settings:
        _lower_case_as_configured(path, backend, bool(settings["do_lower_case"]))
    return _pads_right(PreTrainedTokenizerFast(tokenizer_object=backend, **specials))


def _lower_case_as_configured(path: Path, backend, lower: bool) -> None:
    """``do_lower_case`` in tokenizer_config.json wins over tokenizer.json's normalizer, as in
    transformers' BERT-style fast tokenizers (a BertNormalizer's ``lowercase`` is set to it); a
    normalizer this cannot set, disagreeing with it, is one line rather than other tokens."""
    import json

    from tokenizers import normalizers

    norm = backend.normalizer
    state = json.loads(norm.__getstate__()) if norm is not None else {}
    if state.get("type") == "BertNormalizer":
        if bool(state.get("lowercase")) != lower:
            state.pop("type")
            state["lowercase"] = lower
            backend.normalizer = normalizers.BertNormalizer(**state)
        return

    def lowercases(s: dict) -> bool:
        kind = s.get("type")
        if kind == "Sequence":
            return any(lowercases(n) for n in s.get("normalizers") or [])
        return kind == "Lowercase" or (kind == "BertNormalizer" and bool(s.get("lowercase")))

    lowers = lowercases(state)
    if lowers != lower:
        raise StackscoreError(
            f"{path}: tokenizer_config.json says do_lower_case = {str(lower).lower()}, its tokenizer.json's normalizer "
            f"{'lowercases' if lowers else 'keeps case'}: make the two agree"
        )


def _pads_right(tok):
    """The engine pads every batch on the right; a tokenizer saved with ``padding_side = "left"``
    (common for decoders, set for generation) gave fit's PyTorch side other positions for the
    padded rows' tokens (models with absolute positions: other logits, labels flipped on 8 of 16
    GPT-2 rows), and those logits trained the fusion; fit then failed its engine check, blaming
    the export. Fit, export and the bench's loops pad as the engine does."""
    tok.padding_side = "right"
    return tok


# Encoder-decoder classifiers whose head reads the decoder's state at each row's last <eos>.
# transformers selects those states with a boolean mask and a reshape that holds only when every
# row of the batch has as many <eos> tokens, and refuses otherwise; that traces to a graph fixed
# to the traced rows (it fails on a dummy input without <eos>). ``eos_pooled_logits`` gathers each
# row's own last <eos>: the same states whenever transformers' rule holds, and per row otherwise,
# which is what transformers gives that row scored alone.
EOS_POOLED = ("bart", "mbart", "plbart", "mvp", "bigbird_pegasus", "t5", "mt5", "umt5")


def classifier_logits(model, input_ids, attention_mask, **inputs):
    """A classifier's logits as the engine's graph computes them: ``eos_pooled_logits`` for the
    BART and T5 families, the model's own forward otherwise (``inputs``: token types); through
    the model's ``output_activation`` where it has one (``activated``)."""
    if str(getattr(model.config, "model_type", "")) in EOS_POOLED:
        return activated(model, eos_pooled_logits(model, input_ids, attention_mask))
    return activated(model, model(input_ids=input_ids, attention_mask=attention_mask, **inputs).logits)


def cross_encoder_activation(config, directory: Path | None = None) -> str:
    """What sentence-transformers' CrossEncoder applies to this checkpoint's outputs when it
    predicts, as a lower-case class name ("sigmoid", "identity", ...), or "" where nothing says
    it is a cross-encoder's. Read as CrossEncoder resolves it: ``activation_fn`` in
    ``config_sentence_transformers.json`` (v5+, where 6.x writes it), then config.json's
    ``sentence_transformers.activation_fn`` (v4) or ``sbert_ce_default_activation_function``
    (before v4), then its default for a directory that file marks as a CrossEncoder's: Sigmoid
    for one output, Identity otherwise. A plain transformers checkpoint gives "" (its raw
    output): an old cross-encoder saved without a name looks the same and cannot be told apart."""
    import json

    saved: dict = {}
    if directory is not None and (Path(directory) / "config_sentence_transformers.json").is_file():
        try:
            saved = json.loads((Path(directory) / "config_sentence_transformers.json").read_bytes())
        except ValueError:
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
    st = getattr(config, "sentence_transformers", None)
    name = saved.get("activation_fn") or (st.get("activation_fn") if isinstance(st, dict) else None)
    name = name or getattr(config, "sbert_ce_default_activation_function", None)
    if not name and saved.get("model_type") == "CrossEncoder":
        name = "sigmoid" if int(getattr(config, "num_labels", 0)) == 1 else "identity"
    return str(name or "").rsplit(".", 1)[-1].lower()


def activated(model, logits):
    """A checkpoint's outputs as its predictions mean them: ``sigmoid(z)`` where the model carries
    ``output_activation = "sigmoid"`` (a regression cross-encoder saved by sentence-transformers
    with a Sigmoid: CrossEncoder.predict's value, the scale its targets were trained on), else
    ``z``. Set on the model by whoever loads it for that use (fit, export), never guessed here."""
    if getattr(model, "output_activation", None) == "sigmoid":
        import torch

        return torch.sigmoid(logits)
    return logits


def eos_pooled_logits(inner, input_ids, attention_mask):
    import torch

    if hasattr(inner, "transformer"):  # the T5 family: its decoder starts from the shifted ids
        hidden = inner.transformer(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=inner._shift_right(input_ids), use_cache=False,
        )[0]
    else:
        hidden = inner.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
    eos = input_ids.eq(int(inner.config.eos_token_id)).long()
    position = torch.cumsum(torch.ones_like(input_ids), 1) - 1
    last = (position * eos).argmax(1)  # each row's last <eos> (0 when it has none)
    state = hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
    return inner.classification_head(state)
