"""The corpus's script grammar: what the synthetic people say, driven by emotion and hesitancy.

A script is drawn from templates per ABAW expression class (so the words carry the emotion) and per sentiment;
hesitancy adds hedges ("i guess", "maybe", "kind of") and fillers ("um", "uh") to the words, or only pauses and a
slower, quieter voice (a cue the words do not show). :func:`grammar_sentences` enumerates what the grammar can say,
which is what the ASR's language model is built from (:mod:`facelab.affect.descriptors`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from facelab.metrics.abaw import ABAW_EXPRESSIONS

#: sentiment of the words for each ABAW class
SENTIMENT = {"neutral": "neutral", "other": "neutral", "happiness": "positive", "surprise": "positive",
             "anger": "negative", "disgust": "negative", "fear": "negative", "sadness": "negative"}
SLOTS = {
    "thing": ("plan", "movie", "food", "weather", "project", "music", "book", "result", "trip", "news"),
    "place": ("park", "market", "office", "beach", "museum", "station"),
    "good": ("great", "wonderful", "lovely", "nice", "fantastic"),
    "bad": ("awful", "terrible", "horrible", "bad", "dreadful"),
    "so": ("so", "really", "very"),
    "day": ("today", "yesterday", "this morning", "last week"),
}
TEMPLATES = {
    "happiness": ("i am {so} happy about the {thing}", "the {thing} was {good}", "i love the {thing}",
                  "we had a {good} time at the {place}"),
    "surprise": ("wow i did not expect the {thing}", "what a surprise the {thing} was {good}",
                 "oh the {thing} is here already"),
    "sadness": ("i feel {so} sad about the {thing}", "the {thing} was {bad}", "i miss the {place}",
                "nobody came to the {place} {day}"),
    "anger": ("i am {so} angry about the {thing}", "the {thing} is {bad} and unfair", "stop talking about the {thing}"),
    "disgust": ("the {thing} is disgusting", "that {thing} smells {bad}", "i can not stand the {thing}"),
    "fear": ("i am {so} scared of the {thing}", "something is wrong with the {thing}", "i am afraid of the {place}"),
    "neutral": ("the {thing} is on the table", "we went to the {place} {day}", "i will read about the {thing} later",
                "the {place} opens at nine"),
    "other": ("the {thing} is fine i suppose", "whatever you say about the {thing}", "the {place} is ok"),
}
HEDGES = ("i guess", "maybe", "kind of", "sort of", "i do not know", "i suppose", "well")
FILLERS = ("um", "uh")


@dataclass
class Script:
    """A drawn utterance: ``words`` (the transcript's tokens, fillers included), ``tokens`` (words and
    ``<pause:ms>`` markers, what espeak-ng renders), ``emotion`` (ABAW class of the words), ``sentiment``,
    ``n_hedges``, ``n_fillers``, ``n_pauses``."""

    words: list[str]
    tokens: list[str]
    emotion: str
    sentiment: str
    n_hedges: int = 0
    n_fillers: int = 0
    n_pauses: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def transcript(self) -> str:
        return " ".join(self.words)


def check_expression(name: str) -> str:
    """An ABAW class name (``"neutral"`` ... ``"other"``) or a clear ``ValueError``."""
    if not isinstance(name, str) or name not in ABAW_EXPRESSIONS:
        raise ValueError(f"unknown expression class {name!r}: expected one of {', '.join(ABAW_EXPRESSIONS)}")
    return name


def _fill(template: str, rng: np.random.Generator) -> str:
    out = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", values[int(rng.integers(len(values)))], 1)
    return out


def draw_script(emotion: str, rng: np.random.Generator, *, hedged: bool = False, pauses: bool = False,
                n_sentences: int | None = None) -> Script:
    """An utterance of one or two sentences for ``emotion``; ``hedged`` adds hedges and fillers to the words,
    ``pauses`` adds 2-3 silent pauses (400-900 ms) between words."""
    check_expression(emotion)
    n = int(n_sentences or rng.integers(1, 3))
    sents = [_fill(TEMPLATES[emotion][int(rng.integers(len(TEMPLATES[emotion])))], rng).split() for _ in range(n)]
    words = [w for s in sents for w in s]
    n_h = n_f = n_p = 0
    if hedged:
        hedge = HEDGES[int(rng.integers(len(HEDGES)))].split()
        words = hedge + words
        n_h += 1
        if rng.random() < 0.5 and len(sents) > 1:
            k = len(sents[0]) + len(hedge)
            words = words[:k] + HEDGES[int(rng.integers(len(HEDGES)))].split() + words[k:]
            n_h += 1
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(0, len(words)))
            words.insert(k, FILLERS[int(rng.integers(len(FILLERS)))])
            n_f += 1
    tokens = list(words)
    if pauses:
        n_p = int(rng.integers(2, 4))
        for k in sorted(rng.choice(np.arange(1, len(tokens)), size=min(n_p, len(tokens) - 1), replace=False))[::-1]:
            tokens.insert(int(k), f"<pause:{int(rng.integers(400, 901))}>")
    return Script(words, tokens, emotion, SENTIMENT[emotion], n_h, n_f, n_p)


def grammar_sentences(*, max_per_template: int = 60, seed: int = 0) -> list[str]:
    """Sentences the grammar can produce (all slot fillings, capped per template), plus hedged and filler variants:
    the text the ASR language model is estimated from."""
    rng = np.random.default_rng(seed)
    out = []
    for emotion, templates in TEMPLATES.items():
        for t in templates:
            slots = [s for s in SLOTS if "{" + s + "}" in t]
            combos = list(itertools.product(*(SLOTS[s] for s in slots)))
            if len(combos) > max_per_template:
                combos = [combos[i] for i in rng.choice(len(combos), max_per_template, replace=False)]
            for c in combos:
                s = t
                for name, v in zip(slots, c):
                    s = s.replace("{" + name + "}", v, 1)
                out.append(s)
    hedged = []
    for s in out[::3]:
        h = HEDGES[int(rng.integers(len(HEDGES)))]
        f = FILLERS[int(rng.integers(len(FILLERS)))]
        w = s.split()
        k = int(rng.integers(0, len(w)))
        hedged.append(" ".join([h] + w[:k] + [f] + w[k:]))
    return out + hedged + list(HEDGES) + list(FILLERS)
