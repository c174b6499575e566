"""Long texts: truncate, head+tail, and averaged overlapping windows."""

from __future__ import annotations

import numpy as np
import pytest

from stackscore.engine.scorer import Scorer
from stackscore.engine.tokenize import TextTokenizer
from stackscore.errors import StackscoreError
from stackscore.manifest import load_manifest
from stackscore.options import RunOptions

LONG = " ".join(f"word{i % 50} the plot was good but the ending was dull" for i in range(60))


@pytest.fixture(scope="module")
def bert_tok(artifact):
    spec = next(s for s in load_manifest(artifact).models if s.name == "bert")
    return artifact / spec.tokenizer, spec.max_length


def test_head_tail_keeps_both_ends(bert_tok):
    path, max_len = bert_tok
    full = TextTokenizer(path, 100_000)  # effectively untruncated reference
    body = full.encode([LONG]).flat[1:-1].tolist()
    ht = TextTokenizer(path, max_len, "head-tail").encode([LONG, "short one"])
    seq = ht.flat[: ht.lengths[0]].tolist()
    n = max_len - 2
    assert len(seq) == max_len and ht.truncated == 1
    assert seq[1 : 1 + n // 4] == body[: n // 4] and seq[1 + n // 4 : -1] == body[len(body) - (n - n // 4) :]
    assert seq[0] == full.encode(["x"]).flat[0] and seq[-1] == full.encode(["x"]).flat[-1]


def test_windows_cover_the_text_and_map_to_their_row(bert_tok):
    path, max_len = bert_tok
    enc = TextTokenizer(path, max_len, "windows", max_windows=8).encode(["tiny", LONG, "also tiny"])
    assert enc.owner[0] == 0 and enc.owner[-1] == 2 and (enc.owner == 1).sum() >= 2
    assert enc.lengths.max() <= max_len and int(enc.owner.max()) + 1 == 3 and enc.truncated == 1


def test_modes_agree_on_short_texts_and_windows_average(artifact, corpus_rows):
    short = [r["text"] for r in corpus_rows[:40]]
    scorers = {m: Scorer(artifact, RunOptions(long_text=m)) for m in ("truncate", "head-tail", "windows")}
    base = scorers["truncate"].score_texts(short).proba
    for m, s in scorers.items():
        np.testing.assert_allclose(s.score_texts(short).proba, base, atol=1e-5, err_msg=m)
    # One long row under windows = the mean of its windows' logits, scored one by one.
    sw = scorers["windows"]
    tok = sw.runners["bert"].tokenizer
    enc = tok.encode([LONG])
    per_window = []
    for i in range(len(enc.lengths)):
        ids = enc.flat[enc.offsets[i] : enc.offsets[i] + enc.lengths[i]][None, :]
        per_window.append(sw.runners["bert"].backends[0].run(ids, np.ones_like(ids)))
    got = sw.score_texts([LONG]).logits["bert"]
    np.testing.assert_allclose(got[0], np.mean(per_window, axis=0)[0], atol=1e-5)


def test_unknown_mode_is_a_clear_error(artifact):
    with pytest.raises(StackscoreError, match="--long-text must be one of"):
        Scorer(artifact, RunOptions(long_text="summarize"))


@pytest.mark.parametrize("model", ["bert", "roberta"])
def test_cutting_long_texts_at_a_word_boundary_keeps_every_id(artifact, corpus_rows, model, tmp_path):
    """Truncation's shortcut (tokenize only the first words of a long text) gives the ids the
    whole text gives: WordPiece and byte-level BPE, odd whitespace, punctuation, words that
    normalize to nothing (control characters), rows just over and far over the cut."""
    import json

    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == model)
    rng = np.random.default_rng(0)
    words = " ".join(r["text"] for r in corpus_rows[:200]).split() + ["\x00\x01", "naïve", "e-mail,", "(wow)", "x" * 150, "\u00a0", "a\nb", "c\td"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 400, size=300)]
    # words apart by runs of whitespace too: a cut inside a run would change a byte-level BPE's piece
    seps = [" ", "  ", " \n ", "\n", " \n\n  ", "\t ", " \u00a0 "]
    texts += ["".join(w + str(rng.choice(seps)) for w in rng.choice(words, size=int(n))) for n in rng.integers(5, 200, size=100)]
    texts += [" ".join(["\x00"] * 300) + " then real words", "word " * 20 + "y" * 5000]
    for max_length in (8, 16, spec.max_length):
        tok = TextTokenizer(artifact / spec.tokenizer, max_length)
        assert tok.word_cut == max_length * 8  # both test tokenizers split at whitespace first
        fast = tok.encode(texts)
        tok.word_cut = None
        whole = tok.encode(texts)
        np.testing.assert_array_equal(fast.lengths, whole.lengths)
        np.testing.assert_array_equal(fast.flat, whole.flat)
    # A tokenizer that does not split at whitespace first is never cut.
    raw = json.loads((artifact / spec.tokenizer).read_text())
    raw["pre_tokenizer"] = None
    other = tmp_path / f"no-pre-{model}.json"
    other.write_text(json.dumps(raw))
    assert TextTokenizer(other, 16).word_cut is None
    assert TextTokenizer(artifact / spec.tokenizer, 16, long_text="head-tail").word_cut is None  # needs the whole text


