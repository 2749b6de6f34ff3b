"""patches / grid: layout, inverse and adjoint pairs, gradients, and the ReNet block's
orientation on non-square inputs (a swapped axis or flattening order cannot pass)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphrnn as gr
from graphrnn.backends import reference
from graphrnn.errors import DSLError, ShapeError
from graphrnn.ir.node import Context, Node
from graphrnn.ir.ops.grid import grid, patches
from graphrnn.ir.registry import EvalEnv, apply

from .gradcheck import Builder, check_gradients, gradients, scalar_loss

MODEL = Path(__file__).resolve().parents[2] / "models" / "spatial_rnn_sex.grnn"


def _image_leaf(shape, batched=True):
    return Node("input", [], {"role": "input"}, shape, Context(frozenset(), batched), "x")


def _env(rows, cols, batch, axes=("t", "i", "j")):
    sizes = {"t": 1, "i": rows, "j": cols}
    return EvalEnv(axes, {a: sizes[a] for a in axes}, batch, np.dtype("float64"))


def _run(roots, env, leaves):
    values = reference.evaluate(roots, env, leaves)
    return [values[r.id] for r in roots]


@pytest.mark.parametrize("axes", [("t", "i", "j"), ("j", "t", "i")])
def test_patch_i_j_holds_rows_i_and_columns_j_in_channel_row_column_order(axes):
    c, ph, pw, rows, cols, batch = 2, 3, 2, 2, 4, 2  # 6 x 8 image: not square, ph != pw
    x = _image_leaf((c, rows * ph, cols * pw))
    p = patches(x, ph, pw, ("i", "j"))
    assert p.shape == (c * ph * pw,) and p.axes == {"i", "j"}
    env = _env(rows, cols, batch, axes)
    image = np.random.default_rng(0).normal(size=(batch, c, rows * ph, cols * pw))
    aligned = image.reshape((1,) * len(axes) + image.shape)
    (value,) = _run([p], env, {x.id: aligned})
    di, dj = axes.index("i"), axes.index("j")
    for i in range(rows):
        for j in range(cols):
            index = [0] * len(axes)
            index[di], index[dj] = i, j
            for b in range(batch):
                vec = value[tuple(index) + (b,)]
                block = image[b, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw]
                np.testing.assert_array_equal(vec, block.reshape(-1))
                for ch in range(c):
                    for r in range(ph):
                        for q in range(pw):
                            k = ch * ph * pw + r * pw + q
                            assert vec[k] == image[b, ch, i * ph + r, j * pw + q]


@settings(max_examples=30, deadline=None)
@given(
    c=st.integers(1, 3),
    ph=st.integers(1, 3),
    pw=st.integers(1, 3),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    batched=st.booleans(),
)
def test_grid_inverts_patches_and_back(c, ph, pw, rows, cols, batched):
    x = _image_leaf((c, rows * ph, cols * pw), batched)
    p = patches(x, ph, pw, ("i", "j"))
    attrs = {"axes": ("i", "j"), "rows": rows, "cols": cols, "ph": ph, "pw": pw}
    back = apply("grid", p, **attrs)
    again = apply("patches", back, **attrs)
    env = _env(rows, cols, 2)
    image = np.random.default_rng(1).normal(size=(1, 1, 1, 2 if batched else 1) + x.shape)
    y, pp, p2 = _run([back, p, again], env, {x.id: image})
    np.testing.assert_array_equal(y, image)
    np.testing.assert_array_equal(p2, pp)
    # adjoint pair: <patches(x), v> = <x, grid(v)> for any v over the grid
    v = np.random.default_rng(2).normal(size=pp.shape)
    vin = Node("input", [], {"role": "input"}, p.shape, p.context, "v")
    (gv,) = _run([apply("grid", vin, **attrs)], env, {vin.id: v})
    assert np.isclose(np.sum(pp * v), np.sum(image * gv))


def test_grid_of_vectors_puts_v_i_j_at_cell_i_j():
    v = Node("input", [], {"role": "input"}, (3,), Context(frozenset({"i", "j"}), True), "v")
    out = grid(v, ("i", "j"), 2, 5)
    assert out.shape == (3, 2, 5) and not out.axes
    env = _env(2, 5, 1)
    values = np.random.default_rng(3).normal(size=(1, 2, 5, 1, 3))
    (y,) = _run([out], env, {v.id: values})
    np.testing.assert_array_equal(y[0, 0, 0, 0], np.moveaxis(values[0, :, :, 0], -1, 0))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_vjps_match_finite_differences_with_extra_axes(data):
    """patches of an image that itself varies over nothing else, read by a value over (t, u),
    and grid back: gradients through both ops and reduce_to."""
    b = Builder(data.draw)
    rows, cols = b.env.sizes["t"], b.env.sizes["u"]
    ph, pw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    x = b.leaf((2, rows * ph, cols * pw), Context(frozenset(), True))
    w = b.leaf((2 * ph * pw,), Context(frozenset({"t"}), data.draw(st.booleans())))
    p = apply("mul", apply("tanh", patches(x, ph, pw, ("t", "u"))), w)
    out = apply("grid", p, axes=("t", "u"), rows=rows, cols=cols, ph=ph, pw=pw)
    loss = scalar_loss(b, apply("tanh", out))
    check_gradients(b, loss, gradients(loss, b.leaves))


def test_shape_errors_are_clear():
    x = _image_leaf((2, 5, 4))
    with pytest.raises(ShapeError, match="does not split into whole 2x2 blocks"):
        apply("patches", x, ph=2, pw=2, axes=("i", "j"), rows=2, cols=2)


# ---- the ReNet block of models/spatial_rnn_sex.grnn ------------------------------------------
def _defs() -> str:
    text = MODEL.read_text()
    return text[: text.index("\nmodel ")]


TEST_MODEL = """
model T(C = 2, HI = 4, WI = 6, H = 3, PH = 2, PW = 1):
    input  img[C, HI, WI]
    target y[2]
    s = renet(img, H, ph = PH, pw = PW)
    param V[2, 2 * H, 1, 1]
    o = global_avgpool(conv2d(s, V))
    loss = softmax_cross_entropy(o, y)
