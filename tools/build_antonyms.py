"""Build ``ragline/data/antonyms/wordnet-3.0.tsv``: WordNet 3.0's direct antonym pairs for the
semantic cache's contrast check ("Which item has more units?" / "... fewer units?").

WordNet's data files are not on PyPI in a small form, but Debian ships them (``wordnet-base``);
the cache needs only the ~3,200 single-word antonym pairs (65 KB), so they are extracted once
and the table is committed with WordNet's licence beside it. Re-run after changing the
exclusions::

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wn
    python tools/build_antonyms.py /tmp/wn/usr/share/wordnet

Pairs left out (``EXCLUDE``) are sense-specific ones whose words are common in questions in
another sense ("give" / "take" in "how long does it take", "set" / "rise", "lead" / "deficit").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "python"))
from ragline.cache.verify import _stem  # the check compares these stems

OUT = ROOT / "layers" / "python" / "ragline" / "data" / "antonyms" / "wordnet-3.0.tsv"
POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
EXCLUDE = {
    frozenset(p) for p in [
        ("give", "take"), ("have", "miss"), ("have", "lack"), ("break", "make"), ("break", "keep"),
        ("ignore", "know"), ("forget", "mind"), ("other", "same"), ("rise", "set"), ("change", "stay"),
        ("move", "stay"), ("depart", "stay"), ("side", "top"), ("bottom", "side"), ("center", "left"),
        ("idle", "run"), ("idle", "work"), ("live", "recorded"), ("out", "safe"), ("lie", "sit"),
        ("lie", "stand"), ("flat", "natural"), ("flat", "sharp"), ("contrasty", "flat"), ("full", "thin"),
        ("new", "worn"), ("ride", "walk"), ("deficit", "lead"), ("bore", "interest"), ("advance", "back"),
        ("ahead", "back"), ("back", "veer"), ("age", "rejuvenate"), ("find", "lose"), ("cash", "credit"),
        ("nominal", "real"), ("let", "prevent"), ("fail", "manage"), ("sink", "source"), ("end", "middle"),
        ("late", "middle"), ("dry", "sweet"), ("dry", "phlegmy"), ("fire", "hire"), ("kern", "kern"),
        ("act", "refrain"), ("attend", "miss"), ("hit", "miss"), ("head", "tail"), ("foot", "head"),
        ("head", "rear"), ("bound", "free"), ("free", "obstruct"), ("confine", "free"), ("begrudge", "wish"),
        ("absorb", "emit"), ("delay", "rush"), ("linger", "rush"), ("refresh", "tire"), ("lean", "rich"),
        ("green", "ripe"), ("hardened", "soft"), ("aged", "young"), ("age", "young"),
    ]
}


def pairs(dict_dir: Path) -> set[tuple[str, str]]:
    synsets: dict[tuple[str, str], tuple[list[str], list[tuple[str, str, str, str]]]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (dict_dir / f"data.{pos}").open(encoding="latin-1"):
            if line.startswith("  "):  # the licence header
                continue
            f = line.split(" | ")[0].split()
            n = int(f[3], 16)
            words = [f[4 + 2 * i] for i in range(n)]
            i = 4 + 2 * n
            ptrs = [tuple(f[i + 1 + 4 * k: i + 5 + 4 * k]) for k in range(int(f[i]))]
            synsets[(pos, f[0])] = (words, ptrs)
    out: set[tuple[str, str]] = set()
    for words, ptrs in synsets.values():
        for sym, offset, pos, st in ptrs:
            if sym != "!":  # "!" is WordNet's antonym pointer, word to word
                continue
            # source/target: two 2-digit hex word numbers ("0102": word 1 to word 2), not a prefix
            source, target = int(st[:2], 16), int(st[2:], 16)  # noqa: FURB166
            a, b = (re.sub(r"\(.*\)$", "", w).lower()
                    for w in (words[source - 1], synsets[(POS[pos], offset)][0][target - 1]))
            # pairs whose stems coincide would never fire (the check compares stems)
            if a.isalpha() and b.isalpha() and min(len(a), len(b)) >= 3 and _stem(a) != _stem(b):
                pair = tuple(sorted((a, b)))
                if frozenset(pair) not in EXCLUDE:
                    out.add(pair)
    return out


def main() -> None:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "data.adj").is_file():
        raise SystemExit("usage: python tools/build_antonyms.py WORDNET_DICT_DIR (holding data.adj, data.noun, ...)")
    found = sorted(pairs(Path(sys.argv[1])))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    header = ("# WordNet 3.0 direct antonym pairs (single words), extracted by tools/build_antonyms.py.\n"
              "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. See LICENSE.\n")
    OUT.write_text(header + "".join(f"{a}\t{b}\n" for a, b in found), encoding="utf-8")
    print(f"wrote {len(found)} pairs to {OUT}")


if __name__ == "__main__":
    main()
