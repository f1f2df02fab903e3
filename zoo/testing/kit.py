"""Running the checks: over one component (run_checks, check_component), a package (cases_of), or in pytest."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.core.errors import ZooError
from zoo.testing import checks
from zoo.testing.checks import NotApplicable, Skipped

# Every check, in the order they run, with what it asks of a component.
CHECKS: dict[str, str] = {
    "signature": "the factory takes its registry's context and types every parameter a recipe may set",
    "documented": "a docstring whose first line says what it is, and each parameter named in it",
    "builds": "builds with its defaults (and with each of its registered examples)",
    "output": "returns what its registry promises, of the right types and shapes",
    "deterministic": "the same seed (for augmentations: the same generator state) gives the same result",
    "device_dtype": "works in float64, and on CUDA when there is a GPU",
    "checkpoint": "its state survives a zoo checkpoint loaded with weights_only=True",
    "train_step": "a short training run with it gives finite losses and changes the parameters",
}


@dataclass(frozen=True)
class Case:
    """One component to check: its registry, its name (``package:name`` where two plugins share it), parameters."""

    registry: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = "".join(f",{k}={v}" for k, v in self.params.items())
        return f"{self.registry}:{self.name}{extra}"

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    @property
    def entry(self):
        from zoo.core.registry import REGISTRIES

        return REGISTRIES[self.registry].get(self.name)


@dataclass(frozen=True)
class CheckResult:
    """How one component fared in one check: ``status`` is pass, fail, skip (with the reason) or n/a."""

    case: Case
    check: str
    status: str
    detail: str = ""
    blocked: bool = False  # skipped because a check it needs did not pass (that one says what is wrong)

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def _run_one(case: Case, check: str) -> CheckResult:
    try:
        detail = getattr(checks, f"check_{check}")(case) or ""
    except NotApplicable as exc:
        return CheckResult(case, check, "n/a", str(exc))
    except Skipped as exc:
        return CheckResult(case, check, "skip", str(exc))
    except AssertionError as exc:
        return CheckResult(case, check, "fail", str(exc) or "assertion failed")
    except ZooError as exc:
        return CheckResult(case, check, "fail", str(exc))
    except Exception as exc:  # noqa: BLE001 - anything a component raises during a check is that check failing
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(
            case, check, "fail", f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        )
    return CheckResult(case, check, "pass", detail)


def run_checks(registry: str, name: str, params: Mapping[str, Any] | None = None) -> list[CheckResult]:
    """Every check on one component, in CHECKS order; never raises for what the component does.

    When the component does not build, or does not give what its registry promises, the checks after
    ``output`` are skipped: that failure says what is wrong, and everything after would only repeat it.
    """
    case = Case(registry, name, dict(params or {}))
    results: dict[str, CheckResult] = {}
    for check in CHECKS:
        blocker = _blocker(check, results)
        if blocker is None:
            results[check] = _run_one(case, check)
        else:
            results[check] = CheckResult(case, check, "skip", blocker, blocked=True)
    return list(results.values())


# What each check needs to have passed first. zoo refuses to build a component whose signature breaks
# its registry's contract, so nothing builds without that.
_NEEDS = {
    "builds": ("signature",),
    "output": ("builds",),
    **{c: ("builds", "output") for c in ("deterministic", "device_dtype", "checkpoint", "train_step")},
}


def _blocker(check: str, done: dict[str, CheckResult]) -> str | None:
    """Why ``check`` is skipped ("did not build"), or None to run it."""
    for need in _NEEDS.get(check, ()):
        if done[need].status != "pass":
            return _why_blocked(need)
    return None


def _why_blocked(need: str) -> str:
    return "did not build" if need == "builds" else f"its {need} check did not pass"


def check_component(registry: str, name: str, **params: Any) -> list[CheckResult]:
    """Run every check on one component; raise an AssertionError naming each check it fails.

    ``params`` are recipe parameters to build it with (default: its defaults, and its registered
    examples when it has some). Returns the results when nothing failed (skips included).
    """
    from zoo.core.registry import REGISTRIES

    entry = REGISTRIES[registry].get(name)
    sets = [dict(params)] if params else [dict(e) for e in entry.examples]
    results = [r for p in sets for r in run_checks(registry, name, p)]
    failed = [r for r in results if r.failed]
    if failed:
        raise AssertionError(
            f"{entry.title} fails {len(failed)} check(s):\n"
            + "\n".join(f"  {r.check} [{r.case}]: {r.detail}" for r in failed)
        )
    return results


def cases_of(package: str | None = None, plugin: Callable[[Any], bool] | None = None) -> list[Case]:
    """One Case per component (and per registered example) of an installed package, or of entries ``plugin`` picks.

    ``package`` is a distribution name ("zoo-extras"; "zoo" for the built-ins). Plugins are loaded first.
    """
    from zoo.core.registry import REGISTRIES, normalize_package

    if package is None and plugin is None:
        raise ValueError("name a package, or pass plugin= to pick entries")

    def chosen(entry) -> bool:
        if plugin is not None:
            return plugin(entry)
        return bool(entry.origin.package) and normalize_package(entry.origin.package) == normalize_package(package)

    cases = []
    for reg in REGISTRIES.values():
        for entry in reg:
            if chosen(entry):
                for example in entry.examples:
                    cases.append(Case(reg.name, reg.display_name(entry), dict(example)))
    return cases


def parametrize_with_checks(package: str | list[Case]):
    """A pytest mark: one test per (component, check) of ``package``, or of the given cases.

    Use it as::

        from zoo.testing import parametrize_with_checks

        @parametrize_with_checks("my-zoo-plugin")
        def test_zoo_conformance(case, check):
            check(case)

    A failing check fails its test with the check's message; a skipped or not-applicable one skips it.
    """
    import pytest

    cases = cases_of(package) if isinstance(package, str) else list(package)
    if not cases:
        raise ValueError(f"no components found for {package!r}: is the package installed (pip install -e .)?")

    def runner(check: str) -> Callable[[Case], None]:
        def run(case: Case) -> None:
            for need in _NEEDS.get(check, ()):
                first = _run_one(case, need)
                if first.status != "pass":
                    reason = _why_blocked(need)
                    pytest.skip(f"{reason}: {first.detail}")
            result = _run_one(case, check)
            if result.status in ("skip", "n/a"):
                pytest.skip(f"{check}: {result.detail}")
            assert result.status == "pass", f"{check} [{case}]: {result.detail}"

        run.__name__ = f"check_{check}"
        return run

    pairs = [(case, runner(check)) for case in cases for check in CHECKS]
    ids = [f"{case}-{check}" for case in cases for check in CHECKS]
    return pytest.mark.parametrize(("case", "check"), pairs, ids=ids)
