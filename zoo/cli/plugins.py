"""``zoo plugins``: which plugins zoo found, from which package and version, what each registered, what failed."""

from __future__ import annotations

import argparse
import json


def plugin_rows() -> list[dict]:
    """One row per plugin: package, version, entry point (or file/module), status, error, components, clashes."""
    from zoo.core import discovery
    from zoo.core.registry import REGISTRIES

    rows = []
    for record in discovery.records():
        components: dict[str, list[str]] = {}
        problems, clashes = [], []
        for reg in REGISTRIES.values():
            for entry in reg.entries_from(record.label):
                components.setdefault(reg.name, []).append(entry.name)
                problems += [f"{reg.name} '{entry.name}': {p}" for p in entry.problems]
                if reg.display_name(entry) != entry.name:
                    clashes.append(f"{reg.name} '{entry.name}' (use {reg.display_name(entry)})")
        origin = record.origin
        rows.append(
            {
                "package": origin.package,
                "version": origin.version if origin.package else None,
                "plugin": record.entry_point or origin.file or origin.module,
                "label": record.label,
                "status": record.status,
                "error": record.error,
                "components": {k: sorted(v) for k, v in components.items()},
                "problems": problems,
                "clashes": clashes,
            }
        )
    return rows


def cmd_plugins(ns: argparse.Namespace) -> int:
    rows = plugin_rows()
    if ns.json:
        print(json.dumps(rows))
        return 0
    by_package: dict[str, list[dict]] = {}
    for row in rows:
        key = f"{row['package']} {row['version']}" if row["package"] else "(not from a package)"
        by_package.setdefault(key, []).append(row)
    for package, members in by_package.items():
        print(package)
        for row in members:
            print(f"  {row['plugin']}  [{row['status']}]")
            if row["error"]:
                print(f"      {row['error']}")
            for registry, names in row["components"].items():
                print(f"      {registry}: {', '.join(names)}")
            for clash in row["clashes"]:
                print(f"      also registered by another plugin: {clash}")
            for problem in row["problems"]:
                print(f"      cannot be used: {problem}")
    failed = sum(r["status"] == "failed" for r in rows)
    disabled = sum(r["status"] == "disabled" for r in rows)
    print(f"\n{len(rows)} plugins: {len(rows) - failed - disabled} loaded, {failed} failed, {disabled} disabled")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plugins",
        help="list installed plugins: package, version, components, and any that failed or are disabled",
        description="Every plugin zoo found through the zoo.plugins entry-point group, by package and version: "
        "what each registered, whether it loaded, failed (and why) or was disabled (ZOO_DISABLE_PLUGINS or "
        "--disable-plugins), names two plugins both registered, and components that cannot be used.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)
