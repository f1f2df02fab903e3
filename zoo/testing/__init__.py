"""zoo.testing: the conformance kit for plugin components, the way scikit-learn's check_estimator is for estimators.

``check_component(registry, name, **params)`` runs every check on one component and raises an
AssertionError naming the checks it fails; ``run_checks`` returns the results instead;
``parametrize_with_checks(package)`` makes one pytest case per component and check of a package;
``zoo check-plugin PACKAGE_OR_FILE`` prints them as a table. The checks (zoo.testing.checks) hold
zoo's own components to the same contracts, so the built-ins are the worked examples.

Layer: may import zoo.core, zoo.data, zoo.monitoring and zoo.training (for the checkpoint format);
the CLI imports it, nothing else in zoo does. pytest is imported only by ``parametrize_with_checks``.
"""

from zoo.testing.kit import (
    CHECKS,
    Case,
    CheckResult,
    cases_of,
    check_component,
    parametrize_with_checks,
    run_checks,
)

__all__ = [
    "CHECKS",
    "Case",
    "CheckResult",
    "cases_of",
    "check_component",
    "parametrize_with_checks",
    "run_checks",
]