def test_the_word_cut_keeps_one_word_more_than_max_length():
    """Where the ``max_length + 1``-th word ends at a space within the character limit the cut is
    there (not at the limit's last space: ~490 of an IMDb review's characters for 64 words where
    65 are ~360); a word the limit splits, or too few words, leave the text whole; the cut
    text's ids are checked by the test above."""
    from stackscore.engine.tokenize import _cut_after_words

    text = "  " + " ".join(f"w{i}" for i in range(100))
    assert _cut_after_words(text, 512, 8) == "  " + " ".join(f"w{i}" for i in range(9))
    spaced = "a  b   c d e"
    assert _cut_after_words(spaced, 100, 3) == "a  b   c d"
    assert _cut_after_words("one two three four five", 19, 3) == "one two three four"
    # never inside a run of whitespace (a byte-level BPE makes one piece of it): the next lone space
    assert _cut_after_words("a b c \n\n  next word", 100, 3) == "a b c \n\n  next"
    assert _cut_after_words("a b c d\t e f g", 100, 3) == "a b c d\t e"
    for short, chars in (("one two three fourfourfour five", 16), ("one two three four five", 18), ("one two three four", 512), ("one two three", 512), ("x" * 600, 512), ("", 512)):
        assert _cut_after_words(short, chars, 3) is short  # the 4th word split by the limit, or no lone space after a 4th word


