"""zoo export measured: every format of every given run, read back and compared with zoo's evaluation.

For each run folder and each format (``--formats``; all four by default), with and without the run's
test-time augmentation (``--tta both``; ``off`` or ``on`` for one of them), the run is exported into a
temporary folder by zoo.export.run.export_run, which reads the file back (ONNX through onnxruntime on the
CPU) and compares it with zoo's own evaluation on up to 1,000 images of the run's test split. Printed per
export: the images compared, the largest absolute difference of a probability, the top-1 agreement, whether
the check passed, the seconds the export took (writing and checking), and the model file's size. A run
whose recipe has no test-time views is exported once.

    python benchmarks/export_parity.py runs/resnet-digits-* runs/mlp-digits-ensemble-*        # table
    python benchmarks/export_parity.py runs/<run> --formats onnx --tta on --json              # + JSON line
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(run: Path, fmt: str, tta: bool, scratch: Path) -> dict:
    from zoo.core.errors import ZooError
    from zoo.export import FILES
    from zoo.export.run import ExportCheckFailed, export_run

    out = scratch / f"{run.name}-{fmt}-{'tta' if tta else 'plain'}"
    row = {"run": str(run), "format": fmt, "tta": tta}
    start = time.perf_counter()
    try:
        result = export_run(run, fmt, out, tta=tta)
        parity, passed = result.parity, True
    except ExportCheckFailed as failed:
        parity, passed = failed.parity, False
    except ZooError as exc:
        return {**row, "error": str(exc)}
    row.update(samples=parity.samples, max_abs_diff=parity.max_abs_diff, top1_agreement=parity.top1_agreement,
               passed=passed, seconds=round(time.perf_counter() - start, 2))
    if passed:
        row["file_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.name.startswith(FILES[fmt]))
    return row


def has_tta(run: Path) -> bool:
    import yaml

    tta = (yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("tta") or {}
    return bool(tta.get("flip") or tta.get("crops"))


def table(rows: list[dict]) -> str:
    lines = [f"{'run':<40} {'format':<17} {'tta':<4} {'images':>6} {'max |diff|':>10} {'top-1':>7} "
             f"{'ok':<3} {'seconds':>7} {'file MB':>7}"]
    for r in rows:
        head = f"{Path(r['run']).name[:40]:<40} {r['format']:<17} {'yes' if r['tta'] else 'no':<4}"
        if "error" in r:
            lines.append(f"{head} error: {r['error']}")
            continue
        size = f"{r['file_bytes'] / 1e6:7.2f}" if "file_bytes" in r else f"{'-':>7}"
        ok = "yes" if r["passed"] else "NO"
        figures = f"{r['samples']:>6} {r['max_abs_diff']:>10.2e} {100 * r['top1_agreement']:>6.2f}%"
        lines.append(f"{head} {figures} {ok:<3} {r['seconds']:>7.2f} {size}")
    return "\n".join(lines)


def main() -> int:
    from zoo.export import FILES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--formats", nargs="+", choices=list(FILES), default=list(FILES))
    parser.add_argument("--tta", choices=["off", "on", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line at the end")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="export-parity-") as scratch:
        for run in args.runs:
            settings = {"off": [False], "on": [True], "both": [False, True]}[args.tta]
            if not has_tta(run):
                settings = [False]
            for fmt in args.formats:
                for tta in settings:
                    rows.append(measure(run, fmt, tta, Path(scratch)))
                    print(f"{run.name} {fmt} tta={tta}: done", file=sys.stderr)
    print(table(rows))
    if args.json:
        print(json.dumps({"rows": rows, "all_passed": all(r.get("passed") for r in rows)}))
    return 0 if all(r.get("passed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
