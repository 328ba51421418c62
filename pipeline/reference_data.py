"""Offline, deterministic data for the reference model family.

* ``code_documents``: the Python standard library source of the running interpreter
  (``test``/``tests``/``idlelib`` folders skipped), one document per file.
* Arithmetic word problems: a seeded generator of grade-school problems (1-4 steps, every number
  below 1000) whose worked solutions end in ``#### <answer>`` (GSM8K's answer format).

Train and held-out problems never share a question: a problem belongs to the held-out split iff
a hash of its question text falls in a fixed bucket, so the splits are disjoint by construction,
whatever seeds the two sides use.
"""
from __future__ import annotations

import hashlib
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELDOUT_BUCKETS = 10  # 1 in 10 possible questions is reserved for the held-out split
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__"}

NAMES = ["Tom", "Anna", "Ben", "Mia", "Sam", "Lily", "Jack", "Emma", "Noah", "Olivia", "Liam",
         "Ava", "Lucas", "Zoe", "Leo", "Ella", "Max", "Ruby", "Omar", "Sara"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "cards",
         "shells", "stamps", "eggs", "flowers", "toys", "candies", "balloons", "rocks"]
CONTAINERS = ["bags", "boxes", "baskets", "packs", "jars", "crates"]


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str  # worked solution, last line "#### <answer>"
    answer: str


def is_heldout(question: str) -> bool:
    digest = hashlib.sha256(question.encode()).digest()
    return int.from_bytes(digest[:4], "little") % HELDOUT_BUCKETS == 0


def _make_problem(rng: random.Random) -> Problem:
    """One problem of 1-4 steps; all numbers (operands and intermediate results) stay below 1000."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    steps = rng.randint(1, 4)
    total = rng.randint(2, 300)
    q = [f"{name} has {total} {item}."]
    sol = []
    for _ in range(steps):
        kinds = ["add", "buy_groups", "double"]
        if total > 1:
            kinds += ["sub", "sub", "share"]
        for _ in range(20):
            kind = rng.choice(kinds)
            if kind == "add":
                n = rng.randint(1, 999 - total) if total < 999 else None
                if n is None:
                    continue
                friend = rng.choice([x for x in NAMES if x != name])
                q.append(f"{friend} gives {name} {n} more {item}.")
                sol.append(f"{name} now has {total} + {n} = {total + n} {item}.")
                total += n
            elif kind == "sub":
                n = rng.randint(1, total - 1)
                verb = rng.choice(["gives away", "loses", "eats", "sells"])
                q.append(f"{name} {verb} {n} {item}.")
                sol.append(f"{name} now has {total} - {n} = {total - n} {item}.")
                total -= n
            elif kind == "buy_groups":
                k, per = rng.randint(2, 9), rng.randint(2, 30)
                if total + k * per > 999:
                    continue
                cont = rng.choice(CONTAINERS)
                q.append(f"{name} buys {k} {cont} with {per} {item} in each.")
                sol.append(f"The {cont} hold {k} * {per} = {k * per} {item}.")
                sol.append(f"{name} now has {total} + {k * per} = {total + k * per} {item}.")
                total += k * per
            elif kind == "double":
                k = rng.randint(2, 5)
                if total * k > 999:
                    continue
                word = {2: "doubles", 3: "triples"}.get(k, f"multiplies by {k}")
                q.append(f"{name} {word} the number of {item}." if k < 4 else
                         f"{name} ends up with {k} times as many {item}.")
                sol.append(f"{name} now has {total} * {k} = {total * k} {item}.")
                total *= k
            elif kind == "share":
                divs = [d for d in range(2, 10) if total % d == 0 and total // d >= 1]
                if not divs:
                    continue
                d = rng.choice(divs)
                q.append(f"{name} splits the {item} equally into {d} groups and keeps one group.")
                sol.append(f"{name} keeps {total} / {d} = {total // d} {item}.")
                total //= d
            break
    q.append(f"How many {item} does {name} have now?")
    sol.append(f"#### {total}")
    return Problem(" ".join(q), "\n".join(sol), str(total))


def _problems(seed: int, heldout: bool):
    rng = random.Random(f"arithmetic-{seed}-{'heldout' if heldout else 'train'}")
    seen: set[str] = set()
    while True:
        p = _make_problem(rng)
        if is_heldout(p.question) != heldout or p.question in seen:
            continue
        seen.add(p.question)
        yield p


def train_problems(n: int, seed: int = 0) -> list[Problem]:
    gen = _problems(seed, heldout=False)
    return [next(gen) for _ in range(n)]


def heldout_problem_list(n: int, seed: int = 1234) -> list[Problem]:
    gen = _problems(seed, heldout=True)
    return [next(gen) for _ in range(n)]


def heldout_problems(n: int, seed: int = 1234) -> list[tuple[str, str]]:
    """``n`` held-out (question, answer) pairs, never seen in training."""
    return [(p.question, p.answer) for p in heldout_problem_list(n, seed)]


def extract_answer(text: str) -> str | None:
    """The text after the last ``####``, trimmed (None when absent)."""
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    tail = tail.split("\n", 1)[0].strip().replace(",", "")
    return tail or None


def code_documents(max_files: int | None = None, max_chars: int = 60_000) -> list[tuple[str, str]]:
    """(relative path, source) of the running interpreter's standard library, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            out.append((str(rel), text[:max_chars]))
        if max_files is not None and len(out) >= max_files:
            break
    return out
