"""The one place that resolves recipes: read YAML, merge bases, apply overrides, validate.

A recipe is a YAML mapping with the sections below. ``base:`` names one recipe (or a list) to
inherit from, relative to the file that names it; mappings merge key by key, anything else
(lists included) is replaced whole. Overrides ``key.sub=value`` from the command line are parsed as
YAML values and applied last. The result is validated with pydantic, and every component spec is
checked against its registry, with its defaults filled in, so the resolved recipe says everything
the run will do.

Reading is bounded: YAML aliases may not expand a file past ``MAX_VALUES`` values, nesting stops at
``MAX_NESTING`` levels and ``base:`` chains at ``MAX_BASES``, so a hostile or mistaken file is refused in
milliseconds instead of exhausting memory or the interpreter's stack; non-finite numbers are refused too.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zoo.core.errors import RecipeError, ZooError, brief, did_you_mean
from zoo.core.io import MAX_TEXT_BYTES, read_text
from zoo.core.registry import Seed

DEFAULT_RECIPE = "mlp-digits"
# the working folder's recipes/, then the ones shipped beside the zoo package (zoo/core/recipe.py -> recipes/)
RECIPE_DIRS = (Path.cwd() / "recipes", Path(__file__).resolve().parents[2] / "recipes")
RUN_MARKER = ".zoo-run"  # the file that makes a folder a run folder (zoo.training.run_folder)

# A recipe is a few hundred values at most; these bounds stop alias bombs and runaway nesting early.
MAX_VALUES = 10_000  # scalars, lists and mappings of a file (or an override) with every alias written out
MAX_NESTING = 50  # levels of lists and mappings inside one another
MAX_BASES = 32  # recipes in one chain of base: files
MAX_NAME_BYTES = 200  # a run folder's name adds a 21-character suffix; file systems allow 255 bytes

# Trainer arguments zoo passes itself, with what a recipe does instead.
TRAINER_SET_BY_ZOO = {
    "logger": "zoo passes its own loggers (logs/metrics.csv and W&B); configure W&B under logger.wandb "
    "(logger.wandb.mode=disabled turns it off), and add TensorBoard, MLflow or other Lightning loggers under "
    "logger.tensorboard, logger.mlflow or logger.extra",
    "default_root_dir": "the run folder is the root; choose it with --run-dir",
}


class _Section(BaseModel):
    # strict: pydantic would otherwise take `max_epochs: true` as 1, `shuffle: 1` as true and `"3"` as 3
    model_config = ConfigDict(extra="forbid", strict=True)


class TrainerSection(_Section):
    """Lightning Trainer arguments. The common ones are listed; any other Trainer argument is accepted too."""

    model_config = ConfigDict(extra="allow")

    max_epochs: int = Field(20, ge=1, description="Epochs to train.")
    max_steps: int = Field(
        -1, ge=-1, description="Stop after this many optimizer steps (-1: no limit; 0 is refused)."
    )
    accelerator: str = Field("auto", description="cpu, gpu, mps, or auto.")
    devices: int | str | list[int] = Field("auto", description="Number of devices, their indices, or auto.")
    num_nodes: int = Field(1, ge=1, description="Machines taking part in a DDP run.")
    strategy: str = Field("auto", description="auto, ddp, ddp_spawn, fsdp, ...")
    precision: str | int | None = Field(None, description="32-true, bf16-mixed, 16-mixed, ...")
    deterministic: bool | Literal["warn"] = Field(
        False,
        description="Use deterministic algorithms only (warn: where they exist). CPU results are the same either "
        "way; on a GPU true makes reruns bit-identical but rules out cuDNN's autotuner, and it slows a ResNet-20 "
        "by 10-25% even on a CPU.",
    )
    gradient_clip_val: float | None = Field(None, ge=0, description="Clip gradients to this norm.")
    check_val_every_n_epoch: int = Field(1, ge=1, description="Validate every this many epochs.")
    log_every_n_steps: int = Field(10, ge=1, description="Log training metrics every this many steps.")
    enable_progress_bar: bool | None = Field(None, description="None: only when the terminal is interactive.")
    callbacks: list[Any] = Field(
        default_factory=list,
        description="Lightning callbacks besides zoo's own, as LightningCLI writes them: `{class_path: "
        "lightning.pytorch.callbacks.EarlyStopping, init_args: {monitor: val/acc, mode: max, patience: 5}}` "
        "stops on a plateau; `{class_path: WeightAveraging}` (a bare name is looked up in "
        "lightning.pytorch.callbacks) validates, saves and tests the equal average of the weights of every "
        "step from the first: stochastic weight averaging over the whole run (Lightning's "
        "StochasticWeightAveraging is refused: its average would never be tested). A class path imports only lightning, pytorch_lightning or "
        "torch modules, or a module loaded as a plugin. Checkpoint, progress-bar, model-summary, learning-rate "
        "monitor, spike-detection and tuner callbacks are refused (zoo has its own, or the recipe says), as is "
        "a second weight average beside ema. EarlyStopping's monitor is a metric a run logs: val/acc, "
        "val/loss, train/acc, train/loss_epoch, train/loss_step, train/lr (train/lr/pg1, ... with several "
        "parameter groups) or one its monitors log. "
        "A resumed run rebuilds them from its recipe.yaml and gets their "
        "state back from the checkpoint.",
    )

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError(
                "0 steps would leave the network untrained; give a positive number, or -1 for no limit"
            )
        return value


class RegularizationSection(_Section):
    """Penalties and target smoothing on top of the optimizer's own weight decay."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mix this much of the uniform distribution into targets.")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights (sparsity); with l2, an elastic net.")
    l2: float = Field(0.0, ge=0, description="L2 penalty on weights, added to the loss (unlike weight_decay).")
    decay_norm_and_bias: bool = Field(
        False, description="Apply weight decay and penalties to biases and norm scales too."
    )


