"""'Did you mean' with thousands of installed names: bounded work per prompt, same answers.

The work is counted as difflib comparisons (one `SequenceMatcher.set_seq1` per candidate name,
as `difflib.get_close_matches` does), not as wall-clock time, so the bound holds on any machine.
The answers are checked against difflib over every installed name. Timings: bench/names.py.
"""

from __future__ import annotations

import difflib
import random
import string
from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.suggestions import MAX_SUGGESTED, NameIndex
from pipeline.prompt.tags import extract_tags

LIBRARY_SIZE = 5000
LETTERS = string.ascii_lowercase + string.digits + "_-"


def library(seed: int, size: int = LIBRARY_SIZE) -> list[str]:
    """Names shaped like LoRA file names: words of letters joined by `_` or `-`, a version."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < size:
        words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))]
        words += ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 7)))] * rng.randint(
            0, 1
        )
        suffix = rng.choice(["", "_v2", "-xl", f"_{rng.randint(1, 99)}"])
        names.add(rng.choice("_-").join(words) + suffix)
    return sorted(names)


def typo(name: str, rng: random.Random) -> str:
    """One slip of the keyboard: a letter changed, dropped, doubled or two swapped."""
    at = rng.randrange(len(name) - 1)
    slip = rng.choice(["change", "drop", "double", "swap"])
    if slip == "change":
        return name[:at] + rng.choice(string.ascii_lowercase.replace(name[at], "")) + name[at + 1 :]
    if slip == "drop":
        return name[:at] + name[at + 1 :]
    if slip == "double":
        return name[:at] + name[at] + name[at:]
    return name[:at] + name[at + 1] + name[at] + name[at + 2 :]


@contextmanager
def counting_comparisons() -> Iterator[list[int]]:
    """Counts difflib's comparisons: a real SequenceMatcher that tallies candidate names."""
    count = [0]

    class Counting(difflib.SequenceMatcher):  # type: ignore[type-arg]
        def set_seq1(self, a: object) -> None:
            count[0] += 1
            super().set_seq1(a)

    with patch.object(difflib, "SequenceMatcher", Counting):
        yield count


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32), st.integers(50, 250))
def test_many_misspelt_tags_cost_a_bounded_number_of_comparisons(seed: int, tags: int) -> None:
    names = library(seed)
    rng = random.Random(seed)
    prompt = " ".join(f"<lora:{typo(rng.choice(names), rng)}:0.7>" for _ in range(tags))
    with counting_comparisons() as comparisons:
        scan = extract_tags(prompt, frozenset(names), PromptLimits())
    # One search compares every name, plus one for difflib's own set-up: none per extra tag.
    assert comparisons[0] <= MAX_SUGGESTED * (len(names) + 1)
    unknown = [error for error in scan.errors if error.startswith("unknown LoRA")]
    assert len(unknown) >= tags - 10, "every unknown tag is still reported"
    assert sum("did you mean" in error for error in unknown) <= MAX_SUGGESTED
    assert "names are suggested for the first 3 unknown names" in unknown[-1]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32))
def test_a_typo_gets_the_names_difflib_suggests_from_every_name(seed: int) -> None:
    names = LIBRARY_BY_SEED[seed % len(LIBRARY_BY_SEED)]
    rng = random.Random(seed)
    intended = rng.choice(names)
    written = typo(intended, rng).upper()
    found = NameIndex(frozenset(names)).closest(written)
    assert found == tuple(difflib.get_close_matches(written.lower(), names, n=3, cutoff=0.6))


LIBRARY_BY_SEED = [library(seed) for seed in range(3)]


def test_the_first_unknown_names_keep_their_suggestions() -> None:
    names = frozenset(library(7))
    first, second = sorted(names)[100], sorted(names)[2000]
    scan = extract_tags(f"<lora:{first}x:1> <lora:{second}x:1>", names, PromptLimits())
    assert f"did you mean {first!r}" in scan.errors[0]
    assert f"did you mean {second!r}" in scan.errors[1]
    assert scan.networks[0].closest[0] == first
