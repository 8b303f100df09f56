"""A1111's prompt editing `[from:to:when]` and alternation `[a|b]`: a prompt's text at each step.

A1111 reads these with a grammar before it reads attention. Here one left-to-right scan with a
stack of open brackets does it, so any depth of nesting is safe and any input ends in linear time.
The rules, as A1111 1.10 applies them:

- `[to:when]`, `[from::when]`, `[from:to:when]` give `from` up to and including step `when`, then
  `to`. A `when` written with a decimal point is a fraction of the pass's steps, one without is a
  step count (`Timeline.last_step`). `[a|b|c]` gives a, b, c, a, ... one option per step.
- Attention brackets, `(x)`, `(x:1.2)` and `[x]`, stay in the text for the attention parser,
  with any editing inside them applied.
- Inside a bracket group everything must be well formed. A group that is not (`[a:b]`, `[a:b:c:1]`,
  `(a|b)`, unbalanced) is plain text, and so is every group around it; groups after it are still
  read. A `|` outside any alternation, or a backslash that escapes nothing, makes A1111's parser
  fail: then the whole prompt is plain text.

Where A1111's grammar is ambiguous, a well-formed group directly followed by a stray `]`, `)` or
`:` (`[a:3]]`), its parser picks one reading or the other from one start to the next (the choice
follows Python's string hashing); here the group is always read as editing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\\[^\n]|\\|[\[\]():|]|[^\\\[\]():|]+")
"""An escaped character, a backslash that escapes nothing, one syntax character, or plain text."""
_NUMBER = re.compile(
    r"\s*([+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+))\s*"
)
"""A `when`: lark's SIGNED_NUMBER (ASCII digits, optional exponent), spaces around it allowed."""
_CLOSERS = {"]": "[", ")": "("}


@dataclass(frozen=True)
class Timeline:
    """The denoiser calls one pass's schedule spans, as A1111 counts them.

    `steps` is A1111's step count for the schedule: the pass's steps, twice that for its
    second-order samplers. For the hires pass `first_pass_steps` is the first pass's count: a
    step-count `when` counts on from it, and fractions 1.0 to 2.0 span the hires pass.
    """

    steps: int
    first_pass_steps: int | None = None

    def last_step(self, when: str) -> int:
        """The last step that shows `from` for a `when` written as `when` (below 1: none)."""
        value = float(when)
        if "." in when:
            value = (value - (0.0 if self.first_pass_steps is None else 1.0)) * self.steps
        elif self.first_pass_steps is not None:
            value -= self.first_pass_steps
        # int() truncates as A1111's does; every value below 1 means "from" is never shown.
        return self.steps if value >= self.steps else int(max(value, -1.0))


Schedule = tuple[tuple[int, str], ...]
"""(last step, text) pairs in step order: A1111's prompt schedule of one prompt."""


def prompt_schedule(text: str, timeline: Timeline) -> Schedule:
    """The texts `text` gives over `timeline`, each with the last step it is used at.

    The steps listed are A1111's: the last one, every edit's `when` from 1 on (of nested and
    unused branches too), and every step when there is an alternation. Neighbours can repeat a
    text; A1111 encodes the list as it is, which matters for its weight normalisation.
    """
    edited = _read(text)
    if edited is None:
        return ((timeline.steps, text),)
    whens = [timeline.last_step(node.when) if node.when else 0 for node in edited.nodes]
    steps = {timeline.steps}
    steps.update(w for node, w in zip(edited.nodes, whens, strict=True) if node.when and w >= 1)
    if any(not node.when for node in edited.nodes):
        steps.update(range(1, timeline.steps + 1))
    return tuple((step, edited.text_at(step, whens)) for step in sorted(steps))


@dataclass(frozen=True)
class _Node:
    """An edit (`when` set; branch 0 `from`, 1 `to`) or an alternation (`when` empty).

    `parent` is the branch slot it sits in (-1: the top level); its branches are the slots
    `first` to `first + branches - 1`.
    """

    parent: int
    first: int
    branches: int
    when: str


@dataclass(frozen=True)
class _Edited:
    """A prompt's text pieces, each shown while its slot is live, and its nodes in pre-order."""

    pieces: tuple[tuple[str, int], ...]
    nodes: tuple[_Node, ...]
    slots: int

    def text_at(self, step: int, whens: list[int]) -> str:
        live = [False] * self.slots
        for node, when in zip(self.nodes, whens, strict=True):
            if node.parent != -1 and not live[node.parent]:
                continue
            branch = (0 if step <= when else 1) if node.when else (step - 1) % node.branches
            live[node.first + branch] = True
        return "".join(text for text, slot in self.pieces if slot == -1 or live[slot])