class CheckpointSection(_Section):
    """When checkpoints are written and what guards them; every file is written atomically."""

    every_n_epochs: int = Field(
        1, ge=1, description="Write last.ckpt (and best.ckpt when validation improved) every this many epochs."
    )
    on_signal: bool = Field(
        True, description="On SIGINT/SIGTERM/SIGHUP finish the current step (and an epoch end it reached), write "
        "last.ckpt and stop (resume with --resume).",
    )
    requeue_signal: Literal["SIGUSR1", "SIGUSR2"] | None = Field(
        "SIGUSR1",
        description="In a SLURM batch job, the signal that asks for a requeue (sbatch --signal=USR1@90): stop "
        "as on SIGTERM (with on_signal), then `scontrol requeue` the job, whose `zoo train --run-dir` goes on "
        "from that checkpoint. null: not handled (the signal ends the process).",
    )
    divergence_guard: bool = Field(
        True,
        description="Stop when the training loss turns NaN/inf or passes 3x its initial value, keeping the last "
        "good checkpoint (the `divergence` monitor with its defaults, unless `monitors` lists one).",
    )


class FinetuneSection(_Section):
    """What trains when a run starts from trained weights: frozen parameters, the backbone's lr, batch-norm statistics."""

    freeze: list[str] = Field(
        default_factory=list,
        description="Parameters not trained, as fnmatch patterns on their names in the network (`zoo show` lists "
        "them: `stem.*`, `blocks.[0-3].*`, `net.layer1.*` for timm); a pattern matching nothing is an error.",
    )
    freeze_stages: int | None = Field(
        None, ge=0, description="Also freeze the stem and the first this many stages (0: the stem alone), for models "
        "that name their stages (zoo's resnet, timm's through its group_matcher); null: none.",
    )
    unfreeze_at_epoch: int | None = Field(
        None, ge=1, description="The frozen parameters train too from this epoch on (0-based, as the logs count); "
        "null: frozen for the whole run.",
    )
    backbone_lr_mult: float = Field(
        1.0, gt=0, description="Every parameter but the head (the layer giving the logits) learns at the "
        "optimizer's lr times this; schedules scale both alike.",
    )
    freeze_bn_stats: bool = Field(
        False, description="Keep batch-norm running statistics as the weights brought them (the norms run in "
        "eval mode while training); their scale and shift still train unless frozen.",
    )


class EMASection(_Section):
    """An exponential moving average of the weights (Polyak averaging): what is validated, saved and tested."""

    decay: float = Field(
        0.999, gt=0, lt=1, description="Each update keeps this share of the average: avg = d*avg + (1-d)*w."
    )
    every_n_steps: int = Field(1, ge=1, description="Update the average every this many optimizer steps.")
    start_step: int = Field(
        0, ge=0, description="First optimizer step that updates the average; the first update copies the weights."
    )


class PerformanceSection(_Section):
    """How the network runs: the same model and results, faster on the hardware that profits."""

    channels_last: bool = Field(
        False, description="Keep conv weights and image batches in NHWC order (faster convolutions on recent GPUs)."
    )
    compile: bool = Field(False, description="Compile the network with torch.compile before training.")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile's mode (reduce-overhead: CUDA graphs; max-autotune: kernel search)."
    )
    compile_backend: str = Field("inductor", description="torch.compile's backend (eager: no code generation).")
    steps_per_execution: int = Field(
        1,
        ge=1,
        description="Optimizer steps per Lightning training step: batches reach the model this many at a "
        "time, so Lightning's per-step cost is paid once per group; the updates are the same, in the same "
        "order. Optimizer hooks, clipping and the schedule still act on every step; batch hooks, step "
        "logging and signal checkpoints once per group. On one device only, and not with ema, "
        "accumulate_grad_batches or fp16 loss scaling: there a run takes one step per batch and says so.",
    )


