"""Tokenization stage: the fast tokenizer's batch encode, no padding (the batcher pads).

A window of texts becomes one flat int64 array of token ids plus per-sequence lengths (CSR
layout), so the batcher can sort rows and build padded batches with numpy alone, without
touching Python lists per row. Models that share a tokenizer file (same sha256) share one
encoding.

Sentence pairs: ``encode`` also takes ``(text, text_pair)`` tuples. They are encoded with the
tokenizer's own pair template and truncated longest-first (the longer side loses tokens first,
as transformers does by default), and ``Encoded.types`` carries the token type ids (0 for the
first text, 1 for the second) for graphs that take ``token_type_ids``. Long-text modes other than
``truncate`` apply to single texts only.

Long texts (``long_text``):
- ``truncate`` (default): the first ``max_length`` tokens;
- ``head-tail``: the first quarter and the last three quarters of the budget (reviews often
  conclude at the end; head+tail is the known-good recipe for IMDb-length text);
- ``windows``: overlapping windows (stride half a window, at most ``max_windows``), each scored,
  logits averaged per row: ``Encoded.owner`` maps every sequence to its row. Text past the last
  window is not read (the row counts as truncated; ``--max-windows`` sets the reach).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import ArtifactError, StackscoreError
from ..options import LONG_TEXT_MODES


@dataclass
class Encoded:
    """Token ids of ``len(lengths)`` sequences: sequence i is ``flat[offsets[i]:offsets[i] + lengths[i]]``."""

    flat: np.ndarray  # int32 (vocabularies are far below 2**31; batches are built as int64)
    lengths: np.ndarray  # int64
    offsets: np.ndarray  # int64
    max_length: int
    owner: np.ndarray | None = None  # row of each sequence (windows mode); None = one per row
    n_truncated: int | None = None
    types: np.ndarray | None = None  # int8 token type ids, aligned with ``flat`` (sentence pairs)

    @property
    def truncated(self) -> int:
        """Rows the model did not read in full: longer than ``max_length`` tokens (truncate),
        a dropped middle (head-tail), text past the last window (windows). Without a count from
        the tokenizer, rows that fill ``max_length`` (an upper bound)."""
        if self.n_truncated is not None:
            return self.n_truncated
        return int(np.sum(self.lengths >= self.max_length))


WHITESPACE_PRE_TOKENIZERS = {"BertPreTokenizer", "ByteLevel", "Whitespace", "WhitespaceSplit"}


def _splits_on_whitespace(tok) -> bool:
    """Whether a loaded tokenizer splits text into words at whitespace before anything else sees
    them (so no token spans two whitespace-separated words). Its pre-tokenizer's own JSON is read
    from the loaded object (the file is not read again). ByteLevel splits at spaces only with its
    regex on; Metaspace only with ``split``."""
    import json

    try:
        pre = json.loads(tok.pre_tokenizer.__getstate__()) if tok.pre_tokenizer is not None else {}
    except (AttributeError, TypeError, ValueError):
        return False
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return any(
        isinstance(p, dict) and (
            p.get("type") in WHITESPACE_PRE_TOKENIZERS - {"ByteLevel"}
            or (p.get("type") == "ByteLevel" and p.get("use_regex", True))
            or (p.get("type") == "Metaspace" and p.get("split", True))
        )
        for p in parts
    )


@functools.lru_cache(maxsize=None)
def _words(n: int) -> re.Pattern:
    """``n`` space-separated words from a text's start (leading spaces included). Words and the
    spaces between them are disjoint classes, so a match never backtracks into a word."""
    return re.compile(r" *[^ ]+(?: +[^ ]+){%d}" % (n - 1))


def _cut_after_words(text: str, chars: int, words: int) -> str:
    """``text`` up to the end of its ``words + 1``-th space-separated word, or of a later one,
    where a lone space (no other whitespace either side) follows it within its first ``chars``
    characters; else ``text`` itself (the same object).

    ``words + 1`` words give at least that many tokens where each gives one, so the cut text
    still overflows ``max_length`` (the caller checks, and encodes the text as given if not).
    The lone space: a byte-level BPE makes one piece of a run of whitespace, which a cut inside
    the run would change ("c \\n\\n  next" cut after "\\n\\n"). Cutting at the last space within
    ``chars`` instead kept ~490 of an IMDb review's characters for 64 words where 65 are ~360,
    and tokenizing is linear in the characters."""
    m = _words(words + 1).match(text, 0, chars)
    if m is None:
        return text
    end, stop = m.end(), min(len(text) - 1, chars)
    while 0 < end < stop:
        if text[end] == " " and not text[end - 1].isspace() and not text[end + 1].isspace():
            return text[:end]
        end = text.find(" ", end + 1, stop)
    return text


def _template_ends(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer's single-text template puts before and after the text:
    ([CLS], [SEP]) for BERT, (<s>, </s>) for RoBERTa, ([], </s>) for a "$A </s>" template,
    ([], <sep> <cls>) for XLNet's. Found by where a probe word's ids sit in its encoding with
    special tokens; a tokenizer whose probe gives no ids falls back to the first special token
    before, the rest after."""
    specials = tok.encode("").ids
    for probe in ("a", "the", "x", "0"):
        body = tok.encode(probe, add_special_tokens=False).ids
        full = tok.encode(probe).ids
        if body and len(full) == len(body) + len(specials):
            for k in range(len(full) - len(body) + 1):
                if full[k : k + len(body)] == body:
                    return full[:k], full[k + len(body) :]
    return specials[:1], specials[1:]