"""


def _renet_numpy(img, P, H, ph, pw, prefix="s"):
    """ReNet by hand: vertical sweeps (down, up) over the patches, then horizontal sweeps
    (right, left) over their concatenation."""
    b, c, hi, wi = img.shape
    rows, cols = hi // ph, wi // pw
    p = img.reshape(b, c, rows, ph, cols, pw).transpose(0, 2, 4, 1, 3, 5).reshape(b, rows, cols, -1)

    def sweep(x, name, along, reverse):
        U, W, bias = (P[f"{prefix}.{name}.{k}"] for k in ("U", "W", "b"))
        out = np.zeros(x.shape[:3] + (H,))
        n = x.shape[1 + along]
        order = range(n - 1, -1, -1) if reverse else range(n)
        h = np.zeros((b, x.shape[2 - along], H))
        for k in order:
            xs = x[:, k] if along == 0 else x[:, :, k]
            h = np.tanh(xs @ U.T + h @ W.T + bias)
            if along == 0:
                out[:, k] = h
            else:
                out[:, :, k] = h
        return out

    v = np.concatenate([sweep(p, "vert.fw", 0, False), sweep(p, "vert.bw", 0, True)], axis=-1)
    h = np.concatenate([sweep(v, "horiz.fw", 1, False), sweep(v, "horiz.bw", 1, True)], axis=-1)
    return h.transpose(0, 3, 1, 2)  # [B, 2H, rows, cols]


@pytest.mark.parametrize("hi, wi, ph, pw", [(4, 6, 2, 1), (6, 4, 1, 2), (2, 9, 1, 3)])
def test_renet_block_matches_a_hand_written_renet_on_non_square_maps(hi, wi, ph, pw):
    model = gr.loads(_defs() + TEST_MODEL, model="T", HI=hi, WI=wi, PH=ph, PW=pw, seed=4)
    img = np.random.default_rng(5).normal(size=(2, 2, hi, wi))
    out = model.compile("reference", "float64").forward(model.params, {"img": img})["s"]
    expected = _renet_numpy(img, model.params, 3, ph, pw)
    assert out.shape == expected.shape == (2, 6, hi // ph, wi // pw)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_vertical_first_differs_from_horizontal_first_on_a_non_square_map():
    model = gr.loads(_defs() + TEST_MODEL, model="T", HI=3, WI=5, PH=1, PW=1, seed=6)
    img = np.random.default_rng(7).normal(size=(1, 2, 3, 5))
    out = model.compile("reference", "float64").forward(model.params, {"img": img})["s"]
    vertical_first = _renet_numpy(img, model.params, 3, 1, 1)
    # the same weights applied horizontally first: transpose the map, sweep, transpose back
    params = dict(model.params)
    for d in ("fw", "bw"):
        for k in ("U", "W", "b"):
            params[f"t.vert.{d}.{k}"] = params[f"s.vert.{d}.{k}"]
            params[f"t.horiz.{d}.{k}"] = params[f"s.horiz.{d}.{k}"]
    swapped = _renet_numpy(img.transpose(0, 1, 3, 2), params, 3, 1, 1, "t").transpose(0, 1, 3, 2)
    np.testing.assert_allclose(out, vertical_first, rtol=1e-12, atol=1e-12)
    assert not np.allclose(out, swapped, atol=1e-3)


def test_patches_needs_an_equation_naming_its_axes():
    bad = _defs() + re.sub(r"s = renet.*", "s = grid(patches(img, 1, 1))", TEST_MODEL)
    with pytest.raises(DSLError, match="p\\(i, j\\) = patches"):
        gr.loads(bad, model="T")


def test_unknown_keyword_is_reported():
    bad = _defs() + TEST_MODEL.replace("conv2d(s, V)", "conv2d(s, V, strides = 2)")
    with pytest.raises(DSLError, match="conv2d\\(\\) has no argument 'strides'"):
        gr.loads(bad, model="T")
