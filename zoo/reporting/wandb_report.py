"""A W&B Report comparing finished runs, built with ``wandb_workspaces.reports.v2`` (extra ``zoo[reports]``).

The report has: a markdown summary (each run folder's recipe and W&B runs, what differs between the
recipes, the metrics table); panel grids over exactly these runs, selected by their W&B run ids, with line
plots of the training and validation loss and accuracy and of the learning rate, against the optimizer
step, and a run comparer; the test confusion matrices and the augmentation grids as media panels; and
for each ensemble its members and its own run side by side.

``build_spec`` needs no network: the runsets are built without an entity (the library would otherwise
look each project up on the server) and their projects are written into the serialized model
(``internal.ReportViewspec``, the model the library saves) afterwards. ``publish`` loads that model back
into a ``Report``, fills in the default entity where none was given, and saves it; the library then looks
the projects up, as it does for any report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError
from zoo.core.io import MAX_TEXT_BYTES, atomic_write_text, read_text
from zoo.monitoring.wandb_logging import read_run_id
from zoo.monitoring.wandb_target import project as wandb_project
from zoo.monitoring.wandb_offline import STEP
from zoo.reporting.html_report import RunInfo, is_learning_rate, load_run

CURVES = (("loss", ["train/loss_epoch", "val/loss"]), ("accuracy", ["train/acc", "val/acc"]))
MEDIA = (("test confusion matrix", "test/confusion_matrix"), ("augmentations", "augmentations"))
MAX_TITLE = 128  # the library's limit


@dataclass
class WandbRun:
    """One W&B run the report shows."""

    run_id: str
    name: str
    role: str  # run, ensemble, member
    entity: str
    project: str


@dataclass
class Folder:
    """A zoo run folder and its W&B runs."""

    info: RunInfo
    runs: list[WandbRun] = field(default_factory=list)
    rate_keys: list[str] = field(default_factory=list)

    @property
    def own(self) -> WandbRun:
        return self.runs[0]

    @property
    def members(self) -> list[WandbRun]:
        return [r for r in self.runs if r.role == "member"]


def _reports_module():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise ZooError(
            "zoo report --wandb needs the wandb-workspaces package: pip install 'zoo[reports]' "
            "(or pip install wandb-workspaces)"
        ) from None
    return wr


def collect(path: str | Path) -> Folder:
    """A finished run folder's metrics, recipe and W&B runs (its own; an ensemble's members too)."""
    info = load_run(path)
    wandb = (info.recipe.get("logger") or {}).get("wandb") or {}
    entity, project = wandb.get("entity") or "", wandb_project(wandb.get("project"))
    own = read_run_id(info.path)
    if own is None:
        raise ZooError(
            f"{info.path}: no W&B run (no wandb_run_id.txt); it was trained with logger.wandb.mode=disabled"
        )
    folder = Folder(
        info, [WandbRun(own, info.name, "ensemble" if info.is_ensemble else "run", entity, project)]
    )
    seen = {own}
    for i, member in enumerate(info.metrics.get("members") or []):
        run_id = member.get("wandb_run_id") or read_run_id(info.path / "members" / f"m{i}")
        if run_id and run_id not in seen:  # a snapshot ensemble's members share one training run
            seen.add(run_id)
            name = f"{info.name}-m{i}" if "seed" in member else f"{info.name}-snapshots"
            folder.runs.append(WandbRun(run_id, name, "member", entity, project))
    rates = info.rates or {k: v for c in info.member_rates for k, v in c.items()}
    folder.rate_keys = sorted(k for k in rates if is_learning_rate(k))
    return folder


def _differences(trees: list[Any], prefix: str = "") -> dict[str, list[Any]]:
    """The keys whose values differ between these mappings: walked into while all of them are mappings, a
    whole value otherwise (a section one recipe lacks is shown whole)."""
    if all(isinstance(t, dict) for t in trees):
        keys = sorted({k for t in trees for k in t})
        return {
            k: v
            for key in keys
            for k, v in _differences([t.get(key) for t in trees], f"{prefix}{key}.").items()
        }
    if len({json.dumps(t, sort_keys=True) for t in trees}) > 1:
        return {prefix.rstrip("."): trees}
    return {}


def recipe_differences(folders: list[Folder]) -> dict[str, list[Any]]:
    """The recipe keys whose values differ between the folders (run names and logging left out)."""
    return _differences(
        [{k: v for k, v in f.info.recipe.items() if k not in ("name", "logger")} for f in folders]
    )


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def summary_markdown(folders: list[Folder]) -> str:
    """The report's opening text: the runs, what differs between their recipes, and their figures."""
    lines = [
        "Generated by `zoo report --wandb` from the run folders below; every panel shows exactly "
        "their W&B runs.",
        "",
        "| run folder | recipe | W&B runs | val acc | test acc | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for f in folders:
        m = f.info.metrics
        runs = ", ".join(f"`{r.name}` ({r.run_id})" for r in f.runs)
        seconds = f"{m['seconds']:.1f}" if isinstance(m.get("seconds"), (int, float)) else ""
        lines.append(
            f"| {f.info.name} | `{Path(f.info.recipe_source).name}` | {runs} | {_num(m.get('val_acc'))} | "
            f"{_num(m.get('test_acc'))} | {seconds} |"
        )
    differences = recipe_differences(folders)
    if differences:
        lines += [
            "",
            "**What differs between the recipes**",
            "",
            "| key | " + " | ".join(f.info.name for f in folders) + " |",
            "|---" * (len(folders) + 1) + "|",
        ]
        lines += [
            f"| `{k}` | " + " | ".join(_cell(v) for v in values) + " |" for k, values in differences.items()
        ]
    for f in folders:
        members = f.info.metrics.get("members") or []
        if not members:
            continue
        combine = (f.info.recipe.get("ensemble") or {}).get("combine", "")
        mean = sum(x["test_acc"] for x in members) / len(members)
        lines += [
            "",
            f"**Ensemble {f.info.name}**: {len(members)} members, combined by `{combine}`: test acc "
            f"{_num(f.info.metrics.get('test_acc'))} against {mean:.4f} for the average member.",
            "",
            "| member | seed | val acc | test acc |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| m{x.get('member', i)} | {x.get('seed', x.get('snapshot', ''))} | {_num(x.get('val_acc'))} | "
            f"{_num(x.get('test_acc'))} |"
            for i, x in enumerate(members)
        ]
    return "\n".join(lines)


def _runsets(wr, runs: list[WandbRun], label: str) -> tuple[list[Any], dict[str, tuple[str, str]]]:
    """One runset per W&B project, selecting these runs by id; and each runset's (entity, project)."""
    by_project: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        by_project.setdefault((run.entity, run.project), []).append(run.run_id)
    runsets, homes = [], {}
    for (entity, project), ids in by_project.items():
        ids_text = ", ".join(f"'{i}'" for i in ids)
        # no entity or project here: the library would look the project up on the server (see publish)
        runset = wr.Runset(
            name=label if len(by_project) == 1 else f"{label}: {project}", filters=f"ID in [{ids_text}]"
        )
        runsets.append(runset)
        homes[runset._id] = (entity, project)
    return runsets, homes


def _line(wr, title: str, keys: list[str], x: int, y: int, w: int = 8, log_y: bool = False):
    return wr.LinePlot(
        title=title,
        x=STEP,
        y=keys,
        title_x="optimizer step",
        log_y=log_y,
        layout=wr.Layout(x=x, y=y, w=w, h=7),
    )


def build_report(
    folders: list[Folder], *, title: str | None = None, project: str | None = None, entity: str | None = None
):
    """The ``wandb_workspaces`` Report (not saved) and each runset's (entity, project)."""
    wr = _reports_module()
    every = [r for f in folders for r in f.runs]
    home_entity = entity if entity is not None else folders[0].own.entity
    title = title or "zoo: " + ", ".join(f.info.name for f in folders)
    runsets, homes = _runsets(wr, every, "runs of this report")
    rates = sorted({k for f in folders for k in f.rate_keys}) or ["train/lr"]
    curves = [_line(wr, name, keys, 8 * i, 0) for i, (name, keys) in enumerate(CURVES)]
    panels = [
        *curves,
        _line(wr, "learning rate", rates, 16, 0, log_y=True),
        wr.RunComparer(diff_only="split", layout=wr.Layout(x=0, y=7, w=24, h=12)),
    ]
    media_sets, media_homes = _runsets(wr, every, "runs of this report")
    homes.update(media_homes)
    media = [
        wr.MediaBrowser(
            title=name, media_keys=[key], num_columns=3, layout=wr.Layout(x=12 * i, y=0, w=12, h=10)
        )
        for i, (name, key) in enumerate(MEDIA)
    ]
    blocks: list[Any] = [
        wr.MarkdownBlock(text=summary_markdown(folders)),
        wr.H2(text="Learning curves"),
        wr.P(
            text="Loss and accuracy per epoch and the learning rate of each optimizer group, against the "
            "optimizer step; then every metric and setting side by side."
        ),
        wr.PanelGrid(runsets=runsets, panels=panels),
        wr.H2(text="Test confusion matrices and augmentations"),
        wr.PanelGrid(runsets=media_sets, panels=media),
    ]
    for f in folders:
        if not f.members:
            continue
        sets, more = _runsets(wr, f.runs, f"{f.info.name}: members and ensemble")
        homes.update(more)
        blocks += [
            wr.H2(text=f"Ensemble {f.info.name}: the members and their combination"),
            wr.PanelGrid(
                runsets=sets,
                panels=[
                    wr.BarPlot(
                        title="test accuracy",
                        metrics=["test/acc"],
                        orientation="v",
                        layout=wr.Layout(x=0, y=0, w=8, h=7),
                    ),
                    wr.BarPlot(
                        title="validation accuracy (best checkpoint)",
                        metrics=["val/acc"],
                        orientation="v",
                        layout=wr.Layout(x=8, y=0, w=8, h=7),
                    ),
                    _line(wr, "members' validation accuracy", ["val/acc"], 16, 0),
                ],
            ),
        ]
    report = wr.Report(
        project=project or folders[0].own.project,
        entity=home_entity,
        title=title[:MAX_TITLE],
        description=f"{len(folders)} zoo run folders, {len(every)} W&B runs",
        blocks=blocks,
    )
    return report, homes


def build_spec(run_dirs: list[str | Path], **kwargs: Any):
    """The report of these finished run folders as the library's serialized model, without network."""
    internal = _reports_module().internal
    report, homes = build_report([collect(p) for p in run_dirs], **kwargs)
    model = report._to_model()
    for block in model.spec.blocks:
        if isinstance(block, internal.PanelGrid):
            for runset in block.metadata.run_sets:
                entity, project = homes[runset.id]
                runset.project = internal.Project(entity_name=entity, name=project)
    return model


def write_spec(model, out: str | Path) -> Path:
    out = Path(out)
    atomic_write_text(out, model.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n")
    return out


def read_spec(path: str | Path):
    internal = _reports_module().internal
    path = Path(path)
    if not path.exists():
        raise ZooError(f"--publish {path}: no such file")
    try:
        return internal.ReportViewspec.model_validate_json(read_text(path, MAX_TEXT_BYTES, "report spec"))
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise ZooError(
            f"--publish {path}: not a report spec written by zoo report --wandb --out ({first})"
        ) from None


def report_grids(model) -> list[dict[str, Any]]:
    """What each panel grid of a serialized report shows: its panels' types and, per runset, the W&B run
    ids it selects (what tests, and users, check a spec against)."""
    from wandb_workspaces.reports.v2 import internal

    grids = []
    for block in model.spec.blocks:
        if not isinstance(block, internal.PanelGrid):
            continue
        runsets = {}
        for runset in block.metadata.run_sets:
            ids = [
                f["value"]
                for f in runset.filters.get("filters", [])
                if f["key"] == {"section": "run", "name": "name"} and f["op"] == "IN"
            ]
            runsets[runset.name] = [i for found in ids for i in found]
        panels = block.metadata.panel_bank_section_config.panels
        grids.append({"runsets": runsets, "panels": panels})
    return grids


def publish(model, entity: str | None = None) -> str:
    """Save a report on the W&B server; its URL. The runsets' projects are looked up there now."""
    from zoo.monitoring.wandb_target import api_key_configured

    wr = _reports_module()
    if not api_key_configured():
        raise ZooError("publishing a W&B report needs an API key: run `wandb login` or set WANDB_API_KEY")
    from wandb_workspaces.reports.v2 import interface

    report = wr.Report._from_model(model)
    default = entity or report.entity or interface._get_api().default_entity
    report.entity = default
    for block in report.blocks:
        for runset in getattr(block, "runsets", None) or []:
            runset.entity = runset.entity or default
            runset.project = runset.project or report.project
    report.save()
    return report.url
