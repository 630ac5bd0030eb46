"""The key numbers of a ``benchmarks/gpu_check.sh`` run in one page: ``OUT/summary.md``.

    python benchmarks/gpu_summary.py OUT

Reads what the check's parts wrote into ``OUT`` (any of them may be missing or cut short:
each part says so) and writes ``summary.md`` atomically. ``gpu_check.sh`` calls it after
every part, so the page is there however far the check got. Imports nothing of fcnn's,
CuPy's or PyTorch's: it runs in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

TARGET = 99.0  # % test accuracy, and the time for it from process start
TARGET_S = 10.0
STAMPED = re.compile(r"^\s*(\d+\.\d+) s  (.*)$")
EPOCH = re.compile(r"^epoch (\d+)/(\d+) .*test acc ([\d.]+)%  \(([\d.]+)s")
STATUS = re.compile(r"exit status (\d+)")


def read(out: Path, name: str) -> str | None:
    path = out / name
    return path.read_text(errors="replace") if path.is_file() else None


def ended(text: str) -> str:
    """How a part ended, from its last ``exit status N`` line."""
    found = STATUS.findall(text)
    if not found:
        return "did not finish (no exit status: cut short, or still running)"
    code = int(found[-1])
    return {0: "exit 0", 124: "cut at its time limit (exit 124)"}.get(code, f"exit {code}")


def train_run(text: str | None, title: str) -> list[str]:
    """A timestamped ``train.py`` run: when each epoch ended, when 99 % came, the exit."""
    if text is None:
        return [f"## {title}", "", "not run"]
    lines = [f"## {title}", "", f"- {ended(text)}"]
    stamped = [(float(m[1]), m[2]) for m in map(STAMPED.match, text.splitlines()) if m]
    reached = None
    if stamped and not stamped[0][1].startswith(("error:", "exit status")):
        lines.append(
            f"- first line (set up: imports, data, model, upload) at {stamped[0][0]:.2f} s"
        )
    for t, line in stamped:
        if line.startswith(("error:", "on the GPU", "Traceback")):
            lines.append(f"- {line}")
        epoch = EPOCH.match(line)
        if epoch:
            acc = float(epoch[3])
            lines.append(f"- epoch {epoch[1]}/{epoch[2]}: test acc {acc:.2f}% at {t:.2f} s "
                         f"since the process started (the epoch itself {epoch[4]} s)")  # fmt: skip
            if reached is None and acc >= TARGET:
                reached = t
    exit_at = next((t for t, line in reversed(stamped) if STATUS.search(line)), None)
    if exit_at is not None:
        lines.append(f"- process start to exit: {exit_at:.2f} s")
    if reached is not None:
        verdict = "met" if reached <= TARGET_S else "NOT met"
        lines.append(
            f"- {TARGET:g} % reached {reached:.2f} s after the process started "
            f"(target {TARGET_S:g} s: {verdict})"
        )
    elif "epoch" in text:
        lines.append(f"- {TARGET:g} % not reached")
    return lines


def pytest_part(text: str | None) -> list[str]:
    if text is None:
        return ["## pytest -m gpu", "", "not run"]
    keep = [
        line.strip()
        for line in text.splitlines()
        if re.match(r"^=+ .*\b(passed|failed|skipped|error|no tests ran)\b", line)
        or line.startswith(("FAILED", "ERROR", "# ", "exit status"))
    ]
    skips = [line for line in text.splitlines() if line.startswith("SKIPPED")]
    keep += [f"first skip: {skips[0]}"] if skips else []
    return ["## pytest -m gpu", "", *(f"- {line}" for line in keep or ["no summary line"])]


def bench_part(out: Path) -> list[str]:
    text = read(out, "gpu-bench.json")
    log = read(out, "gpu-bench.txt") or ""
    head = ["## train_bench.py --device gpu", "", f"- {ended(log)}" if log else "- not run"]
    if text is None:
        return [*head, *(f"    {line}" for line in log.strip().splitlines()[-5:])]
    try:
        data = json.loads(text)
    except ValueError as err:
        return [*head, f"- gpu-bench.json unreadable: {err}"]
    report = str(data.get("report", "")).split("### cProfile")[0].strip()
    return [*head, f"- workers done: {data.get('done', 'all')}", "", report]


def tta_part(text: str | None) -> list[str]:
    if text is None:
        return ["## time_to_accuracy.py --device gpu", "", "not run"]
    keep = [
        line
        for line in text.splitlines()
        if line.startswith(("seed ", "|", "seconds to", "time_to_accuracy", "PyTorch is not"))
    ]
    return ["## time_to_accuracy.py --device gpu", "", f"- {ended(text)}", "", *keep]


def summary(out: Path) -> str:
    env = read(out, "environment.txt")
    parts = [
        "# fcnn on the GPU: summary of benchmarks/gpu_check.sh",
        "",
        "## Environment",
        "",
        "```",
        (env or "not run").strip(),
        "```",
        "",
        *train_run(read(out, "train-cold.txt"), "train.py --recipe fast --device gpu, cold"),
        "",
        *pytest_part(read(out, "pytest-gpu.txt")),
        "",
        *train_run(read(out, "train-warm.txt"), "the same train.py run again, warm"),
        "",
        *bench_part(out),
        "",
        *tta_part(read(out, "tta-gpu.txt")),
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/gpu_summary.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    tmp = out / ".summary.md.tmp"
    tmp.write_text(summary(out))
    os.replace(tmp, out / "summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