class LRScalingSection(_Section):
    """Learning-rate scaling: linear in the global batch (Goyal et al. 2017), and for biases and norm parameters."""

    reference_batch_size: int | None = Field(
        None,
        ge=1,
        description="The batch size the recipe's lr was tuned for; the lr is multiplied by "
        "global batch / this (global batch = batch_size x devices x nodes x accumulation). None: no scaling.",
    )
    norm_and_bias: float = Field(
        1.0,
        gt=0,
        description="Multiplier of the lr of biases and norm parameters (1-D tensors) over the optimizer's lr "
        "(airbench trains batch-norm shifts at 64x).",
    )


class EnsembleSection(_Section):
    """Several members trained from one recipe, combined into one predictor."""

    members: int = Field(5, ge=1, description="How many members to train (ignored for snapshot ensembles).")
    seeds: list[Seed] | None = Field(None, description="Seed of each member; default: recipe seed + 0, 1, 2, ...")
    bootstrap: bool = Field(False, description="Train each member on a bootstrap resample of the training split.")
    member_overrides: list[list[str]] | None = Field(
        None, description="Per-member key=value overrides (e.g. a different model each), one list per member."
    )
    combine: Literal["mean", "vote"] = Field(
        "mean",
        description="Average probabilities, or majority vote (a tie goes to the higher summed probability; "
        "a vote ensemble reports vote shares, not probabilities: no NLL or AUC).",
    )
    parallel: int = Field(
        1, ge=1, description="Members trained at once, each in its own process (and on its own GPU when there are GPUs)."
    )
    snapshot: bool = Field(
        False,
        description="Snapshot ensemble: one run with a cosine_restarts schedule; the model at the end of "
        "each cycle is a member (Huang et al. 2017).",
    )


class TTASection(_Section):
    """Test-time augmentation: validation, test and predictions average probabilities over several views."""

    flip: bool = Field(False, description="Add the horizontal mirror of every view.")
    crops: int = Field(0, ge=0, le=8, description="Shifted copies: the 4 axis neighbours first, then the diagonals.")
    shift: int = Field(2, ge=1, description="Pixels each shifted copy moves.")


class WandbSection(_Section):
    """Weights & Biases: one run per job (rank 0 only), offline unless an API key is configured."""

    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto",
        description="auto: WANDB_MODE if set, else online when an API key is configured and offline otherwise; "
        "WANDB_MODE=offline or disabled (or WANDB_DISABLED=true) turns any mode down, and online without an "
        "API key, or with a server that does not answer within WANDB_INIT_TIMEOUT seconds (15), logs offline.",
    )
    project: str | None = Field(None, description="W&B project; None: WANDB_PROJECT, else zoo.")
    entity: str | None = Field(None, description="W&B entity (user or team); None: the account's default.")
    group: str | None = Field(
        None, description="Group runs together; None: an ensemble or a sweep groups its runs by its folder's name."
    )
    tags: list[str] = Field(default_factory=list, description="Tags of the run.")
    name: str | None = Field(None, description="Run name; None: the run folder's name.")
    log_model: bool | Literal["best"] = Field(
        False,
        description="Upload checkpoints as a W&B model artifact when training ends: true (best.ckpt and "
        "last.ckpt), best (best.ckpt only) or false.",
    )


class TensorBoardSection(_Section):
    """TensorBoard event files in the run folder (Lightning's TensorBoardLogger; the `loggers` extra)."""

    enabled: bool = Field(
        False, description="Write the metrics to <run>/logs/tensorboard (tensorboard --logdir runs); a resumed run "
        "writes there too. E.g. `logger: {tensorboard: {enabled: true}}`."
    )


class MLflowSection(_Section):
    """An MLflow run per zoo run (rank 0 only; Lightning's MLFlowLogger; the `loggers` extra)."""

    enabled: bool = Field(
        False,
        description="Log the recipe and metrics to MLflow; a resumed run continues its MLflow run. E.g. "
        "`logger: {mlflow: {enabled: true, tracking_uri: sqlite:///mlflow.db, experiment: digits}}`.",
    )
    tracking_uri: str | None = Field(
        None,
        description="The tracking store; None: MLFLOW_TRACKING_URI if set, else sqlite:///mlruns/mlflow.db (in the "
        "working folder, artifacts in mlruns/artifacts).",
    )
    experiment: str | None = Field(None, description="MLflow experiment; None: zoo.")
    run_name: str | None = Field(None, description="MLflow run name; None: the run folder's name.")


