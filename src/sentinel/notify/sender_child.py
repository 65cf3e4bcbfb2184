"""The sender's child process (`python -m sentinel.notify.sender_child TIMEOUT THREADS`).

Reads {"warm": [channel URLs]} first (their plugins are loaded before it says it is
ready), then one JSON request per line on stdin — {"id", "url", "headers", "title", "body"} —
delivers each through apprise on one of THREADS worker threads, and writes one JSON answer
per line on the protocol channel — {"id", "ok", "error"} — in the order sends finish. The
protocol channel is the stdout it was started with; everything else this process would
print goes to stderr (the daemon's log), so nothing can corrupt the answers. Ends when
stdin closes, after the sends in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO


def serve(requests: BinaryIO, answers: BinaryIO, timeout: float, threads: int) -> None:
    from sentinel.notify.sender import Deliverer

    deliverer = Deliverer(timeout)
    lock = threading.Lock()

    def answer(data: dict[str, Any]) -> None:
        line = json.dumps(data, ensure_ascii=False).encode() + b"\n"
        with lock:
            answers.write(line)
            answers.flush()

    def run(request: dict[str, Any]) -> None:
        try:
            ok, error = deliverer.deliver(request["url"], request["headers"],
                                          request["title"], request["body"])
        except Exception as exc:  # a defect costs this message, not the child
            ok, error = False, f"sender error: {type(exc).__name__}"
        with contextlib.suppress(OSError, ValueError):  # the daemon went away
            answer({"id": request["id"], "ok": ok, "error": error})

    # The first line names the channels to expect: their plugins are loaded now (300 ms
    # the first time apprise meets a scheme), not when the first alarm is sent.
    first = json.loads(requests.readline() or b"{}")
    deliverer.warm(first.get("warm", []))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="apprise-send") as pool:
        answer({"ready": True})
        for line in requests:
            pool.submit(run, json.loads(line))


def main() -> None:
    timeout, threads = float(sys.argv[1]), int(sys.argv[2])
    # The answers keep the original stdout; anything printed goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt):
        serve(sys.stdin.buffer, answers, timeout, threads)


if __name__ == "__main__":
    main()