@dataclass
class _Group:
    """An attention group, its brackets kept as text: expanded in place when compiled."""

    items: list[_Item]


@dataclass
class _Edit:
    before: list[_Item] | None
    after: list[_Item]
    when: str


@dataclass
class _Alternation:
    options: list[list[_Item]]


@dataclass(frozen=True)
class _Mark:
    """A `:` or `|` at the level of an open group, where it may separate the group's parts."""

    char: str


_Item = str | _Group | _Edit | _Alternation
_MARKS = {":": _Mark(":"), "|": _Mark("|")}


@dataclass
class _Open:
    bracket: str
    items: list[_Item | _Mark]


def _read(text: str) -> _Edited | None:
    """The prompt's editing, or None where A1111's parser fails and the text stays as it is."""
    top: list[_Item] = []
    stack: list[_Open] = []

    def flatten() -> bool:
        """Make every open group plain text at the top level; False if a `|` lands there."""
        for group in stack:
            top.append(group.bracket)
            for item in group.items:
                if item == _MARKS["|"]:
                    return False
                top.append(item.char if isinstance(item, _Mark) else item)
        stack.clear()
        return True

    for match in _TOKEN.finditer(text):
        token = match[0]
        if token in ("[", "("):
            stack.append(_Open(token, []))
        elif token in _CLOSERS:
            built = _close(stack[-1]) if stack and stack[-1].bracket == _CLOSERS[token] else None
            if built is not None:
                stack.pop()
                (stack[-1].items if stack else top).append(built)
                continue
            if not flatten():
                return None
            top.append(token)
        elif token in _MARKS:
            if stack:
                stack[-1].items.append(_MARKS[token])
            elif token == "|":
                return None
            else:
                top.append(token)
        elif token == "\\":
            return None
        else:
            (stack[-1].items if stack else top).append(token)
    if not flatten():
        return None
    return _compile(top)


def _close(group: _Open) -> _Item | None:
    """What a closed group becomes in its parent, or None if it is not well formed."""
    parts: list[list[_Item]] = [[]]
    marks = ""
    for item in group.items:
        if isinstance(item, _Mark):
            marks += item.char
            parts.append([])
        else:
            parts[-1].append(item)
    if group.bracket == "(":
        if "|" in marks or len(marks) > 1:
            return None
        return _Group(["(", *_joined(parts, ":"), ")"])
    if "|" in marks:
        return None if ":" in marks else _Alternation(parts)
    if not marks:
        return _Group(["[", *parts[0], "]"])
    when = _when(parts[-1])
    if len(marks) > 2 or when is None:
        return None
    return _Edit(parts[0] if len(marks) == 2 else None, parts[-2], when)


def _joined(parts: list[list[_Item]], separator: str) -> list[_Item]:
    joined: list[_Item] = []
    for index, part in enumerate(parts):
        joined += [separator, *part] if index else part
    return joined


def _when(part: list[_Item]) -> str | None:
    """The number closing an edit, if the part after its last `:` is one (and nothing else)."""
    texts = [item for item in part if isinstance(item, str)]
    match = _NUMBER.fullmatch("".join(texts)) if len(texts) == len(part) else None
    return match[1] if match else None


def _compile(top: list[_Item]) -> _Edited:
    """Flatten the tree into pieces owned by branch slots, without recursion."""
    pieces: list[tuple[str, int]] = []
    nodes: list[_Node] = []
    slots = 0
    pending: list[tuple[list[_Item], int]] = [(top[::-1], -1)]
    while pending:
        items, slot = pending[-1]
        if not items:
            pending.pop()
            continue
        item = items.pop()
        if isinstance(item, str):
            if pieces and pieces[-1][1] == slot:
                pieces[-1] = (pieces[-1][0] + item, slot)
            else:
                pieces.append((item, slot))
            continue
        if isinstance(item, _Group):
            pending.append((item.items[::-1], slot))
            continue
        if isinstance(item, _Edit):
            branches, when = [item.before or [], item.after], item.when
        else:
            branches, when = item.options, ""
        nodes.append(_Node(slot, slots, len(branches), when))
        pending += [(branch[::-1], slots + index) for index, branch in enumerate(branches)][::-1]
        slots += len(branches)
    return _Edited(tuple(pieces), tuple(nodes), slots)
