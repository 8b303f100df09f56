"""The A1111 prompt language plus Midjourney-style flags, in plain Python (no torch).

`parse_prompt` is the entry point; `parse_prompt_attention` is what the engine uses to weight
tokens. The modules each read one part: attention, tags, flags, embeddings, AND parts (composable),
prompt editing and alternation (editing); schedule plans them over a request's passes.
"""

from pipeline.prompt.attention import parse_prompt_attention, scan_attention
from pipeline.prompt.limits import PromptLimits
from pipeline.prompt.options import merge_options
from pipeline.prompt.parse import ParsedPrompt, parse_prompt

__all__ = [
    "ParsedPrompt",
    "PromptLimits",
    "merge_options",
    "parse_prompt",
    "parse_prompt_attention",
    "scan_attention",
]
