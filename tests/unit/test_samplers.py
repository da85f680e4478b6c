"""DPM-Solver++(2M) beside DDIM: the same contract, and fewer steps for the same accuracy where the exact ε
is known. (The conformance checks every sampler passes run from tests/unit/test_conformance.py.)"""

from __future__ import annotations

import pytest
import torch

from protobench.diffusion import NoiseSchedule
from protobench.errors import UsageError
from protobench.plugins import get_registry

SHAPE = (256, 1, 4, 4)
MU, S = 0.1, 0.25  # data: every pixel i.i.d. N(MU, S²), mostly inside [-1, 1]


def gaussian_eps(schedule: NoiseSchedule):
    """The exact ε of Gaussian data: x_t ~ N(√ᾱ μ, ᾱ s² + 1 − ᾱ), E[x0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / var."""
    abar = schedule.alpha_bar

    def eps_fn(x_t, t):
        a = abar[t].view(-1, 1, 1, 1)
        x = x_t.double()
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU)
        return ((x - a.sqrt() * x0) / (1 - a).sqrt()).float()

    return eps_fn


def exact_x0(schedule: NoiseSchedule, seed: int) -> torch.Tensor:
    """Where the probability-flow ODE takes the sampler's starting noise: it is linear for Gaussian data.
    Samplers return x̂0 at t = 0, so this is E[x0 | x_0] of the ODE's x at t = 0."""
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).double()
    a_T, a_0 = schedule.alpha_bar[-1], schedule.alpha_bar[0]
    unit = (z - a_T.sqrt() * MU) / (a_T * S**2 + 1 - a_T).sqrt()
    return (MU + a_0.sqrt() * S**2 * unit / (a_0 * S**2 + 1 - a_0).sqrt()).float().clamp(-1, 1)


def error(name: str, steps: int, schedule: NoiseSchedule, **options) -> float:
    sampler = get_registry().build("sampler", name, {"steps": steps, "clip_x0": False, **options}, {})
    x0 = sampler.sample(gaussian_eps(schedule), schedule, SHAPE, torch.Generator().manual_seed(0))
    return (x0 - exact_x0(schedule, 0)).abs().mean().item()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 15, 20])
def test_dpm_solver_lands_nearer_the_exact_sample_than_ddim(kind, steps):
    schedule = NoiseSchedule(kind, 1000)
    dpm, ddim = error("dpm-solver++", steps, schedule), error("ddim", steps, schedule)
    assert dpm < 0.02, f"DPM-Solver++ at {steps} steps is {dpm:.4f} from the exact sample"
    assert dpm < ddim / 2, f"DPM-Solver++ {dpm:.4f} vs DDIM {ddim:.4f} at {steps} steps"


def test_dpm_solver_converges_as_steps_grow():
    schedule = NoiseSchedule("linear", 1000)
    errors = [error("dpm-solver++", steps, schedule) for steps in (5, 20, 100)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


def test_time_spacing_is_ddim_grid():
    """`spacing=time` evaluates where DDIM does; with one step more than the first both are DDIM (first order)."""
    reg = get_registry()
    schedule = NoiseSchedule("linear", 1000)
    calls: dict[str, list[int]] = {"ddim": [], "dpm-solver++": []}
    for name in calls:
        options = {"steps": 7, **({"spacing": "time"} if name == "dpm-solver++" else {})}

        def eps_fn(x_t, t, name=name):
            calls[name].append(int(t[0]))
            return 0.5 * x_t

        reg.build("sampler", name, options, {}).sample(eps_fn, schedule, (2, 1, 4, 4), torch.Generator().manual_seed(0))
    assert calls["ddim"] == calls["dpm-solver++"]


def test_logsnr_grid_calls_eps_once_per_step_from_T_minus_1_to_0():
    schedule = NoiseSchedule("linear", 1000)
    seen: list[int] = []

    def eps_fn(x_t, t):
        seen.append(int(t[0]))
        return 0.5 * x_t

    get_registry().build("sampler", "dpm-solver++", {"steps": 12}, {}).sample(
        eps_fn, schedule, (2, 1, 4, 4), torch.Generator().manual_seed(0))
    assert len(seen) == 12 and seen[0] == 999 and seen[-1] == 0 and seen == sorted(seen, reverse=True)


def test_with_classifier_free_guidance_on_a_net_deterministic_and_in_range(tiny_net, tiny_dataset):
    reg = get_registry()
    sampler = reg.build("sampler", "dpm-solver++", {"steps": 6}, {})
    guidance = reg.build("guidance", "cfg", {}, {})
    schedule = NoiseSchedule("linear", 1000)
    labels = torch.arange(4) % tiny_dataset.num_classes

    def draw(seed):
        return sampler.sample(lambda x, t: guidance.eps(tiny_net, x, t, labels), schedule,
                              (4, *tiny_dataset.image_shape), torch.Generator().manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("option", [{"steps": 0}, {"spacing": "karras"}])
def test_bad_options_are_one_line(option):
    with pytest.raises(UsageError):
        get_registry().build("sampler", "dpm-solver++", option, {})