def test_word_cut_is_used_only_where_words_are_split_at_spaces_first():
    """The word cut relies on no token spanning a space: true for BERT, Whitespace, byte-level
    BPE with its regex, Metaspace with split; not for byte-level without the regex, Metaspace
    without split, or no pre-tokenizer at all."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from stackscore.engine.tokenize import _splits_on_whitespace

    def tok(pre):
        t = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        if pre is not None:
            t.pre_tokenizer = pre
        return t

    yes = [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.ByteLevel(), pre_tokenizers.Whitespace(),
           pre_tokenizers.Metaspace(), pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.WhitespaceSplit()])]
    no = [None, pre_tokenizers.ByteLevel(use_regex=False), pre_tokenizers.Metaspace(split=False), pre_tokenizers.Digits()]
    assert [_splits_on_whitespace(tok(p)) for p in yes] == [True] * len(yes)
    assert [_splits_on_whitespace(tok(p)) for p in no] == [False] * len(no)


def test_left_truncation_keeps_the_last_tokens_past_the_character_cap(tmp_path):
    """``truncation_side='left'``: the last max_length tokens, also for a text longer than the
    character cap (which then keeps the text's end, not its start)."""
    from stackscore.engine.tokenize import TextTokenizer
    from stackscore.train.models import train_wordpiece

    raw = train_wordpiece(["alpha beta gamma delta omega final words"] * 50, 100)
    raw.save(str(tmp_path / "t.json"))
    text = "alpha beta gamma " * 2000 + "omega final words"  # ~34,000 characters, cap 4,096
    left = TextTokenizer(tmp_path / "t.json", 8, truncation_side="left")
    right = TextTokenizer(tmp_path / "t.json", 8)
    assert len(text) > left.max_chars
    ids = left.encode([text]).flat.tolist()
    tail = raw.encode("omega final words", add_special_tokens=False).ids
    assert len(ids) == 8 and ids[-1 - len(tail) : -1] == tail  # ... omega final words [SEP]
    assert right.encode([text]).flat.tolist()[1:4] == raw.encode("alpha beta gamma", add_special_tokens=False).ids


def test_long_text_modes_place_special_tokens_where_the_template_does(tmp_path):
    """A "$A </s>" template (T5-style): head-tail and windows put </s> after the text, as
    truncate does, not in front of it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "hello": 3, "world": 4, "foo": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.save(str(tmp_path / "eos.json"))
    for mode in ("truncate", "head-tail", "windows"):
        assert TextTokenizer(tmp_path / "eos.json", 16, mode).encode(["hello world foo"]).flat.tolist() == [3, 4, 5, 1], mode
    long = TextTokenizer(tmp_path / "eos.json", 5, "head-tail").encode(["hello " * 10 + "world foo"]).flat.tolist()
    assert long == [3, 3, 4, 5, 1]  # one head token, three tail tokens, then </s>


def test_head_tail_takes_the_tail_from_the_end_of_a_text_past_the_character_cap(bert_tok):
    path, max_len = bert_tok
    tok = TextTokenizer(path, max_len, "head-tail")
    text = "opening words " + "the movie was long " * 4000 + "final verdict terrible"
    assert len(text) > tok.max_chars
    seq = tok.encode([text]).flat.tolist()
    end = TextTokenizer(path, 100_000).encode(["the movie was long final verdict terrible"]).flat[1:-1].tolist()
    start = TextTokenizer(path, 100_000).encode(["opening words"]).flat[1:-1].tolist()
    assert seq[-1 - len(end) : -1] == end and seq[1 : 1 + len(start)] == start


@pytest.mark.parametrize("model", ["bert", "roberta"])
def test_the_character_cap_never_empties_a_row(artifact, model):
    """A row whose first max_chars characters give (almost) no tokens: a scraped page's run of
    newlines, zero-width spaces, a long hex blob, trailing spaces under left truncation. The cap
    cut it there and the model scored [CLS] [SEP]; now the cap cuts at a space and a cut row
    that did not fill max_length is encoded as given. Ids equal the uncut text's."""
    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == model)
    review = "the acting was superb and the plot kept me guessing until the very end"
    rows = ["\n" * 5000 + review, " " * 5000 + review, "\u200b" * 5000 + review, "deadbeef" * 525 + " " + review,
            " " * 3990 + "x" * 200 + " " + review, (review + " ") * 400, review + " " * 9000]
    for side in ("right", "left"):
        for max_length in (16, 64):
            tok = TextTokenizer(artifact / spec.tokenizer, max_length, truncation_side=side)
            exact = TextTokenizer(artifact / spec.tokenizer, max_length, truncation_side=side)
            exact.max_chars, exact.word_cut = 10**9, None
            got, want = tok.encode(rows), exact.encode(rows)
            np.testing.assert_array_equal(got.lengths, want.lengths, err_msg=f"{side} {max_length}")
            np.testing.assert_array_equal(got.flat, want.flat, err_msg=f"{side} {max_length}")
            assert (got.lengths > 4).all()


def test_an_added_token_across_a_space_turns_the_word_cut_off(tmp_path):
    """The word cut assumes no token spans a space; an added phrase ("new york") does, and a cut
    inside it gave the split word's subwords."""
    from tokenizers import Tokenizer

    from stackscore.engine.tokenize import TextTokenizer as Tok
    from stackscore.train.models import train_wordpiece

    raw = train_wordpiece(["alpha beta gamma delta omega final words new york"] * 50, 100)
    raw.save(str(tmp_path / "plain.json"))
    assert Tok(tmp_path / "plain.json", 8).word_cut == 64
    phrase = Tokenizer.from_file(str(tmp_path / "plain.json"))
    phrase.add_tokens(["new york"])
    phrase.save(str(tmp_path / "phrase.json"))
    assert Tok(tmp_path / "phrase.json", 8).word_cut is None


