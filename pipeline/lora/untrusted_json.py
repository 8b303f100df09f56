"""Parse JSON that came inside a file someone else wrote: every way it can be malformed is one
`ValueError`.

Python's decoder has other ways to fail than `JSONDecodeError`: a `RecursionError` for deeply
nested brackets, a `ValueError` for an integer past 4,300 digits, and it keeps the last of two
equal keys without a word, which would let one tensor entry hide another. It also reads
`NaN`, `Infinity` and `-Infinity`, which JSON does not have and safetensors' own parser refuses:
a file Python could read but torch could not open.
"""

from __future__ import annotations

import json


class NotJson(ValueError):
    """A word JSON does not have: NaN or Infinity."""


class DuplicateKey(ValueError):
    """An object names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"names {key!r} twice")
        self.key = key


def parse_json(text: str | bytes) -> object:
    """The document in `text`, or a ValueError whose message completes "the header ...".

    A repeated key is a `DuplicateKey`, so that callers can name the key.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, NotJson):
        raise ValueError("is not JSON") from None
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    except DuplicateKey:
        raise
    except ValueError:  # the decoder's guard against integers of thousands of digits
        raise ValueError("holds a number too long to be real") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(key)
        document[key] = value
    return document


def _no_constant(word: str) -> object:
    raise NotJson(word)