class LoggerSection(_Section):
    """Where metrics go besides the run folder's logs/metrics.csv."""

    wandb: WandbSection = Field(default_factory=WandbSection)
    tensorboard: TensorBoardSection = Field(default_factory=TensorBoardSection)
    mlflow: MLflowSection = Field(default_factory=MLflowSection)
    extra: list[Any] = Field(
        default_factory=list,
        description="Other Lightning loggers, as `{class_path: ..., init_args: {...}}` (a bare name is looked up "
        "in lightning.pytorch.loggers), under the same import rule as trainer.callbacks; they log on global "
        "rank 0, and a resumed run starts them afresh. E.g. `[{class_path: CometLogger, init_args: {project: "
        "zoo}}]` (with comet_ml installed).",
    )


class Recipe(_Section):
    """A whole experiment: what to train, on what, and how."""

    model: dict[str, Any] = Field(description="The network: a `models` spec.")
    data: dict[str, Any] = Field(description="The data set: a `datasets` spec.")
    optimizer: dict[str, Any] = Field(description="An `optimizers` spec (default: adamw).")
    schedule: dict[str, Any] = Field(description="A `schedules` spec (default: constant).")
    augment: list[dict[str, Any]] = Field(
        default_factory=list, description="`augmentations` specs applied in order to training batches."
    )
    logger: LoggerSection = Field(default_factory=LoggerSection)
    monitors: list[dict[str, Any]] = Field(
        default_factory=list, description="`monitors` specs: training callbacks (activations, update_ratio, divergence)."
    )
    tta: TTASection = Field(default_factory=TTASection)
    regularization: RegularizationSection = Field(default_factory=RegularizationSection)
    lr_scaling: LRScalingSection = Field(default_factory=LRScalingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    ema: EMASection | None = Field(None, description="Average the weights over training steps (None: no averaging).")
    init_from: str | None = Field(
        None, description="Start from another zoo run's weights: its run folder (its best checkpoint, as zoo eval "
        "picks) or a checkpoint file. Tensors of matching names and shapes are loaded, the head is new when the "
        "class count differs; the source's own plugins load only with --plugin. The run's recipe.yaml records the "
        "checkpoint file; a resumed run does not load it again.",
    )
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    performance: PerformanceSection = Field(default_factory=PerformanceSection)
    ensemble: EnsembleSection | None = Field(None, description="Train an ensemble instead of one model.")
    trainer: TrainerSection = Field(default_factory=TrainerSection, description="Lightning Trainer arguments.")
    seed: Seed = Field(0, description="Seed for every random number generator of the run (0 to 2**32 - 1).")
    plugins: list[str] = Field(default_factory=list, description="Plugin modules or .py files to import.")
    name: str | None = Field(
        None, description="Run name (one folder name: the run goes to runs/<name>-<time>-<id>); defaults to the "
        "recipe file's name."
    )

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, value: str | None) -> str | None:
        problem = None if value is None else folder_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value
    disable_plugins: list[str] = Field(
        default_factory=list,
        description="Installed plugins not to load (package or entry-point names), as ZOO_DISABLE_PLUGINS does; "
        "for the whole process, and the processes it starts.",
    )
    provenance: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Written by zoo, not by you: for each component (by recipe key), its name and the package "
        "and version (or plugin file) that supplied it; kept in run folders and checkpoints.",
    )

    # Set by load(), not by the recipe: where it came from.
    source: str | None = Field(None, exclude=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        data = self.to_dict()
        # one line per component: `model: {name: mlp, registry: models, package: zoo, version: 0.1.0}`
        data["provenance"] = {key: _OneLine(value) for key, value in data["provenance"].items()}
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


class _OneLine(dict):
    """A mapping written on one line in YAML."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _OneLine, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


# Sections a recipe may leave out; filled in before overrides so `optimizer.lr=...` has a spec to land in.
DEFAULT_SECTIONS: dict[str, Any] = {"optimizer": {"name": "adamw"}, "schedule": {"name": "constant"}}

# Each component section and the registry that resolves it.
COMPONENT_SECTIONS = {"model": "models", "data": "datasets", "optimizer": "optimizers", "schedule": "schedules"}


def folder_name_problem(name: str) -> str | None:
    """What keeps ``name`` from being one folder's name under runs/ (None: nothing)."""
    if not name.strip():
        return "a run name must not be empty"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "a run name is one folder name under runs/ (no '/', '\\', '.' or '..'); use --run-dir for another place"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a run name may not hold control characters"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "a run name must be valid UTF-8 text"
    if size > MAX_NAME_BYTES:
        return f"a run name may be at most {MAX_NAME_BYTES} bytes long, got {size}"
    return None


class YAMLLimitError(yaml.MarkedYAMLError):
    """A YAML document zoo refuses though PyYAML would read it: past the bounds a recipe may have (see
    MAX_VALUES, MAX_NESTING), or holding one key twice in a mapping."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested past MAX_NESTING or expanding past MAX_VALUES."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        # checked while composing: PyYAML composes recursively, so deeper input would exhaust the stack
        if self._depth >= MAX_NESTING:
            raise YAMLLimitError(problem=f"nested deeper than {MAX_NESTING} levels", problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of two equal keys without a word: `lr: 0.1` twice would be a silent choice.
        # Keys merged in with `<<:` may be overridden; that is what merging is for.
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so with its own message
                continue
            if earlier is not key_node:
                raise YAMLLimitError(
                    problem=f"duplicate key {brief(key)} (first at line {earlier.start_mark.line + 1})",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; YAML 1.2 and people read it as a number.
# Strict validation no longer turns such strings into numbers, so the loader reads them as numbers itself.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases, written out, exceed MAX_VALUES values or MAX_NESTING levels.

    Aliases share nodes, so nine aliases of nine aliases ... (a "billion laughs") are a few hundred bytes
    and nodes but billions of values once merged, validated or printed. Sizes are counted per shared
    node, once, so the check is linear in the file.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node): (values, depth) when written out
    open_nodes: set[int] = set()  # nodes whose children are being measured: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            sizes = [measured[id(c)] for c in _children(node)]
            values = 1 + sum(v for v, _ in sizes)
            depth = 1 + max((d for _, d in sizes), default=0)
            if values > MAX_VALUES or depth > MAX_NESTING:
                what = f"{values} values" if values > MAX_VALUES else f"{depth} levels of nesting"
                raise YAMLLimitError(
                    problem=f"aliases expand to {what}, past the limit of {MAX_VALUES} values and "
                    f"{MAX_NESTING} levels (write the values out instead)",
                    problem_mark=node.start_mark,
                )
            measured[key] = (values, depth)
            open_nodes.discard(key)
            continue
        if key in measured:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YAMLLimitError(problem="an alias refers to a value that contains it", problem_mark=child.start_mark)
            if id(child) not in measured:
                stack.append((child, False))


def load_yaml(text: str):
    """``yaml.safe_load`` within the bounds above (raises yaml.YAMLError, YAMLLimitError included)."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def find(recipe: str | Path | None) -> Path:
    """A recipe's path: an existing file, or a name from a ``recipes/`` folder (``resnet-digits``)."""
    name = str(recipe) if recipe is not None else DEFAULT_RECIPE
    path = Path(name)
    if path.exists() and not path.is_dir():  # a pipe or a device is refused by name when read, not "not found"
        return path
    for folder in RECIPE_DIRS:
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for d in RECIPE_DIRS if d.is_dir() for p in d.glob("*.yaml")})
    raise RecipeError(f"recipe {name} not found{did_you_mean(path.stem, known)}; shipped recipes: {', '.join(known)}")


