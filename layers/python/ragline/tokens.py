"""tiktoken, offline: the encoding file ships inside the package (``ragline/data/tiktoken``),
so neither a Lambda nor a fresh checkout downloads anything."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).parent / "data" / "tiktoken"


@lru_cache(maxsize=4)
def encoding(name: str = "cl100k_base"):
    # tiktoken reads TIKTOKEN_CACHE_DIR at call time; point it at the shipped files unless the
    # operator set their own cache.
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_DATA))
    import tiktoken

    return tiktoken.get_encoding(name)


def count_tokens(text: str, name: str = "cl100k_base") -> int:
    return len(encoding(name).encode(text, disallowed_special=()))
