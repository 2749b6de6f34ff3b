"""models/spatial_rnn_sex.grnn: it loads at full size, its gradients match finite differences
at a small size, and the Numba backend agrees with the reference on its SpatialRNN block and
on the whole network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import graphrnn as gr
from graphrnn.check import gradient_check

MODEL = Path(__file__).resolve().parents[1] / "models" / "spatial_rnn_sex.grnn"
SMALL = dict(HI=32, WI=64, C1=2, C2=2, C3=2, C4=2, H1=2, H2=2)


def test_full_size_model_loads_with_the_paper_shapes():
    model = gr.load(MODEL)
    g = model.graph
    assert g.inputs["img"].shape == (3, 128, 128)
    assert g.outputs["r1"].shape == (512, 8, 8)  # 1/16 resolution, 2 x 256 units
    assert g.outputs["r2"].shape == (1024, 4, 4)  # 1/32 resolution, 2 x 512 units
    assert g.outputs["o"].shape == (2,)
    assert g.axis_sizes == {"s1_i": 8, "s1_j": 8, "s2_i": 4, "s2_j": 4}
    assert model.params["s1.vert.fw.U"].shape == (256, 256 * 4)
    assert model.params["s2.horiz.bw.W"].shape == (512, 512)


def test_small_non_square_model_passes_the_gradient_check():
    model = gr.load(MODEL, **SMALL)
    assert model.graph.outputs["r2"].shape == (4, 1, 2)
    results = gradient_check(model, batch=3)
    worst = max(results, key=lambda r: r.rel_error)
    assert worst.rel_error < 1e-6, worst


def test_gru_cell_can_replace_the_tanh_cell():
    text = MODEL.read_text().replace("s1 = renet(c4, H1)", "s1 = renet(c4, H1, cell = gru_cell)")
    model = gr.loads(text, **SMALL)
    assert "s1.vert.fw.Uz" in model.params and "s2.vert.fw.Uz" not in model.params
    img = np.random.default_rng(0).normal(size=(2, 3, 32, 64))
    out = model.compile("reference", "float64").forward(model.params, {"img": img})
    assert out["o"].shape == (2, 2) and np.all(np.isfinite(out["o"]))


BLOCK = """
model Block(C = 2, HI = 4, WI = 6, H = 3):
    input  img[C, HI, WI]
    target y[2]
    s = renet(img, H, ph = 2, pw = 1)
    param V[2, 2 * H, 1, 1]
    o = global_avgpool(conv2d(s, V))
    loss = softmax_cross_entropy(o, y)
"""


def test_numba_matches_reference_on_the_spatial_rnn_block():
    text = MODEL.read_text()
    model = gr.loads(text[: text.index("\nmodel ")] + BLOCK, model="Block")
    rng = np.random.default_rng(1)
    img, y = rng.normal(size=(3, 2, 4, 6)), np.eye(2)[[0, 1, 1]]
    ref = model.compile("reference", "float64").loss_and_grad(model.params, {"img": img}, {"y": y})
    got = model.compile("numba", "float64").loss_and_grad(model.params, {"img": img}, {"y": y})
    assert np.isclose(ref[0], got[0], rtol=1e-12)
    for name, g in ref[1].items():
        np.testing.assert_allclose(got[1][name], g, rtol=1e-9, atol=1e-12, err_msg=name)


def test_numba_matches_reference_on_the_whole_classifier():
    """The whole network (conv layers, both ReNet blocks, batch norms) compiles as stages."""
    model = gr.load(MODEL, **SMALL)
    rng = np.random.default_rng(2)
    img, y = 40 * rng.normal(size=(2, 3, 32, 64)), np.eye(2)[[1, 0]]
    ref = model.compile("reference", "float64").loss_and_grad(model.params, {"img": img}, {"y": y})
    got = model.compile("numba", "float64").loss_and_grad(model.params, {"img": img}, {"y": y})
    assert np.isclose(ref[0], got[0], rtol=1e-12)
    for name, g in ref[1].items():
        np.testing.assert_allclose(got[1][name], g, rtol=1e-8, atol=1e-12, err_msg=name)
