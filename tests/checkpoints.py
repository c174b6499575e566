"""Tiny fine-tuned-looking checkpoints, saved the way teams save theirs (``save_pretrained``).

Random weights are enough: a checkpoint used as saved must be scored exactly as PyTorch scores
it, so every test compares the engine with the checkpoint's own predictions. Tokenizers are
trained here: a WordPiece ``vocab.txt`` (slow-only BERT), SentencePiece models (ALBERT, BigBird,
XLM-R, CamemBERT, DeBERTa-v2: converted to ``tokenizer.json`` at export), or a fast
``tokenizer.json`` for the rest.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=130)
SEQ2SEQ = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=130)

# arch -> (config class, model class, tokenizer kind, extra config)
ARCHS = {
    "bert": ("BertConfig", "BertForSequenceClassification", "vocab.txt", {}),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", "bpe", {"type_vocab_size": 1}),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification", "wordpiece", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
    "albert": ("AlbertConfig", "AlbertForSequenceClassification", "spm:AlbertTokenizer:spiece.model", {"embedding_size": 16}),
    "electra": ("ElectraConfig", "ElectraForSequenceClassification", "wordpiece", {"embedding_size": 16}),
    "deberta": ("DebertaConfig", "DebertaForSequenceClassification", "wordpiece", {}),
    "deberta-v2": ("DebertaV2Config", "DebertaV2ForSequenceClassification", "spm:DebertaV2Tokenizer:spm.model", {}),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaForSequenceClassification", "spm:XLMRobertaTokenizer:sentencepiece.bpe.model", {"type_vocab_size": 1}),
    "mpnet": ("MPNetConfig", "MPNetForSequenceClassification", "wordpiece", {}),
    "camembert": ("CamembertConfig", "CamembertForSequenceClassification", "spm:CamembertTokenizer:sentencepiece.bpe.model", {"type_vocab_size": 1}),
    "modernbert": ("ModernBertConfig", "ModernBertForSequenceClassification", "wordpiece", {"global_attn_every_n_layers": 1, "local_attention": 16}),
    "big_bird": ("BigBirdConfig", "BigBirdForSequenceClassification", "spm:BigBirdTokenizer:spiece.model", {"block_size": 16, "num_random_blocks": 1}),
    "longformer": ("LongformerConfig", "LongformerForSequenceClassification", "bpe", {"attention_window": 4}),
    "funnel": ("FunnelConfig", "FunnelForSequenceClassification", "wordpiece", {"block_sizes": [1, 1], "d_model": 32, "n_head": 2, "d_head": 16, "d_inner": 64}),
    "xlnet": ("XLNetConfig", "XLNetForSequenceClassification", "bpe", {"d_model": 32, "n_layer": 2, "n_head": 2, "d_inner": 64}),
    # Decoders that find each row's last token by the pad id.
    "gpt2": ("GPT2Config", "GPT2ForSequenceClassification", "bpe", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 130}),
    "llama": ("LlamaConfig", "LlamaForSequenceClassification", "bpe", {"num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", "Qwen2ForSequenceClassification", "bpe", {"num_key_value_heads": 2}),
    "opt": ("OPTConfig", "OPTForSequenceClassification", "bpe", {"ffn_dim": 64, "word_embed_proj_dim": 32}),
    # Encoder-decoders whose head reads the last <eos>.
    "bart": ("BartConfig", "BartForSequenceClassification", "bpe", {**SEQ2SEQ}),
    "mbart": ("MBartConfig", "MBartForSequenceClassification", "bpe", {**SEQ2SEQ}),
    "t5": ("T5Config", "T5ForSequenceClassification", "bpe", {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 2, "decoder_start_token_id": 1}),
    # BART-shaped head: refused by a trace of transformers' own <eos> selection before it was eos-pooled
    "bigbird_pegasus": ("BigBirdPegasusConfig", "BigBirdPegasusForSequenceClassification", "bpe", {**SEQ2SEQ, "attention_type": "original_full"}),
    # its embedding (QuantEmbedding) has no num_embeddings: fit crashed checking the tokenizer's ids
    "ibert": ("IBertConfig", "IBertForSequenceClassification", "bpe", {"type_vocab_size": 1}),
}
# The keys a config class does not take (they name their sizes differently).
OWN_SIZES = {"distilbert", "funnel", "xlnet", "gpt2", "bart", "mbart", "t5", "bigbird_pegasus"}
REFUSED = ("longformer", "funnel", "xlnet")


@lru_cache(maxsize=1)
def corpus_texts() -> tuple[str, ...]:
    from stackscore.train.corpus import generate

    return tuple(e.text for e in generate(300, seed=11))


def _wordpiece(path: Path, fast: bool):
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    from stackscore.train.models import train_wordpiece

    raw = train_wordpiece(list(corpus_texts()), 300)
    if not fast:  # only vocab.txt + tokenizer_config.json: transformers converts it
        vocab = sorted(raw.get_vocab().items(), key=lambda kv: kv[1])
        path.mkdir(parents=True, exist_ok=True)
        (path / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab))
        (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64}))
        return BertTokenizer.from_pretrained(str(path))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=64,
    )
    tok.save_pretrained(str(path))
    return tok


def _bpe(path: Path):
    from transformers import PreTrainedTokenizerFast

    from stackscore.train.models import train_byte_bpe

    raw = train_byte_bpe(list(corpus_texts()), 400)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=64,
    )
    tok.save_pretrained(str(path))
    return tok


def _spm(path: Path, cls_name: str, filename: str):
    import sentencepiece as spm
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    corpus = path / "corpus.txt"
    corpus.write_text("\n".join(corpus_texts()))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path / "sp"), vocab_size=200, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2,
    )
    (path / "sp.model").rename(path / filename)
    (path / "sp.vocab").unlink()
    corpus.unlink()
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls_name, "model_max_length": 64}))
    return getattr(transformers, cls_name).from_pretrained(str(path))


def make_checkpoint(path: Path, arch: str = "bert", id2label: dict[int, str] | None = None, seed: int = 0, **overrides) -> Path:
    """A saved ``<Arch>ForSequenceClassification`` checkpoint with its tokenizer files in ``path``."""
    import torch
    import transformers

    cfg_cls, model_cls, tok_kind, extra = ARCHS[arch]
    if tok_kind == "vocab.txt":
        tok = _wordpiece(path, fast=False)
    elif tok_kind == "wordpiece":
        tok = _wordpiece(path, fast=True)
    elif tok_kind == "bpe":
        tok = _bpe(path)
    else:
        _, cls_name, filename = tok_kind.split(":")
        tok = _spm(path, cls_name, filename)
    id2label = id2label or {0: "negative", 1: "positive"}
    size = {} if arch in OWN_SIZES else dict(SMALL)
    specials = {k: getattr(tok, f"{k}_id") for k in ("pad_token", "bos_token", "eos_token", "cls_token", "sep_token") if getattr(tok, f"{k}_id", None) is not None}
    # A wide initialisation (0.5, not transformers' 0.02): outputs that visibly depend on every
    # token, position and type, so a wrong id, truncation or attention pattern cannot pass a
    # 1e-4 parity check by accident (at 0.02 the logits barely move from row to row).
    config = getattr(transformers, cfg_cls)(
        vocab_size=len(tok), num_labels=len(id2label), id2label=dict(id2label), label2id={v: k for k, v in id2label.items()},
        **{k.replace("_token", "_token_id"): v for k, v in specials.items()}, **size,
        **{"initializer_range": 0.5, **extra, **overrides},
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(str(path))
    return path
