"""Work a request overlaps with its own, or leaves for a moment later in the same worker: the flow's
single-use delete during the code's redemption, warming caches after the first login start. Threads
start on demand; a worker serves a few requests at a time, so a few threads are enough. Nothing
here may be work the reply depends on unless the request joins it before replying."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

BACKGROUND = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sso-background")
