"""The workflow stackscore's checkpoint support exists for, end to end on a CPU in about a minute.

A team fine-tunes two different classifiers with ``transformers.Trainer`` and saves them
(``Trainer.save_model`` + the tokenizer), each with its own label order, as teams do. Then
``examples/byo/stack.toml`` stacks them *as saved* (``finetune = false``) on a validation split:

    python examples/byo/train_two.py --out byo-run          # two checkpoints + data splits
    stackscore fit examples/byo/stack.toml --out byo-run/fit
    stackscore score byo-run/fit/artifact byo-run/data/test.jsonl -o byo-run/predictions.jsonl

The models are tiny and start from configs (no hub); ``--data`` takes a JSONL file with
``text`` and ``label`` (e.g. ``../shared/data/rt-polarity/train.jsonl``), else a corpus is generated.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def load_rows(data: str | None, rows: int) -> list[dict]:
    if data:
        with open(data) as fh:
            out = [json.loads(line) for line in fh]
        random.Random(0).shuffle(out)
        return [{"text": r["text"], "label": str(r["label"])} for r in out[:rows]]
    from stackscore.train.corpus import generate

    return [{"text": e.text, "label": e.label} for e in generate(rows, seed=1)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i, r in enumerate(rows):
            fh.write(json.dumps({"id": i, **r}) + "\n")


def build(arch: str, texts: list[str], id2label: dict[int, str], max_length: int):
    """A small classifier from a config, with a tokenizer trained on the training texts."""
    import transformers
    from transformers import PreTrainedTokenizerFast

    from stackscore.train.models import train_byte_bpe, train_wordpiece

    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if arch == "bert":
        tok = PreTrainedTokenizerFast(tokenizer_object=train_wordpiece(texts, 2000), unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length)
        config = transformers.BertConfig(vocab_size=len(tok), max_position_embeddings=max_length, pad_token_id=tok.pad_token_id, **size)
        return transformers.BertForSequenceClassification(config), tok
    tok = PreTrainedTokenizerFast(tokenizer_object=train_byte_bpe(texts, 2000), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=max_length)
    config = transformers.RobertaConfig(vocab_size=len(tok), max_position_embeddings=max_length + 2, type_vocab_size=1,
                                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **size)
    return transformers.RobertaForSequenceClassification(config), tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("byo-run"))
    ap.add_argument("--data", help="JSONL with text and label (default: a generated corpus)")
    ap.add_argument("--rows", type=int, default=2400)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()

    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    rows = load_rows(args.data, args.rows)
    n = len(rows)
    train, val, test = rows[: int(n * 0.7)], rows[int(n * 0.7) : int(n * 0.85)], rows[int(n * 0.85) :]
    for name, part in (("train", train), ("validation", val), ("test", test)):
        write_jsonl(args.out / "data" / f"{name}.jsonl", part)
    labels = sorted({r["label"] for r in rows})
    texts = [r["text"] for r in train]
    # Two teams, two label orders: the second model's id2label is reversed. stackscore maps by name.
    for arch, id2label in (("bert", dict(enumerate(labels))), ("roberta", dict(enumerate(reversed(labels))))):
        torch.manual_seed(0)
        model, tok = build(arch, texts, id2label, args.max_length)
        label2id = {v: k for k, v in id2label.items()}
        enc = tok(texts, truncation=True, max_length=args.max_length)
        dataset = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label2id[r["label"]]} for i, r in enumerate(train)]
        out = args.out / "models" / arch
        trainer = Trainer(
            model=model,
            args=TrainingArguments(output_dir=str(args.out / "trainer" / arch), num_train_epochs=args.epochs, per_device_train_batch_size=32,
                                   learning_rate=3e-3, warmup_steps=0.1, save_strategy="no", report_to=[], logging_strategy="no",
                                   use_cpu=True, seed=0, disable_tqdm=True),
            train_dataset=dataset,
            data_collator=DataCollatorWithPadding(tok),
        )
        trainer.train()
        trainer.save_model(str(out))
        tok.save_pretrained(str(out))
        print(f"saved {arch} to {out} (id2label {id2label})")


if __name__ == "__main__":
    main()
