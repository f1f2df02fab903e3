"""Learning-rate schedules: each one's defining shape, warmup, restart bookkeeping, and bad parameters."""

from __future__ import annotations

import bisect
import math

import pytest
import torch
from torch import nn
from zoo.plugins.schedules import cycle_ends

import zoo
from zoo.core.build import build_optimizer
from zoo.core.errors import ComponentError, RegistryError, ZooError

# A scheduler stepped out of order, or its rate read the deprecated way, warns: either is a bug here.
pytestmark = pytest.mark.filterwarnings("error::UserWarning")

BASE = 0.4
SPE = 10  # steps per epoch throughout


def optimizer(lr: float = BASE, kind=torch.optim.SGD, **kwargs) -> torch.optim.Optimizer:
    return kind([nn.Parameter(torch.zeros(1))], lr=lr, **kwargs)


def run(spec, total: int, opt: torch.optim.Optimizer | None = None, spe: int = SPE) -> list[float]:
    """The rate each of ``total`` optimizer steps runs at, stepping the schedule the way Lightning does."""
    opt = opt or optimizer()
    out = zoo.schedules.build(spec, optimizer=opt, total_steps=total, steps_per_epoch=spe)
    assert out["interval"] == "step"
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        out["scheduler"].step()
    return rates


def approx(values, rel=1e-9, abs=1e-12):
    return pytest.approx(values, rel=rel, abs=abs)


def rises(rates: list[float]) -> list[int]:
    """Steps whose rate is above the step before: where a restart (or a ramp) happens."""
    return [i for i in range(1, len(rates)) if rates[i] > rates[i - 1] * (1 + 1e-9)]


# --- each schedule's shape ---------------------------------------------------------------------


def test_constant_keeps_the_base_rate():
    assert run("constant", 25) == approx([BASE] * 25)


