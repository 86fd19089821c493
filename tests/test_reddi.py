"""Reddi, Kale & Kumar's counter-example: Adam drifts to +1, AMSGrad converges to −1."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.thesis.reddi import PERIOD, reddi_gradients, run_demo, run_online

T = 60 * PERIOD * 10  # 60 600 steps; T mod 101 = 0, so x_{T+1} is at the top of a period
ALPHA = 3.0


@pytest.fixture(scope="module")
def runs():
    return {name: run_online(name, T, alpha=ALPHA) for name in ("adam", "amsgrad")}


def test_adam_drifts_to_the_worst_point_and_amsgrad_to_the_optimum(runs):
    assert runs["adam"].x_final.item() > 0.9
    assert runs["amsgrad"].x_final.item() < -0.9
    assert runs["amsgrad"].x[-T // 4 :].max() < -0.85  # and stays there


def test_amsgrad_average_regret_keeps_falling(runs):
    avg = runs["amsgrad"].average_regret[:, 0]
    at_period_ends = avg[PERIOD - 1 :: PERIOD]  # R_t/t at the same phase of every period
    second_half = at_period_ends[len(at_period_ends) // 2 :]
    assert (second_half[1:] < second_half[:-1]).all()
    assert avg[-1] < runs["adam"].average_regret[-1, 0]


def _scalar_reference(grads, alpha, amsgrad, steps):
    """Algorithms 1 (without bias correction) and 3 in plain Python floats, projected."""
    x, m, v, vhat, xs = 0.0, 0.0, 0.0, 0.0, []
    for t in range(1, steps + 1):
        xs.append(x)
        g = grads[t - 1]
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        vhat = max(vhat, v) if amsgrad else v
        x = min(1.0, max(-1.0, x - alpha / math.sqrt(t) * m / (math.sqrt(vhat) + 1e-8)))
    return torch.tensor(xs, dtype=torch.float64)


@pytest.mark.parametrize("name", ["adam", "amsgrad"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_iterates_follow_the_algorithms(name, stochastic):
    steps = 3000
    grads = reddi_gradients(steps, stochastic, seed=3)[:, 0].tolist()
    run = run_online(name, steps, stochastic=stochastic, seed=3, alpha=1.0)
    ref = _scalar_reference(grads, 1.0, name == "amsgrad", steps)
    torch.testing.assert_close(run.x[:, 0].double(), ref, atol=1e-4, rtol=0)


def test_gradients_of_both_variants():
    det = reddi_gradients(303)[:, 0]
    t = torch.arange(1, 304)
    assert torch.equal(det == 1010.0, t % 101 == 1) and set(det.tolist()) == {1010.0, -10.0}
    sto = reddi_gradients(100_000, stochastic=True, seed=0, runs=2)
    share = (sto == 1010.0).double().mean(0)
    assert ((share - 0.01).abs() < 5 * math.sqrt(0.01 * 0.99 / 100_000)).all()
    assert not torch.equal(sto[:, 0], sto[:, 1])
    assert torch.equal(sto, reddi_gradients(100_000, stochastic=True, seed=0, runs=2))


def test_demo_writes_the_plot_and_summarises(tmp_path):
    summary = run_demo(2 * PERIOD * 10, out=tmp_path, runs=4)
    png = tmp_path / "reddi.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for word in ("deterministic", "stochastic", "adam", "amsgrad", "final x", "R_T/T"):
        assert word in summary


def test_bad_input():
    with pytest.raises(ValueError, match="rmsprop"):
        run_online("rmsprop", 10)
    with pytest.raises(ValueError, match="steps"):
        reddi_gradients(0)


@pytest.mark.parametrize("stochastic", [False, True])
def test_regret_against_its_definition(stochastic):
    """R_t = Σ_{s≤t} f_s(x_s) − min_{x∈[−1,1]} Σ_{s≤t} f_s(x) (Def 1.2.14), in plain floats:
    the comparator is −|Σ g_s| per horizon, and for the stochastic variant the mean loss
    0.2x, whose minimum over [−1, 1] is −0.2 per step."""
    steps = 400
    run = run_online("adam", steps, stochastic=stochastic, seed=2, alpha=1.0)
    xs, grads = run.x[:, 0].double().tolist(), reddi_gradients(steps, stochastic, 2)[:, 0].tolist()
    loss = total = 0.0
    ref = []
    for x, g in zip(xs, grads, strict=True):
        g = 0.2 if stochastic else g
        loss, total = loss + g * x, total + g
        ref.append(loss + abs(total))
    torch.testing.assert_close(run.regret[:, 0], torch.tensor(ref, dtype=torch.float64))
    if not stochastic:
        assert run.regret[0, 0] == 1010.0  # x_1 = 0 against the best point −1 for 1010x
