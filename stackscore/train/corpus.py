"""The demo corpus: templated movie-review sentiment, generated here (no third-party text).

It is built to need a model rather than a keyword count: negation flips a clause ("not good"),
intensifiers and hedges change its weight, a clause after "but" outweighs the one before it,
neutral filler sentences dilute the signal, typos and casing noise change the surface form, and a
small fraction of labels is flipped. Lengths vary from a few words to long multi-sentence rows,
so the batcher has realistic work to do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LABELS = ["negative", "positive"]

SUBJECTS = [
    "the movie", "this film", "the plot", "the acting", "the soundtrack", "the cast", "the script",
    "the ending", "the director's latest", "the cinematography", "the dialogue", "the pacing",
    "the lead performance", "the special effects", "the story", "this sequel", "the score",
    "the editing", "the screenplay", "the characters",
]
POSITIVE = [
    "good", "great", "excellent", "wonderful", "brilliant", "charming", "moving", "funny",
    "clever", "gripping", "beautiful", "delightful", "superb", "memorable", "engaging", "fresh",
]
NEGATIVE = [
    "bad", "awful", "terrible", "boring", "dull", "clumsy", "tedious", "predictable", "weak",
    "messy", "forgettable", "painful", "bland", "lifeless", "shallow", "annoying",
]
INTENSIFIERS = ["very", "really", "extremely", "incredibly", "truly", "remarkably", "so"]
HEDGES = ["somewhat", "a bit", "slightly", "fairly", "kind of"]
NEGATIONS = ["not", "never", "hardly", "not at all", "far from"]
VERBS = ["was", "is", "felt", "seemed", "turned out"]
FILLERS = [
    "I saw it on a rainy sunday with my cousin.",
    "The theater was half empty.",
    "It runs a little over two hours.",
    "My friends had told me about it last week.",
    "We bought popcorn before it started.",
    "It is based on a novel I have not read.",
    "The trailer came out last spring.",
    "I watched it again at home later.",
]
OPENERS = ["Honestly,", "Overall,", "In the end,", "To be fair,", "Frankly,", "", "", ""]


@dataclass
class Example:
    id: str
    text: str
    label: str


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _clause(rng: random.Random) -> tuple[str, float]:
    """One opinion clause and its signed strength."""
    positive = rng.random() < 0.5
    adj = rng.choice(POSITIVE if positive else NEGATIVE)
    strength = 1.0
    words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    if rng.random() < 0.3:
        neg = rng.choice(NEGATIONS)
        words.append(neg)
        positive = not positive
        strength = 0.8
    r = rng.random()
    if r < 0.3:
        words.append(rng.choice(INTENSIFIERS))
        strength *= 1.5
    elif r < 0.45:
        words.append(rng.choice(HEDGES))
        strength *= 0.5
    words.append(adj)
    return " ".join(words), (strength if positive else -strength)


def make_example(rng: random.Random, idx: int, noise: float = 0.03) -> Example:
    while True:
        parts: list[str] = []
        score = 0.0
        n_clauses = rng.choice([1, 1, 1, 2, 2])
        for c in range(n_clauses):
            text, s = _clause(rng)
            if c > 0 and rng.random() < 0.7:
                parts[-1] = parts[-1].rstrip(".") + ", but " + text + "."
                score = 0.5 * score + 2.0 * s  # the clause after "but" dominates
            else:
                parts.append(f"{rng.choice(OPENERS)} {text}.".strip().capitalize())
                score += s
            if rng.random() < 0.35:
                parts.append(" ".join(rng.choice(FILLERS) for _ in range(rng.choice([1, 1, 2, 3, 6]))))
        if abs(score) > 1e-9:
            break
    if rng.random() < 0.1:
        rng.shuffle(parts)
    text = " ".join(parts)
    words = text.split()
    if rng.random() < 0.3:  # surface noise: typos and shouting
        words = [_typo(w, rng) if rng.random() < 0.08 else w for w in words]
    if rng.random() < 0.05:
        words = [w.upper() for w in words]
    if rng.random() < 0.1:
        words.append(rng.choice(["!!", ":)", ":(", "...", "10/10", "meh"]))
    label = 1 if score > 0 else 0
    if rng.random() < noise:
        label = 1 - label
    return Example(id=f"r{idx:07d}", text=" ".join(words), label=LABELS[label])


def generate(n: int, seed: int = 0, start: int = 0, noise: float = 0.03) -> list[Example]:
    rng = random.Random(seed)
    return [make_example(rng, start + i, noise) for i in range(n)]


def write_jsonl(path, examples: list[Example]) -> None:
    import orjson

    with open(path, "wb") as fh:
        for e in examples:
            fh.write(orjson.dumps({"id": e.id, "text": e.text, "label": e.label}) + b"\n")
