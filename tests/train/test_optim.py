import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphrnn.errors import GraphRNNError
from graphrnn.train.optim import (
    SGD,
    Adam,
    Momentum,
    clip_grad_norm,
    global_norm,
    make_optimizer,
)

STEPS = 4


def _problem():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(STEPS)]
    return params, grads


def _copy(d):
    return {k: v.copy() for k, v in d.items()}


def test_sgd_matches_reference():
    params, grads = _problem()
    ref = _copy(params)
    opt = SGD(lr=0.1, weight_decay=0.01)
    for g in grads:
        opt.step(params, g)
        for k in ref:
            ref[k] = ref[k] - 0.1 * (g[k] + 0.01 * ref[k])
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-14)


def test_momentum_matches_heavy_ball_reference():
    params, grads = _problem()
    ref = _copy(params)
    vel = {k: np.zeros_like(v) for k, v in ref.items()}
    opt = Momentum()
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.01, 0.9, 0.0005)
    for g in grads:
        opt.step(params, g)
        for k in ref:
            vel[k] = 0.9 * vel[k] - 0.01 * (g[k] + 0.0005 * ref[k])
            ref[k] = ref[k] + vel[k]
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-14)


def test_momentum_first_step_by_hand():
    p = {"w": np.array([1.0])}
    opt = Momentum(lr=0.5, momentum=0.5, weight_decay=0.0)
    opt.step(p, {"w": np.array([2.0])})  # v = -1, p = 0
    opt.step(p, {"w": np.array([2.0])})  # v = -0.5 - 1 = -1.5, p = -1.5
    assert p["w"][0] == -1.5


def test_adam_matches_reference():
    params, grads = _problem()
    ref = _copy(params)
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(x) for k, x in ref.items()}
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-6
    opt = Adam(lr=lr, beta1=b1, beta2=b2, eps=eps)
    for t, g in enumerate(grads, 1):
        opt.step(params, g)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            ref[k] = ref[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12)


def test_adam_first_step_is_lr_times_sign():
    """Bias correction makes the first step exactly lr * g / (|g| + eps)."""
    p = {"w": np.array([0.0, 0.0])}
    Adam(lr=0.1, eps=1e-12).step(p, {"w": np.array([3.0, -0.001])})
    np.testing.assert_allclose(p["w"], [-0.1, 0.1], rtol=1e-6)


def test_adam_minimises_quadratic():
    rng = np.random.default_rng(1)
    a = np.diag([1.0, 10.0, 100.0])
    target = rng.normal(size=3)
    p = {"x": np.zeros(3)}
    opt = Adam(lr=0.05)
    for _ in range(2000):
        opt.step(p, {"x": a @ (p["x"] - target)})
    np.testing.assert_allclose(p["x"], target, atol=1e-3)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_state_roundtrip_continues_identically(name):
    params, grads = _problem()
    a = make_optimizer(name, lr=0.05)
    for g in grads[:2]:
        a.step(params, g)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray | float | int | str) for v in state.values())
    resumed_params = _copy(params)
    b = make_optimizer(name, lr=0.05)
    b.load_state_dict(state)
    for g in grads[2:]:
        a.step(params, g)
        b.step(resumed_params, g)
    for k in params:
        np.testing.assert_array_equal(params[k], resumed_params[k])


def test_state_dict_is_a_copy():
    p = {"w": np.ones(2)}
    opt = Momentum()
    opt.step(p, {"w": np.ones(2)})
    state = opt.state_dict()
    opt.step(p, {"w": np.ones(2)})
    assert not np.array_equal(state["v/w"], opt.state_dict()["v/w"])


def test_load_state_of_other_optimizer_is_refused():
    with pytest.raises(GraphRNNError, match="saved by 'adam'"):
        SGD().load_state_dict(Adam().state_dict())


def test_parameters_without_gradient_stay_put():
    p = {"w": np.ones(2), "frozen": np.ones(2)}
    SGD(lr=1.0).step(p, {"w": np.ones(2)})
    np.testing.assert_array_equal(p["frozen"], [1.0, 1.0])
    np.testing.assert_array_equal(p["w"], [0.0, 0.0])


def test_bad_gradients_are_named():
    p = {"w": np.ones(2)}
    with pytest.raises(GraphRNNError, match="unknown parameter 'v'"):
        SGD().step(p, {"v": np.ones(2)})
    with pytest.raises(GraphRNNError, match=r"shape \(3,\)"):
        SGD().step(p, {"w": np.ones(3)})


def test_make_optimizer_errors():
    with pytest.raises(GraphRNNError, match="known optimizers: sgd, momentum, adam"):
        make_optimizer("rmsprop")
    with pytest.raises(GraphRNNError, match="no option beta1.*lr, momentum, weight_decay"):
        make_optimizer("momentum", beta1=0.9)
    with pytest.raises(GraphRNNError, match="lr must be a positive number"):
        make_optimizer("sgd", lr=-1)
    with pytest.raises(GraphRNNError, match=r"momentum must be in \[0, 1\)"):
        make_optimizer("momentum", momentum=1.0)
    assert isinstance(make_optimizer("ADAM", lr=0.1), Adam)


def test_clip_leaves_small_gradients_alone():
    g = {"a": np.array([3.0]), "b": np.array([4.0])}
    assert clip_grad_norm(g, 10.0) == 5.0
    np.testing.assert_array_equal(g["a"], [3.0])


def test_clip_returns_nonfinite_norm_unscaled():
    g = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(g, 1.0) == np.inf
    assert g["a"][1] == 1.0


_grad_dicts = st.dictionaries(
    st.sampled_from(["W", "U", "b"]),
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
        elements=st.floats(-1e3, 1e3, allow_subnormal=False),
    ),
    min_size=1,
)


@settings(max_examples=150, deadline=None)
@given(grads=_grad_dicts, max_norm=st.floats(1e-3, 1e3))
def test_clip_bounds_norm_and_keeps_direction(grads, max_norm):
    original = {k: v.copy() for k, v in grads.items()}
    before = clip_grad_norm(grads, max_norm)
    assert before == pytest.approx(global_norm(original), rel=1e-12)
    assert global_norm(grads) <= max_norm * (1 + 1e-9)
    scale = min(1.0, max_norm / before) if before > 0 else 1.0
    for k in grads:
        np.testing.assert_allclose(grads[k], original[k] * scale, rtol=1e-12, atol=0)
