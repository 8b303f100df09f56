"""How long reading one prompt takes on the event loop with a large library of names.

Run: python bench/prompt_names.py [--names 5000] [--tags 60] [--repeats 5]
Builds that many LoRA and embedding names (shaped like real file names), then parses a prompt of
`--tags` misspelt `<lora:>` tags (each one letter off an installed name) with the real prompt
parser, the way `/imagine` does on the event loop, and prints the median CPU time of a parse.
The first parse after a library change also builds the name indexes; it is timed on its own.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import time
from pathlib import Path

# Run as a script, the repository root is not on the path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.prompt.parse import parse_prompt


def names_like_files(count: int, rng: random.Random) -> frozenset[str]:
    names: set[str] = set()
    while len(names) < count:
        words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))]
        words += ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 7)))]
        names.add(rng.choice("_-").join(words[: rng.randint(1, 2)]) + rng.choice(["", "_v2"]))
    return frozenset(names)


def misspelt(name: str, rng: random.Random) -> str:
    at = rng.randrange(len(name))
    return name[:at] + rng.choice(string.ascii_lowercase) + name[at + 1 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=5000)
    parser.add_argument("--tags", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(17)
    loras = names_like_files(args.names, rng)
    embeddings = names_like_files(args.names, rng)
    chosen = rng.sample(sorted(loras), args.tags)
    prompt = "a fox in the snow, " + " ".join(f"<lora:{misspelt(n, rng)}:0.7>" for n in chosen)

    def parse() -> float:
        start = time.process_time()
        parsed = parse_prompt(prompt, known_loras=loras, known_embeddings=embeddings)
        assert parsed.errors
        return time.process_time() - start

    first = parse()
    times = [parse() for _ in range(args.repeats)]
    print(
        f"{args.names} names, {args.tags} misspelt tags ({len(prompt)} characters): "
        f"first parse {first * 1000:.1f} ms, then median {statistics.median(times) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