def _csr(seqs_lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(seqs_lengths), dtype=np.int64)
    if len(seqs_lengths) > 1:
        np.cumsum(seqs_lengths[:-1], out=offsets[1:])
    return offsets


SLICE = 1024  # rows per encode_batch call (bounds the tokenizer's transient memory)
#: Sentence pairs with a text longer than ``max_length * PAIR_SIDES_CHARS`` characters are encoded
#: side by side (``_encode_pairs``), each side up to ``PAIR_EXACT_CHARS`` characters: the pair
#: encoder's longest-first truncation builds an overflowing encoding for every pair of windows
#: of the two texts (two 64,000-character texts at max_length 128: 3.7 GB for one row), and a
#: character cap instead would change which text is longer, so which one gets the odd token.
PAIR_SIDES_CHARS = 8
PAIR_EXACT_CHARS = 1_000_000


class TextTokenizer:
    """Wraps one ``tokenizer.json``: truncation at ``max_length`` (or a long-text mode), no padding."""

    def __init__(self, path: str | Path, max_length: int, long_text: str = "truncate", max_windows: int = 8, truncation_side: str = "right", split_special_tokens: bool = False):
        if long_text not in LONG_TEXT_MODES:
            raise StackscoreError(f"--long-text must be one of {', '.join(LONG_TEXT_MODES)}, not '{long_text}'")
        if truncation_side not in ("right", "left"):
            raise ArtifactError(f"{path}: truncation side must be 'right' or 'left', not {truncation_side!r}")
        self.truncation_side = truncation_side
        self.path = Path(path)
        self.max_length = int(max_length)
        self.long_text = long_text
        self.max_windows = max_windows
        try:
            self.tok = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise ArtifactError(f"{self.path}: not a valid tokenizer.json ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        self.tok.no_padding()
        # Not kept in tokenizer.json: the manifest carries it (ModelSpec.split_special_tokens).
        self.tok.encode_special_tokens = bool(split_special_tokens)
        if long_text == "truncate":
            # ``left``: the last max_length tokens (pairs: longest-first, each side from its start)
            self.tok.enable_truncation(self.max_length, direction=truncation_side)
        else:
            self.tok.no_truncation()
            self.prefix, self.suffix = _template_ends(self.tok)  # e.g. [CLS] + [SEP], <s> + </s>, [] + </s>
            self.body = self.max_length - len(self.prefix) - len(self.suffix)
        self._encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        # A 10 MB row would be normalized and split in full before truncation. Real text has far
        # more than max_length tokens in max_length * 64 characters, so the cut keeps the ids
        # (a row of nothing but whitespace for that long is the exception: documented).
        windows = 1 if long_text == "truncate" else max_windows
        self.max_chars = max(4096, self.max_length * 64 * windows)
        # Truncation still tokenizes the whole text (an IMDb review: ~1,300 characters for 64
        # tokens, 0.4 s per 2,000 rows per tokenizer). ``word_cut``: where words are split at
        # spaces before subwords (BERT, byte-level BPE, Metaspace, Whitespace) and normalized
        # character by character, a text with more than ``max_length`` words within
        # ``max_length * 8`` characters is cut at a space after them. Tokens never span a
        # space, so the cut text's tokens are the full text's up to the cut; if they still
        # overflow ``max_length`` (checked per row, ``Encoding.overflowing``), the first
        # ``max_length`` are the same ids; if not, the row is encoded whole.
        # (an added token whose text holds a space, "new york" say, is a token across a space)
        spans_space = any(any(c.isspace() for c in t.content) for t in self.tok.get_added_tokens_decoder().values())
        self.word_cut = self.max_length * 8 if long_text == "truncate" and truncation_side == "right" and _splits_on_whitespace(self.tok) and not spans_space else None
        self.truncation_side = truncation_side
        self._sides = None  # the tokenizer without truncation, for long pairs (built on first use)
        self.keep_end = long_text == "truncate" and truncation_side == "left"  # the character cap keeps the end

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @property
    def max_id(self) -> int:
        """The largest token id this tokenizer can emit: what must fit the model's embedding.

        The vocabulary *count* is not enough: ids need not be dense, and one id past the
        embedding makes ONNX Runtime fail in Gather and OpenVINO read another row silently.
        """
        return max(self.tok.get_vocab(with_added_tokens=True).values(), default=-1)

    def _capped(self, t: str) -> str:
        """``t`` within ``max_chars`` characters: truncation's side of it, cut at a space (a word
        cut in two would give other subwords than the whole word)."""
        cap = self.max_chars
        if len(t) <= cap:
            return t
        if self.keep_end:
            k = t.find(" ", len(t) - cap)
            return t[k + 1 :] if k >= 0 else t[-cap:]
        k = t.rfind(" ", 0, cap)
        return t[:k] if k > 0 else t[:cap]

    def encode(self, texts: list[str] | list[tuple[str, str]]) -> Encoded:
        pairs = bool(texts) and isinstance(texts[0], tuple)
        if pairs and self.long_text != "truncate":
            raise StackscoreError(f"--long-text {self.long_text} applies to single texts; sentence pairs are truncated longest-first")
        if self.long_text != "truncate":
            return self._encode_long(list(texts))
        full: dict[int, str] = {}  # single texts cut (the cap, the word cut) -> the text as given
        sides: dict[int, tuple[str, str]] = {}  # long pairs: encoded side by side
        if pairs:
            long_pair = self.max_length * PAIR_SIDES_CHARS
            sides = {i: (a[:PAIR_EXACT_CHARS], b[:PAIR_EXACT_CHARS]) for i, (a, b) in enumerate(texts) if len(a) > long_pair or len(b) > long_pair}
            texts = [("", "") if i in sides else t for i, t in enumerate(texts)]
        else:
            texts = list(texts)
            for i, t in enumerate(texts):
                c = self._capped(t)
                if self.word_cut is not None and len(c) > self.word_cut:
                    c = _cut_after_words(c, self.word_cut, self.max_length)
                if c is not t:
                    full[i] = t
                    texts[i] = c
        # Slices of SLICE rows: the Encoding objects (tokens, offsets, overflow) cost ~100x the
        # ids they carry, so they are turned into numpy and freed a slice at a time; the
        # window (the sorting unit) can then be large without a large transient peak.
        lengths_parts, flat_parts, type_parts = [], [], []
        cut = 0  # rows longer than max_length: a row of exactly max_length tokens lost none
        for s in range(0, len(texts), SLICE):
            encs = self._encode(texts[s : s + SLICE], add_special_tokens=True)
            for i in [i for i in full if s <= i < s + SLICE and not encs[i - s].overflowing]:
                # The cut text did not overflow max_length (whitespace, words that gave no or few
                # tokens before the cut): its ids might stop short of the full text's, so the
                # text as given is encoded instead (a row of 5,000 newlines and then a review
                # was scored as [CLS] [SEP]).
                encs[i - s] = self._encode([full[i]], add_special_tokens=True)[0]
            for i, enc in self._encode_pairs({i: p for i, p in sides.items() if s <= i < s + SLICE}).items():
                encs[i - s] = enc
            lens = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
            # the full rows only (few): overflow left over, or a long pair (> max_length * 8 characters a side)
            cut += sum(1 for i in np.flatnonzero(lens >= self.max_length) if encs[i].overflowing or (s + i) in sides)
            flat_parts.append(np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int32, count=int(lens.sum())))
            if pairs:
                type_parts.append(np.fromiter(chain.from_iterable(e.type_ids for e in encs), dtype=np.int8, count=int(lens.sum())))
            lengths_parts.append(lens)
            del encs
        lengths = np.concatenate(lengths_parts) if lengths_parts else np.zeros(0, dtype=np.int64)
        flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, dtype=np.int32)
        types = (np.concatenate(type_parts) if type_parts else np.zeros(0, dtype=np.int8)) if pairs else None
        return Encoded(flat, lengths, _csr(lengths), self.max_length, types=types, n_truncated=cut)

    def _encode_pairs(self, rows: dict[int, tuple[str, str]]) -> dict:
        """Long pairs, as the pair encoder's longest-first truncation would give them, at a cost
        linear in their length: each side encoded alone without truncation, cut to at most
        ``max_length`` tokens, one more for the strictly longer side (so each side still has
        more than its final share and the longer stays the longer, which decides the odd token),
        then ``post_process`` applies the truncation and the pair template."""
        if not rows:
            return {}
        if self._sides is None:
            self._sides = Tokenizer.from_str(self.tok.to_str())
            self._sides.no_truncation()
            self._sides.no_padding()
            self._sides.encode_special_tokens = self.tok.encode_special_tokens
        order = list(rows)
        firsts = self._sides.encode_batch([rows[i][0] for i in order], add_special_tokens=False)
        seconds = self._sides.encode_batch([rows[i][1] for i in order], add_special_tokens=False)
        m, side, out = self.max_length, self.truncation_side, {}
        for i, a, b in zip(order, firsts, seconds):
            la, lb = len(a), len(b)
            a.truncate(min(la, m + (la > lb)), 0, side)
            b.truncate(min(lb, m + (lb > la)), 0, side)
            out[i] = self.tok.post_process(a, b, add_special_tokens=True)
        return out

    @property
    def stride(self) -> int:
        """Windows mode: content tokens between two windows' starts (half a window)."""
        return max(1, self.body // 2)

    @property
    def reach(self) -> int:
        """Windows mode: content tokens the ``max_windows`` windows read from a row's start."""
        return self.body + (self.max_windows - 1) * self.stride

    def _long_bodies(self, texts: list[str]) -> tuple[list[list[int]], set[int]]:
        """Each text's content ids as far as its mode reads them: whole below the character cap;
        past it, ``windows`` reads the text's start (cut at a space: its ids are the whole
        text's first) and ``head-tail`` its two ends, each cut at a space and encoded apart (the
        tail's ids are the whole text's last). Where the cut part gave fewer ids than the mode
        uses (thousands of newlines, zero-width or other characters that give no token next to
        the cut), the text is encoded whole instead: a row that began or ended with such a run
        was scored on the middle of its text, or as an empty row. Also returns the rows whose
        ids stop at the cap (the text goes on past them)."""
        cap, n = self.max_chars, self.body
        head = n // 4
        need = n if self.long_text == "head-tail" else self.reach
        ends = self.long_text == "head-tail"  # its capped rows are read at both ends below
        bodies = [e.ids for e in self._encode([t if len(t) <= cap else "" if ends else self._capped(t) for t in texts], add_special_tokens=False)]
        partial: set[int] = set()
        for i in [i for i, t in enumerate(texts) if len(t) > cap]:
            t = texts[i]
            if self.long_text == "head-tail":
                k = t.rfind(" ", 0, cap // 2)
                j = t.find(" ", len(t) - cap // 2)
                a, b = self._encode([t[: k if k > 0 else cap // 2], t[j if j >= 0 else len(t) - cap // 2 :]], add_special_tokens=False)
                if len(a) >= head and len(b) >= n - head:  # both ends' ids are the whole text's
                    bodies[i] = a.ids[:head] + b.ids[len(b) - (n - head) :]
                    partial.add(i)
                    continue
            elif len(bodies[i]) >= need:  # every window is filled from the text's true start
                partial.add(i)
                continue
            bodies[i] = self._encode([t], add_special_tokens=False)[0].ids
        return bodies, partial

    def _encode_long(self, texts: list[str]) -> Encoded:
        """``head-tail`` or ``windows``. ``n_truncated``: rows the model does not see in full
        (head-tail: a middle dropped; windows: text past the last window, ``max_windows`` of
        them at half a window's stride, so about ``(max_windows + 1) / 2 * max_length`` tokens)."""
        pre, suf, n = self.prefix, self.suffix, self.body
        stride, reach = self.stride, self.reach
        seqs: list[list[int]] = []
        owner: list[int] = []
        cut = 0
        bodies, partial = self._long_bodies(texts)
        for row, body in enumerate(bodies):
            if len(body) <= n and row not in partial:
                seqs.append(pre + body + suf)
                owner.append(row)
            elif self.long_text == "head-tail":
                cut += 1
                head = n // 4  # (a row read at both ends past the cap has exactly n ids: kept as they are)
                seqs.append(pre + body[:head] + body[len(body) - (n - head):] + suf)
                owner.append(row)
            else:
                cut += len(body) > reach or row in partial
                starts = list(range(0, len(body) - n + stride, stride))[: self.max_windows]
                for s in starts:
                    seqs.append(pre + body[s : s + n] + suf)
                    owner.append(row)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int32, count=int(lengths.sum()))
        own = np.asarray(owner, dtype=np.int64) if self.long_text == "windows" else None
        return Encoded(flat, lengths, _csr(lengths), self.max_length, owner=own, n_truncated=cut)
