"""``python -m benchmarks.peak_rss RESULT.json -- COMMAND...``: run COMMAND, then write the peak resident set
size of its process tree's largest process (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) to RESULT.json.

A fresh parent per measurement, because RUSAGE_CHILDREN is the maximum over every child a process has
waited for.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, command = argv[0], argv[2:]
    returncode = subprocess.call(command)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    with open(result_path, "w") as handle:
        json.dump({"returncode": returncode, "peak_rss_mib": peak_kib / 1024.0}, handle)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