@pytest.mark.parametrize("model", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["head-tail", "windows"])
def test_head_tail_and_windows_read_a_row_past_the_cap_as_its_whole_text(artifact, model, mode):
    """Past the character cap, windows read the cap's first characters and head-tail the cap's two
    halves. A run of newlines / zero-width spaces / spaces longer than that (a scraped page) left
    them nothing, or the middle of the review: WordPiece rows scored as [CLS] [SEP], a "tail" from
    the middle of the text. Now a cut part that gives fewer ids than the mode reads is encoded
    whole; the ids equal those of the text encoded uncut."""
    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == model)
    review = " ".join(f"the acting was superb number{i} and the plot kept me guessing" for i in range(60))
    tok = TextTokenizer(artifact / spec.tokenizer, 16, mode, max_windows=3)
    run = tok.max_chars + 500
    rows = ["\n" * run + review, review + " " * run, "\u200b" * run + review + "\n" * run, " " * run + "short review",
            review + " " + review * 40, "\n" * run + review * 40]
    exact = TextTokenizer(artifact / spec.tokenizer, 16, mode, max_windows=3)
    exact.max_chars = 10**9
    got, want = tok.encode(rows), exact.encode(rows)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_array_equal(got.flat, want.flat)
    if mode == "windows":
        np.testing.assert_array_equal(got.owner, want.owner)
    assert got.truncated == want.truncated == (5 if model == "bert" else 6)  # all but WordPiece's short review lose text


def test_windows_count_only_rows_they_do_not_cover_as_truncated_and_max_windows_sets_the_reach(bert_tok, tmp_path):
    path, _ = bert_tok
    body = TextTokenizer(path, 100_000).encode([LONG]).flat[1:-1]
    n = 14  # max_length 16 less [CLS] [SEP]
    for windows in (2, 8, 200):
        enc = TextTokenizer(path, 16, "windows", max_windows=windows).encode([LONG, "tiny"])
        reach = n + (windows - 1) * (n // 2)
        assert (enc.owner == 0).sum() == min(windows, -(-(len(body) - n) // (n // 2)) + 1)
        assert enc.truncated == int(len(body) > reach), windows
        k = (enc.owner == 0).sum() - 1
        last = enc.flat[enc.offsets[k] + 1 : enc.offsets[k] + enc.lengths[k] - 1]
        if len(body) <= reach:  # the last window ends with the text's last tokens
            np.testing.assert_array_equal(last, body[len(body) - len(last) :])
    with pytest.raises(StackscoreError, match="--max-windows"):
        RunOptions(max_windows=0)
    from stackscore.options import ScoreOptions, fingerprint_options

    assert "max_windows" not in fingerprint_options(ScoreOptions(run=RunOptions(long_text="windows")))
    assert "max_windows" not in fingerprint_options(ScoreOptions(run=RunOptions(max_windows=3)))  # truncate reads no windows
    assert fingerprint_options(ScoreOptions(run=RunOptions(long_text="windows", max_windows=3)))["max_windows"] == 3


def test_run_options_given_to_score_file_name_ensemble_load(artifact, tmp_path):
    from stackscore.api import Ensemble

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "good film"}\n')
    with pytest.raises(StackscoreError, match=r"long_text= sets how .* Ensemble.load\(artifact, long_text=") as e:
        Ensemble.load(artifact).score_file(src, tmp_path / "out.jsonl", long_text="windows")
    assert "\n" not in str(e.value) and not (tmp_path / "out.jsonl").exists()
    Ensemble.load(artifact, long_text="windows").score_file(src, tmp_path / "out.jsonl", long_text="windows", progress=False)  # as loaded: taken


@pytest.mark.parametrize("model", ["bert", "roberta"])
def test_a_row_of_exactly_max_length_tokens_is_not_counted_as_truncated(artifact, model):
    m = load_manifest(artifact)
    spec = next(s for s in m.models if s.name == model)
    path = artifact / spec.tokenizer
    full = TextTokenizer(path, 100_000)
    words = LONG.split()
    # a prefix of words with exactly 16 tokens, specials included (found by the untruncated tokenizer)
    k = next(k for k in range(1, len(words)) if full.encode([" ".join(words[:k])]).lengths[0] == 16)
    exact, over = " ".join(words[:k]), " ".join(words[: k + 1])
    tok = TextTokenizer(path, 16)
    assert tok.encode([exact]).lengths[0] == 16 and tok.encode([exact]).truncated == 0  # counted as cut before
    assert tok.encode([over, exact, "short", LONG]).truncated == 2
    assert tok.encode([(exact, LONG), ("a", "b")]).truncated == 1