def test_step_divides_by_gamma_exactly_every_step_size_epochs():
    rates = run({"name": "step", "step_size": 1.5, "gamma": 0.5}, 60)
    assert rates == approx([BASE * 0.5 ** (i // 15) for i in range(60)])
    assert run({"name": "step", "step_size": 2}, 50)[::20] == approx([BASE, BASE / 10, BASE / 100])


def test_multistep_drops_at_each_milestone_epoch():
    rates = run({"name": "multistep", "milestones": [1, 2.5], "gamma": 0.2}, 40)
    assert rates == approx([BASE * 0.2 ** bisect.bisect_right([10, 25], i) for i in range(40)])


def test_exponential_shrinks_by_gamma_per_epoch_smoothly_within_it():
    rates = run({"name": "exponential", "gamma": 0.8}, 40)
    for epoch in range(3):
        assert rates[(epoch + 1) * SPE] / rates[epoch * SPE] == pytest.approx(0.8)
    assert rates == approx([BASE * 0.8 ** (i / SPE) for i in range(40)], rel=1e-6)
    assert all(b < a for a, b in zip(rates, rates[1:]))


def test_cosine_runs_from_base_through_half_way_to_min_ratio():
    rates = run({"name": "cosine", "min_ratio": 0.1}, 41)
    assert rates[0] == approx(BASE)
    assert rates[20] == approx(BASE * (1 + 0.1) / 2)  # the midpoint is half way between base and min
    assert rates[-1] == approx(0.1 * BASE)
    assert rates == approx([BASE * (0.1 + 0.9 * (1 + math.cos(math.pi * i / 40)) / 2) for i in range(41)])
    assert run("cosine", 30)[-1] == approx(0.0)


@pytest.mark.parametrize(
    "params, total, ends",
    [
        ({"cycle_epochs": 1, "t_mult": 2}, 75, [10, 30, 70]),  # the cycle cut short at 75 is not listed
        ({"cycle_epochs": 2}, 100, [20, 40, 60, 80, 100]),
        ({"cycle_epochs": 0.5, "warmup_epochs": 1}, 32, [15, 20, 25, 30]),
    ],
)
def test_cosine_restarts_jump_back_to_base_where_cycle_ends_says(params, total, ends):
    assert cycle_ends(params, total, SPE) == ends
    rates = run({"name": "cosine_restarts", "min_ratio": 0.05, **params}, total)
    restarts = [e for e in ends if e < total]
    warmup = round(params.get("warmup_epochs", 0) * SPE)
    assert [i for i in rises(rates) if i > warmup] == restarts
    for start, end in zip([warmup, *restarts], restarts):
        assert rates[end] == approx(BASE)
        assert rates[start] == approx(BASE)
        assert rates[end - 1] == min(rates[start:end]) < 0.5 * BASE  # annealed all through the cycle
    assert min(rates[warmup:]) >= 0.05 * BASE - 1e-12


def test_cycle_ends_reads_the_recipe_spec_forms():
    assert cycle_ends("cosine_restarts", 250, SPE) == [100, 200]  # the default cycle is 10 epochs
    assert cycle_ends({"name": "cosine_restarts", "cycle_epochs": 3}, 95, SPE) == [30, 60, 90]
    assert cycle_ends({"cycle_epochs": 3}, 20, SPE) == []
    with pytest.raises(ZooError, match="only for cosine_restarts"):
        cycle_ends({"name": "cosine"}, 100, SPE)
    with pytest.raises(RegistryError, match="t_mult"):
        cycle_ends({"t_mult": 0}, 100, SPE)


def test_onecycle_peaks_at_the_optimizer_lr_after_pct_start_and_ends_far_below():
    rates = run({"name": "onecycle", "pct_start": 0.25, "div_factor": 20, "final_div_factor": 100}, 40)
    assert rates[0] == approx(BASE / 20)
    assert max(rates) == approx(BASE)
    assert rates.index(max(rates)) == 9  # the first quarter of 40 steps: 0..9
    assert all(b > a for a, b in zip(rates[:10], rates[1:10]))
    assert all(b < a for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == approx(BASE / (20 * 100))


def test_onecycle_leaves_momentum_alone_unless_asked():
    opt = optimizer(kind=torch.optim.SGD, momentum=0.9)
    run("onecycle", 20, opt)
    assert opt.param_groups[0]["momentum"] == 0.9
    opt = optimizer(kind=torch.optim.SGD, momentum=0.9)
    seen = []
    out = zoo.schedules.build(
        {"name": "onecycle", "cycle_momentum": True}, optimizer=opt, total_steps=20, steps_per_epoch=SPE
    )
    for _ in range(20):
        seen.append(opt.param_groups[0]["momentum"])
        opt.step()
        out["scheduler"].step()
    assert seen[0] == approx(0.95) and min(seen) == approx(0.85)
    with pytest.raises(ZooError, match="no momentum"):
        run({"name": "onecycle", "cycle_momentum": True}, 20, optimizer(kind=torch.optim.Adagrad))


def test_linear_falls_in_equal_steps_to_end_ratio():
    rates = run({"name": "linear", "end_ratio": 0.25}, 31)
    assert rates[0] == approx(BASE) and rates[-1] == approx(0.25 * BASE)
    assert [b - a for a, b in zip(rates, rates[1:])] == approx([-0.75 * BASE / 30] * 30)


# --- warmup ------------------------------------------------------------------------------------

# Each schedule with 1.5 epochs of warmup, and the same schedule as it should look once the warmup
# is over: durations count from the warmup's end, multistep's milestones are epochs of the whole run.
WARMED = [
    ({"name": "constant"}, {"name": "constant"}),
    ({"name": "step", "step_size": 1}, {"name": "step", "step_size": 1}),
    ({"name": "multistep", "milestones": [2, 3.5]}, {"name": "multistep", "milestones": [0.5, 2]}),
    ({"name": "exponential", "gamma": 0.5}, {"name": "exponential", "gamma": 0.5}),
    ({"name": "cosine", "min_ratio": 0.2}, {"name": "cosine", "min_ratio": 0.2}),
    ({"name": "cosine_restarts", "cycle_epochs": 1}, {"name": "cosine_restarts", "cycle_epochs": 1}),
    ({"name": "linear", "end_ratio": 0.5}, {"name": "linear", "end_ratio": 0.5}),
]


@pytest.mark.parametrize("spec, after", WARMED, ids=[s["name"] for s, _ in WARMED])
def test_warmup_rises_linearly_to_base_then_follows_the_schedule(spec, after):
    total, warmup = 50, 15
    rates = run({**spec, "warmup_epochs": 1.5}, total)
    assert rates[:warmup] == approx([BASE * (i + 1) / (warmup + 1) for i in range(warmup)])
    assert rates[0] < 0.1 * BASE
    assert rates[warmup] == approx(BASE)
    assert rates[warmup:] == approx(run(after, total - warmup))


def test_every_schedule_but_onecycle_offers_warmup():
    with_warmup = {e.name for e in zoo.schedules if "warmup_epochs" in {p.name for p in e.params}}
    assert with_warmup == set(zoo.schedules.names()) - {"onecycle"}
    assert {s["name"] for s, _ in WARMED} == with_warmup


def test_warmup_may_not_take_the_whole_run():
    with pytest.raises(ZooError, match="warmup_epochs.*leaves nothing"):
        run({"name": "cosine", "warmup_epochs": 3}, 30)
    assert run({"name": "cosine", "warmup_epochs": 2.8}, 30)[-2:] == approx([BASE, 0.0])


def test_a_milestone_inside_the_warmup_is_refused():
    with pytest.raises(ZooError, match="after the warmup"):
        run({"name": "multistep", "milestones": [1, 3], "warmup_epochs": 1}, 40)


# --- fit with the rest of zoo ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "cosine", "min_ratio": 0.1},
        {"name": "cosine_restarts", "cycle_epochs": 0.5, "min_ratio": 0.1},
        {"name": "linear", "end_ratio": 0.1},
        {"name": "multistep", "milestones": [1]},
        {"name": "onecycle"},
    ],
    ids=lambda spec: spec["name"],
)
def test_every_parameter_group_follows_the_schedule(spec):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = build_optimizer({"name": "sgd", "lr": BASE, "weight_decay": 1e-3}, net)
    assert len(opt.param_groups) == 2  # decayed weights, undecayed biases and norm scales
    out = zoo.schedules.build(spec, optimizer=opt, total_steps=20, steps_per_epoch=SPE)
    for _ in range(20):
        assert opt.param_groups[0]["lr"] == opt.param_groups[1]["lr"]
        opt.step()
        out["scheduler"].step()


def test_min_ratio_needs_one_base_rate():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1)
    # the factory's ValueError reaches the user as the component's failure, naming it
    with pytest.raises(ComponentError, match=r"schedule 'cosine' \(zoo .*\) failed to build: ValueError: .*one base rate"):
        run({"name": "cosine", "min_ratio": 0.1}, 9, opt)


@pytest.mark.parametrize("name", ["cosine_restarts", "multistep", "onecycle", "exponential"])
def test_a_resumed_schedule_continues_where_it_stopped(name):
    """Lightning checkpoints the scheduler's state_dict; a fresh schedule loading it must resume the curve."""
    spec = {"name": name, "milestones": [2.5]} if name == "multistep" else {"name": name}
    if name != "onecycle":
        spec["warmup_epochs"] = 1
    total, stop = 40, 23
    whole = run(spec, total)

    opt = optimizer()
    first = zoo.schedules.build(spec, optimizer=opt, total_steps=total, steps_per_epoch=SPE)["scheduler"]
    for _ in range(stop):
        opt.step()
        first.step()
    opt_state, sched_state = opt.state_dict(), first.state_dict()

    opt = optimizer()
    second = zoo.schedules.build(spec, optimizer=opt, total_steps=total, steps_per_epoch=SPE)["scheduler"]
    opt.load_state_dict(opt_state)
    second.load_state_dict(sched_state)
    rest = []
    for _ in range(total - stop):
        rest.append(opt.param_groups[0]["lr"])
        opt.step()
        second.step()
    assert rest == approx(whole[stop:])


# --- bad parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"name": "step", "step_size": 2, "gamma": -0.1}, "gamma"),
        ({"name": "step", "step_size": 2, "gamma": 0}, "gamma"),
        ({"name": "step", "step_size": 2, "gamma": 2}, "gamma"),
        ({"name": "step"}, "needs parameter 'step_size'"),
        ({"name": "step", "step_size": 0}, "step_size"),
        ({"name": "multistep", "milestones": [3, 2]}, "strictly increasing"),
        ({"name": "multistep", "milestones": [2, 2]}, "strictly increasing"),
        ({"name": "multistep", "milestones": [-1, 2]}, "positive"),
        ({"name": "multistep", "milestones": []}, "milestones"),
        ({"name": "exponential", "gamma": -0.5}, "gamma"),
        ({"name": "cosine", "min_ratio": 1.5}, "min_ratio"),
        ({"name": "cosine", "warmup_epochs": -1}, "warmup_epochs"),
        ({"name": "cosine", "warmup_steps": 40}, "unknown parameter 'warmup_steps'.*warmup_epochs"),
        ({"name": "cosine_restarts", "t_mult": 0}, "t_mult"),
        ({"name": "cosine_restarts", "t_mult": 1.5}, "t_mult"),
        ({"name": "cosine_restarts", "cycle_epochs": 0}, "cycle_epochs"),
        ({"name": "onecycle", "pct_start": 1.0}, "pct_start"),
        ({"name": "onecycle", "div_factor": 0.5}, "div_factor"),
        ({"name": "onecycle", "warmup_epochs": 1}, "unknown parameter 'warmup_epochs'"),
        ({"name": "linear", "end_ratio": -0.1}, "end_ratio"),
    ],
)
def test_bad_parameters_are_zoo_errors_before_anything_is_built(spec, pattern):
    with pytest.raises(ZooError, match=pattern):
        zoo.schedules.validate(spec, "schedule")
    with pytest.raises(ZooError, match=pattern):
        run(spec, 40)
