"""Runs a reference harness script unchanged and records CPU time at each of its clock reads.

``bench_mla_crema.py --reference`` needs user and system CPU seconds per training step of the
reference code, but the harness (``../shared/bench/reference_mla.py``) reports wall time only.
This launcher wraps ``time.perf_counter`` so that every call made *from the harness file*
also records ``getrusage`` (user, system); the harness reads the clock once before training,
once as each batch is handed out and once after training, so consecutive marks bracket each
step. The marks are printed as one last line, ``REFERENCE_MARKS [[wall, user, sys], ...]``.

    python bench/reference_launcher.py HARNESS [harness arguments ...]
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time


def main() -> None:
    harness = os.path.abspath(sys.argv[1])
    real = time.perf_counter
    marks: list[tuple[float, float, float]] = []

    def perf_counter() -> float:
        value = real()
        if sys._getframe(1).f_code.co_filename == harness:
            r = resource.getrusage(resource.RUSAGE_SELF)
            marks.append((value, r.ru_utime, r.ru_stime))
        return value

    time.perf_counter = perf_counter
    sys.argv = [harness, *sys.argv[2:]]
    try:
        runpy.run_path(harness, run_name="__main__")
    finally:
        sys.stdout.flush()
        print("REFERENCE_MARKS " + json.dumps(marks), flush=True)


if __name__ == "__main__":
    main()
