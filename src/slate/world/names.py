"""Pronounceable fictional names, generated from syllables so that no pretrained model can know the world."""

from __future__ import annotations

import random

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr",
           "st", "th", "sh", "ch", "vel", "mor", "tal", "ser", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rn", "sk"]
# Generated names must not spell anything rude or loaded; a root containing one of these is drawn again.
_BLOCKED = ("shit", "fuc", "fuk", "cum", "sex", "nig", "dick", "cock", "ass", "tit", "piss", "rap", "porn", "fag",
            "cunt", "nazi", "kkk", "anal", "slut", "whor", "homo", "jew", "gay", "hell", "damn", "kill")


def make_root(rng: random.Random, syllables: int) -> str:
    parts = []
    for index in range(syllables):
        coda = rng.choice(_CODAS) if index == syllables - 1 else ""
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + coda)
    return "".join(parts).capitalize()


class NameBank:
    """Hands out unique roots; every root is used once per bank so that look-alikes are deliberate, not accidents."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def root(self, min_syllables: int = 2, max_syllables: int = 3) -> str:
        for _ in range(10_000):
            candidate = make_root(self.rng, self.rng.randint(min_syllables, max_syllables))
            lowered = candidate.lower()
            if 4 <= len(candidate) <= 10 and lowered not in self.used and not any(b in lowered for b in _BLOCKED):
                self.used.add(lowered)
                return candidate
        raise RuntimeError("name space exhausted; lower the world size")
