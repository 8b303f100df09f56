"""A1111 syntax Dreamcord does not run: prompt editing, alternation and AND, reported as warnings.

`[a:b:0.5]`, `[a|b]` and `AND` are parsed by A1111 before attention. Dreamcord reads the prompt
with attention only, so these become plain text; the warnings say so instead of staying silent.
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
_EDIT_END = re.compile(r":\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*$")
_OPENERS = {")": "(", "]": "["}
_MAX_SHOWN = 40


def find_unsupported(text: str) -> list[str]:
    """One warning per kind of unsupported syntax found in `text`, quoting its first use."""
    warnings = []
    edits, alternations = _square_groups(text)
    if edits:
        warnings.append(
            f"prompt editing such as {_shown(edits[0])} is not supported: it is read as plain "
            "text with the [ ] lowering its weight"
        )
    if alternations:
        warnings.append(
            f"alternation such as {_shown(alternations[0])} is not supported: it is read as "
            "plain text with the [ ] lowering its weight"
        )
    if _AND.search(text):
        warnings.append(
            "AND (composable prompts) is not supported: the whole text is one prompt, "
            "with AND read as a word"
        )
    return warnings


def _square_groups(text: str) -> tuple[list[str], list[str]]:
    """Square-bracket groups that are prompt editing (`[a:b:0.5]`) and alternation (`[a|b]`).

    A `:` or `|` counts only at the group's own depth, so `[(a:1.2)]` is plain attention.
    """
    edits: list[str] = []
    alternations: list[str] = []
    # Each open bracket: its character, its position, and whether : or | appeared directly in it.
    stack: list[tuple[str, int, set[str]]] = []
    open_count = {"(": 0, "[": 0}
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
        elif char in "([":
            stack.append((char, index, set()))
            open_count[char] += 1
        elif char in ")]" and open_count[_OPENERS[char]]:
            opener, start, marks = stack.pop()
            open_count[opener] -= 1
            while opener != _OPENERS[char]:
                opener, start, marks = stack.pop()
                open_count[opener] -= 1
            group = text[start : index + 1]
            if opener == "[" and ":" in marks and _EDIT_END.search(group[1:-1]):
                edits.append(group)
            elif opener == "[" and "|" in marks:
                alternations.append(group)
        elif char in ":|" and stack:
            stack[-1][2].add(char)
        index += 1
    return edits, alternations


def _shown(group: str) -> str:
    return repr(group if len(group) <= _MAX_SHOWN else group[: _MAX_SHOWN - 3] + "...")