def read_yaml(path: Path, what: str = "recipe") -> tuple[str, Any]:
    """A YAML file's text and value, read within the bounds above (and zoo.core.io's on files); a RecipeError
    naming the file, the line and the problem otherwise."""
    try:
        text = read_text(path, MAX_TEXT_BYTES, what)
    except ZooError as exc:
        raise RecipeError(str(exc)) from None
    try:
        return text, load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{where}: not valid YAML: {problem}") from None


def _read(path: Path) -> dict[str, Any]:
    _, data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def _other_component(old: Any, new: Mapping[str, Any]) -> bool:
    """True when ``new`` names a different component than ``old``: its parameters would not fit."""
    old_name = old.get("name") if isinstance(old, Mapping) else old
    return "name" in new and new["name"] != old_name


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``top`` onto ``base``: mappings merge per key, everything else is replaced.

    A component spec that names another component (``model: {name: resnet}`` over an mlp) replaces
    the old spec whole, since the old component's parameters mean nothing to the new one.
    """
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not _other_component(out[key], value):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def written_by_run(path: Path, data: Mapping[str, Any]) -> bool:
    """Whether a recipe file is one a run wrote (its ``provenance``, or the run folder's marker beside it):
    what it names came with a run folder, not from the user."""
    return "provenance" in data or (path.parent / RUN_MARKER).is_file()


def _resolve_bases(path: Path, seen: tuple[Path, ...] = (), named: dict[bool, set[str]] | None = None) -> dict[str, Any]:
    """The recipe at ``path`` merged over its bases; ``named`` collects the plugins each file names, under
    whether a run wrote that file."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: recipes inherit from each other in a loop: {chain}")
    if len(seen) >= MAX_BASES:
        raise RecipeError(f"{seen[0]}: its chain of base: recipes is longer than {MAX_BASES} (at {path})")
    data = _read(path)
    bases = data.pop("base", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise RecipeError(f"{path}: base: expected a recipe path or a list of them, got {brief(bases)}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.exists() or base_path.is_dir():
            raise RecipeError(f"{path}: base: recipe {base} not found (looked at {base_path})")
        merged = merge(merged, _resolve_bases(base_path, (*seen, path), named))
    # Plugin files are named relative to the recipe that lists them; pin them before merging.
    if isinstance(data.get("plugins"), list):
        data["plugins"] = [
            str((path.parent / p).resolve()) if isinstance(p, str) and p.endswith(".py") else p
            for p in data["plugins"]
        ]
        if named is not None:
            named.setdefault(written_by_run(path, data), set()).update(p for p in data["plugins"] if isinstance(p, str))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` as (["a", "b"], value), the value parsed as YAML (``0.1`` a float, ``[1, 2]`` a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {brief(text)}: expected key.sub=value, e.g. optimizer.lr=0.01")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except YAMLLimitError as exc:
        raise RecipeError(f"override {key}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


# Where a command-line switch of data set (`data.name=...`) parks the old data set's settings until
# validation, when the registries know which of them the new data set accepts.
CARRIED = "__carried_over__"


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if isinstance(child, str):
            # `model.activation.negative_slope=0.1` where the recipe says `activation: leaky_relu`
            child = node[key] = {"name": child}
        elif child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise RecipeError(f"override {'.'.join(keys)}: {where} is {brief(child)}, not a mapping")
        node = child
    component = keys[0] in COMPONENT_SECTIONS or keys[0] in ("augment", "monitors")
    if component and len(keys) > 1 and keys[-1] == "name" and node.get("name") != value:
        old = {k: v for k, v in node.items() if k not in ("name", CARRIED)}
        carried = {**node.get(CARRIED, {}), **old}
        node.clear()  # another component: the old one's parameters do not carry over (logger.wandb.name does)...
        if keys == ["data", "name"] and carried:
            # ...except for data sets, whose shared settings (batch sizes, split, standardization, root)
            # mean the same to each; _validate keeps those the new data set takes
            node[CARRIED] = carried
    node[keys[-1]] = value


def _explain(exc: pydantic.ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            model = _section_model(loc[:-1])
            lines.append(f"{where}: unknown key '{key}'{did_you_mean(loc[-1], model.model_fields)}")
        elif err["type"] == "missing":
            lines.append(f"{where}: missing required key '{key}'")
        else:
            lines.append(f"{where}: {key}: {err['msg'].removeprefix('Value error, ')}, got {brief(err['input'])}")
    return "\n".join(lines)


def _section_model(path: list[str]) -> type[BaseModel]:
    """The schema class at a key path, for suggesting keys it does have."""
    model: type[BaseModel] = Recipe
    for key in path:
        field = model.model_fields.get(key)
        inner = [a for a in typing.get_args(field.annotation) or (field.annotation,) if isinstance(a, type) and issubclass(a, BaseModel)] if field else []
        if not inner:
            break
        model = inner[0]
    return model


def _check_trainer_extras(section: TrainerSection, where: str) -> None:
    extras = section.model_extra or {}
    if not extras:
        return
    import inspect

    from lightning.pytorch import Trainer

    accepted = set(inspect.signature(Trainer).parameters)
    for key, value in extras.items():
        if key == "limit_train_batches" and not isinstance(value, bool) and value == 0:
            raise RecipeError(
                f"{where}: trainer.limit_train_batches: 0 batches would leave the network untrained, got {brief(value)}"
            )
        if key in TRAINER_SET_BY_ZOO:
            raise RecipeError(f"{where}: trainer.{key}: {TRAINER_SET_BY_ZOO[key]}")
        if key not in accepted:
            raise RecipeError(
                f"{where}: unknown key 'trainer.{key}': not a Lightning Trainer argument{did_you_mean(key, accepted)}"
            )


def load(recipe: str | Path | None = None, overrides: Iterable[str] = (), named_by_run_folder: bool = False) -> Recipe:
    """Resolve a recipe file plus overrides into a validated Recipe, or raise a ZooError saying what is wrong.

    ``named_by_run_folder``: the recipe's path came from a run folder (a stopped sweep's record), so
    none of its plugins is the user's own (see :func:`_refuse_code_from_runs`)."""
    path = find(recipe)
    named: dict[bool, set[str]] = {}
    data = _with_overrides(merge(DEFAULT_SECTIONS, _resolve_bases(path, named=named)), overrides)
    if named_by_run_folder:
        untrusted, why = set().union(*named.values()), "a run folder names this recipe, which lists"
    else:
        untrusted, why = named.get(True, set()) - named.get(False, set()), "this recipe was written by a run and names"
    _refuse_code_from_runs(data.get("plugins"), untrusted, path, why)
    parsed = _validate(data, str(path), path.parent)
    if parsed.name is None:
        parsed.name = path.stem
    parsed.source = str(path)
    return parsed


def _refuse_code_from_runs(plugins: Any, named_by_runs: set[str], path: Path, why: str) -> None:
    """A plugin that only recipes written by runs name is imported only when the user passed it (``--plugin``)
    or their own recipe imported it, as for a checkpoint (:func:`from_dict`): a run folder from someone
    else must not run their code."""
    from zoo.core import discovery

    for name in plugins if isinstance(plugins, list) else []:
        if name in named_by_runs and not discovery.imported(name, path.parent):
            raise RecipeError(
                f"{path}: plugins: {why} the plugin {name}, and zoo does not run code a run folder names; "
                f"if you trust it, pass --plugin {name}"
            )


def derive(recipe: Recipe, overrides: Iterable[str], **changes: Any) -> Recipe:
    """A resolved recipe with more overrides and top-level changes, validated again (an ensemble member)."""
    data = {**recipe.to_dict(), **changes}
    derived = _validate(_with_overrides(data, overrides), recipe.source or "recipe", None)
    derived.source = recipe.source
    return derived


def _with_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    for section in COMPONENT_SECTIONS:
        if isinstance(data.get(section), str):
            data[section] = {"name": data[section]}
    for listed in ("augment", "monitors"):
        if isinstance(data.get(listed), list):
            data[listed] = [{"name": a} if isinstance(a, str) else a for a in data[listed]]
    return data


def check_values(data: Any, where: str) -> None:
    """Refuse NaN and infinite numbers (pydantic takes ``.inf`` as a float; JSON and YAML dumps would then
    write null) and nesting past MAX_NESTING, naming the key. Iterative: the input may be any dict."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_NESTING:
            raise RecipeError(f"{where}: {key or 'recipe'}: nested deeper than {MAX_NESTING} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}: {key}: {value} is not a finite number")
        if isinstance(value, Mapping):
            stack += [(v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value)]


def _validate(data: dict[str, Any], where: str, base_dir: Path | None) -> Recipe:
    check_values(data, where)
    try:
        parsed = Recipe.model_validate(data)
    except pydantic.ValidationError as exc:
        raise RecipeError(_explain(exc, where)) from None
    _check_trainer_extras(parsed.trainer, where)

    from zoo.core import discovery, recipe_callbacks
    from zoo.core.catalog import datasets

    if parsed.disable_plugins:
        discovery.disable(parsed.disable_plugins)  # before anything is looked up: a broken one is never imported
    try:
        discovery.load_local(parsed.plugins, base_dir=base_dir)
        carried = parsed.data.pop(CARRIED, {})
        if carried:
            accepted = {p.name for p in datasets.get(parsed.data.get("name"), "data.name").params}
            parsed.data = {**{k: v for k, v in carried.items() if k in accepted}, **parsed.data}
    except ZooError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    _resolve_components(parsed, where)
    # after the plugins are loaded: a class path may name one of their modules
    recipe_callbacks.check(parsed, where)
    return parsed


def _resolve_components(parsed: Recipe, where: str, skippable: Callable[[str], bool] | None = None) -> None:
    """Validate every component spec in place (defaults filled in) and record where each came from.

    A bare name several plugins hold means what the recipe's own ``provenance`` recorded (a run folder's
    recipe, a checkpoint's), else zoo's own component. A component whose plugin is missing is reported
    with what that provenance says supplied it, so the message can say what to install. ``skippable``:
    keys the command does not need (see ``from_dict``), kept as recorded when their plugin is gone.
    """
    from zoo.core.errors import UnknownComponent
    from zoo.core.registry import REGISTRIES, using_provenance

    recorded = dict(parsed.provenance)
    fresh: dict[str, dict[str, Any]] = {}
    try:
        with using_provenance(recorded):
            for section, registry in COMPONENT_SECTIONS.items():
                spec = REGISTRIES[registry].validate(getattr(parsed, section), section, fresh, skippable)
                setattr(parsed, section, spec)
            parsed.augment = [
                REGISTRIES["augmentations"].validate(spec, f"augment[{i}]", fresh, skippable)
                for i, spec in enumerate(parsed.augment)
            ]
            parsed.monitors = [
                REGISTRIES["monitors"].validate(spec, f"monitors[{i}]", fresh, skippable)
                for i, spec in enumerate(parsed.monitors)
            ]
    except UnknownComponent as exc:
        missing = _missing_plugin(exc, recorded, where)
        raise missing or type(exc)(f"{where}: {exc}") from None
    except ZooError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    _warn_changed(recorded, fresh, where)
    if skippable is not None:
        # what was not resolved (its plugin is gone) keeps the record of where it came from
        fresh = {**{k: v for k, v in recorded.items() if skippable(k) and k not in fresh}, **fresh}
    parsed.provenance = fresh


def _missing_plugin(exc, recorded: dict[str, dict[str, Any]], where: str) -> ZooError | None:
    """'model 'small_cnn' came from zoo-extras 0.1.0, which is not installed (...)', from the recorded provenance."""
    from zoo.core import discovery
    from zoo.core.errors import PluginError

    for key, origin in recorded.items():
        if origin.get("registry") != exc.registry or origin.get("name") != exc.name:
            continue
        what = f"{where}: {key} '{exc.name}'"
        if origin.get("file"):
            return PluginError(
                f"{what} came from the plugin file {origin['file']}, which is not loaded; pass --plugin "
                f"{origin['file']} (or list it under plugins:)"
            )
        package = origin.get("package")
        if not package:
            module = origin.get("module", "?")
            return PluginError(f"{what} came from the module {module}, which is not loaded; pass --plugin {module}")
        made_with = f"{package} {origin.get('version')}".strip()
        now = discovery.installed_version(package)
        if now is None:
            return PluginError(f"{what} came from {made_with}, which is not installed (pip install {package})")
        trouble = discovery.why_missing(package)
        if trouble:
            return PluginError(f"{what} came from {made_with}; {package} {now} is installed but {trouble}")
        return PluginError(f"{what} came from {made_with}; {package} {now} is installed but no longer provides it")
    return None


def _warn_changed(recorded: dict[str, dict[str, Any]], fresh: dict[str, dict[str, Any]], where: str) -> None:
    """Say when a component now comes from another version (or package) than the one recorded."""
    import warnings

    from zoo.core.errors import PluginWarning

    for key, now in fresh.items():
        then = recorded.get(key)
        if not then or then.get("name") != now.get("name"):
            continue
        fields = ("package", "version", "file", "sha256")
        if any(then.get(f) != now.get(f) for f in fields if f in then or f in now):
            before = " ".join(str(then[f]) for f in fields if then.get(f))
            after = " ".join(str(now[f]) for f in fields if now.get(f))
            warnings.warn(
                f"{where}: {key} '{now['name']}' was recorded as coming from {before}; it now comes from {after}",
                PluginWarning,
                stacklevel=3,
            )


def from_dict(
    data: Mapping[str, Any],
    where: str = "recipe",
    trusted_plugins: Iterable[str] | None = None,
    needs: Iterable[str] | None = None,
) -> Recipe:
    """Validate an already resolved recipe (a run directory's recipe.yaml, a checkpoint's hyperparameters).

    ``trusted_plugins``: for a recipe that came inside a file (a checkpoint), the plugins the user named
    on the command line; the recipe's own ``plugins`` are imported only if listed there, so a downloaded
    checkpoint cannot make zoo run code. None: the recipe is the user's own and its plugins load.
    ``needs``: the recipe keys the caller will build (EVALUATION_NEEDS for an evaluation); components
    elsewhere whose plugin is gone are kept as written instead of refused. None: every component.
    A component whose plugin is not installed is reported with the package and version that made it.
    """
    check_values(data, where)
    try:
        parsed = Recipe.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise RecipeError(_explain(exc, where)) from None
    from zoo.core import discovery

    if trusted_plugins is not None:
        trusted = {str(Path(p).resolve()) if p.endswith(".py") else p for p in trusted_plugins}
        for name in parsed.plugins:
            if name not in trusted:
                raise RecipeError(
                    f"{where}: its recipe names the plugin {name}, and zoo does not run code a checkpoint names; "
                    f"if you trust it, pass --plugin {name}"
                )

    discovery.load_local(parsed.plugins)
    _resolve_components(parsed, where, None if needs is None else _skippable(tuple(needs)))
    return parsed


# What evaluating or predicting with a trained model builds: the network (not its initializer: the weights
# come from the checkpoint) and the data. Its optimizer, schedule, augmentations and monitors are not needed.
EVALUATION_NEEDS = ("model", "data")
NOT_NEEDED_INSIDE = ("init",)


def _skippable(needs: tuple[str, ...]) -> Callable[[str], bool]:
    def skippable(key: str) -> bool:
        section, _, rest = key.partition(".")
        return section not in needs or rest.split(".")[0] in NOT_NEEDED_INSIDE

    return skippable
