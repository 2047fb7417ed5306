"""Read an ansible-playbook log and fail unless its PLAY RECAP shows no change, failure or unreachable host.

    python tests/host/recap.py LOG

Prints the tasks that reported `changed` (so an idempotence failure names its culprits).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<counts>(?:\w+=\d+\s*)+)$")


def parse(text: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """The recap counts per host, and the `TASK [...]` names that reported changed."""
    recap: dict[str, dict[str, int]] = {}
    changed: list[str] = []
    task = ""
    in_recap = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            changed.append(task)
        elif line.startswith("PLAY RECAP"):
            in_recap = True
        elif in_recap:
            m = RECAP_LINE.match(line.strip())
            if m:
                counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", m.group("counts")))
                recap[m.group("host")] = counts
    return recap, changed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    recap, changed = parse(Path(argv[1]).read_text(errors="replace"))
    if not recap:
        print(f"recap: no PLAY RECAP in {argv[1]}: the playbook did not finish", file=sys.stderr)
        return 1
    bad = False
    for host, counts in recap.items():
        summary = " ".join(f"{k}={v}" for k, v in counts.items())
        problems = [k for k in ("changed", "failed", "unreachable") if counts.get(k, 0)]
        print(f"recap: {host}: {summary}" + (f"  <- {', '.join(problems)}" if problems else ""))
        bad = bad or bool(problems)
    for name in changed:
        print(f"recap: changed on the second run: {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
