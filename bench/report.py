"""Writes a benchmark's table into docs/benchmarks.md, between the marker comments that
name it (`<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`), with the machine,
the date, the build and the command that measured it. Figures are never edited by hand:
running the bench again replaces the block.
"""

import datetime
import os
import platform
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def machine():
    """The machine in one line: cores, CPU model, memory, kernel."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}){mem}, Linux {platform.release()}"


def build():
    """The checkout the bench ran from, and whether the binary is another build."""
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    other = " (the binary: another build, from ASG_CMK_OPERATOR_BIN)" if os.environ.get("ASG_CMK_OPERATOR_BIN") else ""
    return f"{rev}{other}"


def block(name, table):
    command = os.environ.get("BENCH_COMMAND", "python bench/" + name)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = f"Measured {when} on {machine()}, build `{build()}`, with `{command}`:"
    return f"<!-- bench:{name}:begin -->\n{head}\n\n{table.rstrip()}\n<!-- bench:{name}:end -->"


def write(name, table):
    """Replaces the block `name` of docs/benchmarks.md with `table`; says where it went."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    if begin not in text or end not in text:
        raise SystemExit(f"bench: docs/benchmarks.md has no {begin} ... {end} block to write into")
    a, b = text.index(begin), text.index(end) + len(end)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text[:a] + block(name, table) + text[b:])
    print(f"bench: wrote the table into docs/benchmarks.md ({name})", flush=True)
