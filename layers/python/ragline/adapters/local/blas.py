"""One BLAS thread for small, latency-bound products (a query embedding, one query against a
tenant's vectors). OpenBLAS's thread pool costs far more to wake than it saves on such sizes,
and on a busy machine its spinning threads turned a ~15 ms query into ~650 ms (measured here).
The controller is built once (it scans the loaded libraries); each limit is then cheap."""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache


@lru_cache(maxsize=1)
def _controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with the local extra
        return None
    return ThreadpoolController()


def one_blas_thread():
    ctl = _controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else nullcontext()
