"""``zoo check-plugin PACKAGE_OR_FILE``: the conformance kit (zoo.testing) over a plugin's components, as a table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.cli.args import add_plugin_argument
from zoo.core.errors import ZooError

MARKS = {"pass": "ok", "fail": "FAIL", "skip": "skip", "n/a": "-"}


def _cases(target: str):
    """The components ``target`` supplies: an installed package, a plugin module, or a .py file."""
    from zoo.core import discovery
    from zoo.core.registry import normalize_package
    from zoo.testing import cases_of

    discovery.load_plugins()
    packages = {normalize_package(r.origin.package) for r in discovery.records() if r.origin.package}
    if normalize_package(target) in packages:
        failed = [r for r in discovery.records() if r.origin.package and r.status != "loaded"
                  and normalize_package(r.origin.package) == normalize_package(target)]
        for record in failed:
            if record.status == "failed":
                raise ZooError(f"check-plugin: {record.error}")
        return cases_of(target)
    if target.endswith(".py") or "/" in target:
        path = Path(target).resolve()
        discovery.load_local([target], kind="check-plugin")
        return cases_of(plugin=lambda e: e.origin.file == str(path))
    try:
        discovery.load_local([target], kind="check-plugin")
    except ZooError as exc:
        known = ", ".join(sorted(packages)) or "none"
        raise ZooError(
            f"check-plugin: {target} is not an installed plugin package (installed: {known}), a plugin module "
            f"or a .py file ({exc})"
        ) from None
    # an entry-point module imported before under its package's name keeps that origin
    return cases_of(plugin=lambda e: (e.origin.module or "") == target or (e.origin.module or "").startswith(target + "."))


def cmd_check_plugin(ns: argparse.Namespace) -> int:
    from zoo.testing import CHECKS, run_checks

    cases = _cases(ns.target)
    if ns.registry:
        cases = [c for c in cases if c.registry == ns.registry]
    if not cases:
        raise ZooError(f"check-plugin: {ns.target} registers no components" + (f" in {ns.registry}" if ns.registry else ""))
    results = []
    for case in cases:
        results += run_checks(case.registry, case.name, case.params)
    if ns.json:
        print(json.dumps([
            {"component": str(r.case), "registry": r.case.registry, "name": r.case.name, "check": r.check,
             "status": r.status, "detail": r.detail}
            for r in results
        ]))
    else:
        _print_table(cases, results, list(CHECKS))
    failed = [r for r in results if r.failed]
    return 1 if failed else 0


def _print_table(cases, results, checks: list[str]) -> None:
    width = max(len(str(c)) for c in cases)
    print(f"{'component':<{width}}  " + "  ".join(checks))
    by_case: dict[str, dict[str, str]] = {}
    for r in results:
        by_case.setdefault(str(r.case), {})[r.check] = r.status
    for case in cases:
        row = by_case[str(case)]
        print(f"{str(case):<{width}}  " + "  ".join(f"{MARKS[row[c]]:<{len(c)}}" for c in checks))
    notes = [r for r in results if r.status == "fail" or (r.status == "skip" and not r.blocked)]
    if notes:
        print()
    for r in notes:
        print(f"{r.status.upper()} {r.case} {r.check}: {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip", "n/a")}
    print(
        f"\n{len(cases)} components: {counts['pass']} checks passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped, {counts['n/a']} not applicable",
        file=sys.stdout,
    )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check-plugin",
        help="run the conformance kit over a plugin's components: a pass/fail table, exit 1 on a failure",
        description="Check every component a plugin registers against its registry's contract (zoo.testing; "
        "docs/plugins.md): signature, docs, building, output types and shapes, determinism, float64 and CUDA, "
        "checkpoint round trip with weights_only loading, a short training step. TARGET is an installed "
        "package (zoo-extras; zoo for the built-ins), a plugin module, or a .py file.",
    )
    p.add_argument("target", metavar="PACKAGE_OR_FILE")
    p.add_argument("--registry", help="only this registry's components (activations, models, ...)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_check_plugin)
