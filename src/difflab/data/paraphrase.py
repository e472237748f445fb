"""Paraphrase vocabulary split in two halves: words training captions may use ("train") and
words kept for the `reworded` test suite only ("test").

Caption rewriting for training follows "Improving Image Generation with Better Captions"
(DALL-E 3, 2023): the image is the same, the wording varies; here by a fixed vocabulary, so a
test prompt can ask in words the model has provably never seen.
"""

from __future__ import annotations

import re

import numpy as np

from difflab.data.captions import RELATION_PHRASES
from difflab.data.world import (
    COLORS,
    NUMBERS,
    PLURALS,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    PromptSpec,
)

HALVES: tuple[str, ...] = ("train", "test")

# Each word's synonyms as (train half, test half).
COLOR_WORDS: dict[str, tuple[str, str]] = {
    "red": ("crimson", "scarlet"),
    "orange": ("tangerine", "amber"),
    "yellow": ("golden", "lemon"),
    "green": ("emerald", "lime"),
    "cyan": ("turquoise", "aqua"),
    "blue": ("azure", "cobalt"),
    "purple": ("violet", "lilac"),
    "white": ("snowy", "ivory"),
}
# (singular, plural) per half.
SHAPE_WORDS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "circle": (("disc", "discs"), ("dot", "dots")),
    "square": (("box", "boxes"), ("block", "blocks")),
    "triangle": (("wedge", "wedges"), ("pyramid", "pyramids")),
    "diamond": (("rhombus", "rhombuses"), ("lozenge", "lozenges")),
    "cross": (("plus sign", "plus signs"), ("cruciform", "cruciforms")),
    "ring": (("donut", "donuts"), ("hoop", "hoops")),
}
# How many, per half ("a couple of red discs", "exactly 2 red dots").
COUNT_WORDS: dict[int, tuple[str, str]] = {
    2: ("a couple of", "exactly 2"),
    3: ("a trio of", "exactly three"),
    4: ("a quartet of", "exactly 4"),
}
RELATION_WORDS: dict[str, tuple[str, str]] = {
    "left of": ("on the left of", "on the left side of"),
    "right of": ("on the right of", "on the right side of"),
    "above": ("over", "on top of"),
    "below": ("under", "beneath"),
}
FRAMES: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("an image of {}", "a picture of {}", "there is {}"),
    ("a drawing of {}", "show me {}", "i would like {}"),
)
CONJUNCTIONS: tuple[str, str] = ("along with", "as well as")
assert set(COLOR_WORDS) == set(COLORS) and set(SHAPE_WORDS) == set(SHAPES)
assert set(RELATION_WORDS) == set(RELATIONS) and set(COUNT_WORDS) == set(NUMBERS) - {1}


def half_index(half: str) -> int:
    """0 for "train", 1 for "test"; anything else raises naming the valid halves."""
    if half not in HALVES:
        raise ValueError(f"unknown paraphrase half {half!r}; valid: {', '.join(HALVES)}")
    return HALVES.index(half)


def half_words(half: str) -> set[str]:
    """Every word the half's paraphrases introduce (for checking the halves stay apart)."""
    h = half_index(half)
    phrases = [w[h] for w in COLOR_WORDS.values()] + [w[h] for w in COUNT_WORDS.values()]
    phrases += [p for w in SHAPE_WORDS.values() for p in w[h]]
    phrases += [w[h] for w in RELATION_WORDS.values()] + [f.format("") for f in FRAMES[h]]
    phrases.append(CONJUNCTIONS[h])
    return {w for p in phrases for w in re.findall(r"[a-z0-9]+", p)}


def article(words: str) -> str:
    """'a ' or 'an ' for the phrase that follows."""
    return "an " if words[:1] in tuple("aeiou") else "a "


def object_phrase(shape: str, color: str, n: int, half: str | None,
                  color_word: bool = True, shape_word: bool = True) -> str:
    """'a crimson disc' / 'a trio of red discs' (colour and shape words reworded as asked);
    `half` None gives the template wording."""
    h = None if half is None else half_index(half)
    col = COLOR_WORDS[color][h] if h is not None and color_word else color
    one, many = SHAPE_WORDS[shape][h] if h is not None and shape_word else (shape, PLURALS[shape])
    if n == 1:
        return article(col) + f"{col} {one}"
    count = COUNT_WORDS[n][h] if h is not None else NUMBERS[n]
    return f"{count} {col} {many}"


# --------------------------------------------------------------------------- training captions

_WORD_TABLES: tuple[tuple[str, dict[str, str]], ...] = (
    ("color", {c: w[0] for c, w in COLOR_WORDS.items()}),
    ("shape", {s: w[0][0] for s, w in SHAPE_WORDS.items()}
     | {PLURALS[s]: w[0][1] for s, w in SHAPE_WORDS.items()}),
    ("count", {NUMBERS[n]: w[0] for n, w in COUNT_WORDS.items()}),
    ("relation", {RELATION_PHRASES[r]: w[0] for r, w in RELATION_WORDS.items()}),
)


