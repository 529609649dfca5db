"""How long the query commands take from a cold start, and how much of it is imports (run by
hand).

    python benchmarks/startup.py --store STORE [--runs 7] [--model NAME] [--python PATH]

Builds nothing: it reads the store given. Each command runs ``--runs`` times, each time in a
fresh process, and the script prints per command the median wall time, the median time spent
importing (the sum of the top-level entries of ``python -X importtime``, taken in runs of their
own since the flag slows the import), what remains (the interpreter's own start, the work and
the printing) and the heavy libraries the command loaded. The imports include the
interpreter's own (``site``, ``encodings``), so the bare start below overlaps them.

The commands are ``--help``, ``--version``, ``tracks`` (table and csv), ``info``, ``stats``,
``models``, ``rankings`` of one track and ``similar`` to one track; the last two use
``--model`` (default: the first model the store has scores of) and the first track of its
rankings. A line before the table gives the interpreter's bare start (``python -c pass``), its
start with the imports every catalog read needs (:data:`CATALOG_READ`: a floor under those
commands), the load average, and whether Python writes bytecode caches (with
``PYTHONDONTWRITEBYTECODE`` set, the project's own modules are compiled again in every process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Libraries whose presence in a command's process says where its import time went.
LIBRARIES = ("numpy", "pyarrow", "pyarrow.dataset", "pandas", "fsspec", "zarr", "dask",
             "xarray", "scipy", "sklearn", "torch", "librosa", "matplotlib")

#: What every command that reads a catalog imports: pushdown goes through ``pyarrow.dataset``,
#: which imports pandas when it is installed, and the frames are pandas.
CATALOG_READ = ("numpy", "pyarrow.parquet", "pyarrow.dataset", "pandas", "fsspec")

#: Runs the command line as the ``featurestore`` script does, then names the libraries the
#: process holds (the command's own output is discarded by the caller).
_PROBE = """
import sys
from featurestore.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print("LOADED", *[m for m in {libraries!r} if m in sys.modules], file=sys.stderr)
sys.exit(code)
"""


def _first_scored_track(store: str, model: str) -> str:
    import pyarrow.parquet as pq

    table = next(Path(store, "scores", model).glob("*/rankings.parquet"))
    return str(pq.read_table(table, columns=["track_id"])["track_id"][0])


def _first_model(store: str) -> str | None:
    scored = sorted(p.name for p in Path(store, "scores").glob("*") if p.is_dir())
    return scored[0] if scored else None


def command_lines(store: str, model: str | None) -> dict[str, list[str]]:
    """The commands timed, by label."""
    lines = {"--help": ["--help"], "--version": ["--version"],
             "tracks": ["tracks", "--store", store],
             "tracks --format csv": ["tracks", "--store", store, "--format", "csv"],
             "info": ["info", "--store", store],
             "stats": ["stats", "--store", store],
             "models": ["models", "--store", store]}
    if model is not None:
        track = _first_scored_track(store, model)
        lines["rankings --track"] = ["rankings", "--store", store, "--model", model, "--track",
                                     track]
        lines["similar --track"] = ["similar", "--store", store, "--model", model, "--track",
                                    track]
    return lines


#: Where the commands run: a folder of no checkout, so that ``python -c`` imports the
#: featurestore installed in the interpreter, not one in the current folder.
_NEUTRAL = tempfile.gettempdir()


def _run(args: list[str], python: str, importtime: bool = False
         ) -> tuple[float, subprocess.CompletedProcess]:
    flags = ["-X", "importtime"] if importtime else []
    probe = _PROBE.format(libraries=LIBRARIES)
    start = time.perf_counter()
    res = subprocess.run([python, *flags, "-c", probe, *args], capture_output=True, text=True,
                         timeout=300, cwd=_NEUTRAL)
    wall = time.perf_counter() - start
    return wall, res


def import_seconds(stderr: str) -> float:
    """The sum of the top-level (not nested) entries of ``-X importtime`` output: every import
    the process made, each counted once."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            # a top-level entry's name follows one space; nested ones are indented further
            if cumulative.strip().isdigit() and name.startswith(" ") and name[1] != " ":
                total += int(cumulative)
    return total / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="the store the queries read (not written)")
    p.add_argument("--runs", type=int, default=7, help="fresh processes per command")
    p.add_argument("--model", help="the model of rankings and similar (default: the first "
                                   "scored one)")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter that has featurestore installed (default: this one)")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = p.parse_args()

    bare = statistics.median(
        _timed([args.python, "-c", "pass"]) for _ in range(args.runs))
    floor = statistics.median(
        _timed([args.python, "-c", f"import {', '.join(CATALOG_READ)}"])
        for _ in range(args.runs))
    bytecode = subprocess.run([args.python, "-c", "import sys, featurestore; print(not sys."
                               "flags.dont_write_bytecode, featurestore.__file__)"],
                              capture_output=True, text=True, cwd=_NEUTRAL)
    print(f"python {args.python}: bare start {bare * 1000:.0f} ms; bare start and import of "
          f"{', '.join(CATALOG_READ)} {floor * 1000:.0f} ms; writes bytecode caches, "
          f"featurestore at: {bytecode.stdout.strip()}; load average {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs")
    rows = []
    for label, line in command_lines(args.store, args.model or _first_model(args.store)).items():
        walls, imports = [], []
        for _ in range(args.runs):
            wall, res = _run(line, args.python)
            walls.append(wall)
            imports.append(import_seconds(_run(line, args.python, importtime=True)[1].stderr))
        loaded = next(x for x in res.stderr.splitlines() if x.startswith("LOADED")).split()[1:]
        if res.returncode:  # timed all the same, but said: an error path is not the query's
            last = res.stderr.splitlines()[-2] if len(res.stderr.splitlines()) > 1 else ""
            print(f"{label}: exit code {res.returncode}: {last}")
        rows.append({"command": label, "wall_s": statistics.median(walls),
                     "imports_s": statistics.median(imports), "libraries": loaded,
                     "exit_code": res.returncode})
    print(f"{'command':<22} {'wall ms':>8} {'imports ms':>10} {'rest ms':>8}  libraries loaded")
    for r in rows:
        rest = r["wall_s"] - r["imports_s"]
        failed = f"  (exit code {r['exit_code']})" if r["exit_code"] else ""
        print(f"{r['command']:<22} {r['wall_s'] * 1000:>8.0f} {r['imports_s'] * 1000:>10.0f} "
              f"{rest * 1000:>8.0f}  {' '.join(r['libraries']) or '-'}{failed}")
    print(f"(median of {args.runs} fresh processes each; load average now "
          f"{os.getloadavg()[0]:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"bare_start_s": bare, "catalog_read_floor_s": floor,
                                               "commands": rows},
                                              indent=2))


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=_NEUTRAL)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