def _substitute(text: str, table: dict[str, str]) -> str:
    pattern = r"\b(" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda m: table[m.group(1)], text)


def _fix_articles(text: str) -> str:
    return re.sub(r"\b(a|an) (?=(\w))", lambda m: article(m.group(2)), text)


def paraphrase_caption(rng: np.random.Generator, caption: str, p_word: float = 0.5,
                       p_frame: float = 0.25) -> str:
    """A training caption reworded with the train half only: each kind of word (colours,
    shapes, count words, relation phrases) swapped for its synonym with probability `p_word`,
    and the whole wrapped in a sentence frame with probability `p_frame`."""
    text = caption
    for _kind, table in _WORD_TABLES:
        if rng.random() < p_word:
            text = _substitute(text, table)
    if rng.random() < p_frame:
        frames = FRAMES[0]
        text = frames[int(rng.integers(len(frames)))].format(text)
    return _fix_articles(text)


# --------------------------------------------------------------------------- the reworded suite


def reworded_text(objects: list[tuple[str, str, int]], relation: str | None, half: str,
                  index: int) -> str:
    """A reworded prompt for objects (shape, colour, count) and an optional relation of the
    first to the second, from `half`'s vocabulary; `index` cycles deterministically through
    what is reworded (colour, shape or both), the clause order and the sentence frame."""
    h = half_index(half)
    mode = index % 3  # 0: colour words only, 1: shape words only, 2: both
    phrases = [object_phrase(s, c, n, half, color_word=mode != 1, shape_word=mode != 0)
               for s, c, n in objects]
    reorder = (index // 3) % 2 == 1
    if relation is not None:
        rel = RELATION_WORDS[relation][h]
        a, b = phrases
        if not reorder:
            text = f"{a} {rel} {b}"
        elif h == 0:
            text = f"{rel} {b}, {a}"  # "on the left of a blue box, a crimson disc"
        else:
            text = f"{b}, and {a} {rel} it"  # "a blue block, and a red dot beneath it"
    elif len(phrases) == 2:
        first, second = (phrases[1], phrases[0]) if reorder else phrases
        text = f"{first} {CONJUNCTIONS[h]} {second}"
    else:
        text = " and ".join(phrases)
    frames = FRAMES[h]
    if index % 2 == 1:
        text = frames[(index // 2) % len(frames)].format(text)
    return _fix_articles(text)


# --------------------------------------------------------------------------- unknown words

# Words outside the world's vocabulary and both paraphrase halves, for asking with one word
# the model cannot know: made-up words and rare real colour words the world has no colour for.
UNKNOWN_WORDS: tuple[str, ...] = ("blick", "zorvy", "quimble", "frandish", "glorp", "tazzle",
                                  "mauve", "taupe", "puce", "ochre", "sepia", "fuchsia")
# Letters of the made-up words training captions may carry (caption `unknown_words`).
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def made_up_word(rng: np.random.Generator) -> str:
    """A random lower-case string of 4 to 8 letters (a word no caption otherwise uses)."""
    return "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=rng.integers(4, 9)))


def unknown_word_caption(rng: np.random.Generator, caption: str) -> str:
    """The caption with one made-up word, either replacing a random word or inserted before
    it (unigram noising from "Data Noising as Smoothing in Neural Network Language Models",
    Xie et al. 2017), so that a word the model cannot know leaves the rest of the prompt in
    charge of the image."""
    words = caption.split(" ")
    i = int(rng.integers(len(words)))
    new = made_up_word(rng)
    words[i:i + 1] = [new] if rng.random() < 0.5 else [new, words[i]]
    return _fix_articles(" ".join(words))


# Which word of a single-object prompt the unknown word stands in for, and what the rest of the
# prompt still asks: "a glorp circle" (any colour), "a red glorp" (any shape), "a glorp red
# circle" (exactly a red circle).
UNKNOWN_SLOTS: tuple[str, ...] = ("unknown_color", "unknown_shape", "unknown_extra")


def unknown_word_prompts(split: str = "dev") -> list[PromptSpec]:
    """Every `single` suite prompt asked three times with one word from UNKNOWN_WORDS (in each
    slot of UNKNOWN_SLOTS; its category), each with the template prompt's seed, so a wording
    compares pairwise with its template on the same noise. `split` only checks the name: the
    seeds come from `data.suites.suite_seeds` like any suite's."""
    from difflab.data.suites import check_split, load_suite

    check_split(split)
    out = []
    for i, p in enumerate(load_suite("single")):
        (obj,) = p.objects
        for j, slot in enumerate(UNKNOWN_SLOTS):
            word = UNKNOWN_WORDS[(i + 5 * j) % len(UNKNOWN_WORDS)]
            if slot == "unknown_color":
                text, want = article(word) + f"{word} {obj.shape}", ObjectSpec(obj.shape, None)
            elif slot == "unknown_shape":
                text, want = article(obj.color) + f"{obj.color} {word}", ObjectSpec(None, obj.color)
            else:
                text, want = article(word) + f"{word} {obj.color} {obj.shape}", obj
            out.append(PromptSpec(text, slot, (want,), seed=p.seed))
    return out
