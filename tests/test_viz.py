"""Pictures of folded and unrolled graphs (graphrnn.viz), checked on the DOT text itself and
on the positions Graphviz gives the nodes (`fmt="json"`).

The DOT text is parsed with a few regular expressions rather than a DOT library: the tests
only need node labels, edge attributes and which cluster a node is declared in.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import graphviz
import pytest

import graphrnn as gr
from graphrnn.errors import GraphRNNError
from graphrnn.viz import to_dot
from graphrnn.viz_pin import pinned

MODELS = Path(__file__).resolve().parent.parent / "models"
DATA = Path(__file__).resolve().parent / "data"
PARAMS = ("U", "W", "b", "V", "c")
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` binary not installed")

GRID = """
model Grid(C, H):
    input  p[C] over i, j
    target k[H] over i, j
    input  q[C] over j
    param  A[H, C] ~ glorot_uniform
    param  B[H, H] ~ orthogonal
    d(0) = zeros(H)
    e(j) = tanh(A @ q(j))
    d(i, j) = tanh(A @ p(i, j) + B @ d(i-1, j) + e(j))
    loss = mean over i of mean over j of softmax_cross_entropy(d(i, j), k(i, j))
"""

_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_NODE = re.compile(r"^\s*(n\d+) \[(.*)\]$")
_EDGE = re.compile(r"^\s*(n\d+) -> (n\d+)(?: \[(.*)\])?$")
_CLUSTER = re.compile(r"^\s*subgraph (cluster_\w+) \{$")

# A cell that reads its state one and two steps back.
TWO_DELAYS = """
model TwoDelays(I, H):
    input  x[I] over t
    target y[H] over t
    param  U[H, I] ~ glorot_uniform
    param  W1[H, H] ~ orthogonal
    param  W2[H, H] ~ orthogonal
    h(0) = zeros(H)
    h(t) = tanh(U @ x(t) + W1 @ h(t-1) + W2 @ h(t-2))
    loss = mean over t of mse(h(t), y(t))
"""


def _attrs(text: str | None) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(text or "")}


class Dot:
    """Nodes (id -> attrs, plus the cluster each is declared in) and edges of DOT text."""

    def __init__(self, text: str):
        self.text = text
        self.nodes: dict[str, dict[str, str]] = {}
        self.cluster_of: dict[str, str | None] = {}
        self.clusters: list[str] = []
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.hidden: list[tuple[str, str]] = []  # invisible edges: layout constraints
        cluster = None
        for line in text.splitlines():
            if m := _CLUSTER.match(line):
                cluster = m[1]
                self.clusters.append(cluster)
            elif line.strip() == "}":
                cluster = None
            elif m := _EDGE.match(line):
                attrs = _attrs(m[3])
                if attrs.get("style") == "invis":
                    self.hidden.append((m[1], m[2]))
                else:
                    self.edges.append((m[1], m[2], attrs))
            elif m := _NODE.match(line):
                self.nodes[m[1]] = _attrs(m[2])
                self.cluster_of[m[1]] = cluster

    def labels(self) -> list[str]:
        return [a["label"] for a in self.nodes.values()]

    def node(self, label: str) -> str:
        """The id of the one node whose label is `label`."""
        found = [n for n, a in self.nodes.items() if a["label"] == label]
        assert len(found) == 1, f"{len(found)} nodes labelled {label!r}"
        return found[0]

    def edges_between(self, source: str, target: str) -> list[dict[str, str]]:
        u, v = self.node(source), self.node(target)
        return [attrs for a, b, attrs in self.edges if (a, b) == (u, v)]

    def delay_edges(self) -> list[tuple[str, str, dict[str, str]]]:
        return [e for e in self.edges if e[2].get("style") == "dashed"]


@pytest.fixture(scope="module")
def elman() -> gr.Model:
    return gr.load(MODELS / "elman.grnn", I=3, H=4, O=2)


@pytest.fixture(scope="module")
def jordan() -> gr.Model:
    return gr.load(MODELS / "jordan.grnn", I=3, H=4, O=2)


# ---- the folded graph --------------------------------------------------------------------


def test_folded_elman_draws_the_equations_not_the_ops(elman):
    dot = Dot(gr.render(elman))
    assert sorted(dot.labels()) == sorted(
        [
            "U [4, 3]",
            "W [4, 4]",
            "b [4]",
            "V [2, 4]",
            "c [2]",
            "x(t) [3]",
            "y(t) [2]",
            "h(0) [4]",
            "a(t) [4]",
            "h(t) [4]",
            "o(t) [2]",
            "loss",
        ]
    )
    assert dot.clusters == []


def test_folded_elman_has_a_dashed_delay_edge_from_h_to_a(elman):
    dot = Dot(to_dot(elman.graph))
    (delay,) = dot.edges_between("h(t) [4]", "a(t) [4]")
    assert delay["style"] == "dashed"
    assert delay["color"] == "red"
    assert delay["constraint"] == "false"
    assert delay["label"] == "t-1"
    assert len(dot.delay_edges()) == 1, "a(t) is the only equation that reads a past step"


def test_folded_elman_edges_follow_the_equations(elman):
    dot = Dot(to_dot(elman.graph))
    for source in ("U [4, 3]", "x(t) [3]", "W [4, 4]", "b [4]"):
        assert dot.edges_between(source, "a(t) [4]"), source
    (plain,) = dot.edges_between("a(t) [4]", "h(t) [4]")
    assert "style" not in plain and "label" not in plain
    (initial,) = dot.edges_between("h(0) [4]", "a(t) [4]")
    assert initial["style"] == "dotted" and initial["label"] == "init"
    assert dot.edges_between("o(t) [2]", "loss") and dot.edges_between("y(t) [2]", "loss")
    assert not dot.edges_between("x(t) [3]", "h(t) [4]"), "h reads x only through a"


def test_folded_jordan_feeds_back_y_hat(jordan):
    dot = Dot(gr.render(jordan))
    (delay,) = dot.edges_between("y_hat(t) [2]", "a(t) [4]")
    assert delay["style"] == "dashed" and delay["label"] == "t-1"
    assert delay["constraint"] == "false"
    assert not dot.edges_between("h(t) [4]", "a(t) [4]")
    assert len(dot.delay_edges()) == 1


def test_several_delays_of_one_value_share_one_label():
    dot = Dot(gr.render(gr.loads(TWO_DELAYS, I=3, H=4)))
    (loop,) = dot.edges_between("h(t) [4]", "h(t) [4]")
    assert loop["label"] == "t-1, t-2" and loop["style"] == "dashed"


def test_lag_labels_stay_unambiguous():
    from graphrnn.viz import _lags_text

    assert _lags_text([(("t", -2),), (("t", -1),)]) == "t-1, t-2"
    assert _lags_text([(("i", -1), ("j", 2))]) == "i-1, j+2"
    assert _lags_text([(("i", -1), ("j", -1)), (("i", -1),)]) == "(i-1), (i-1, j-1)"


def test_delay_edge_beside_a_same_step_edge_takes_the_side():
    """In Cho's GRU n(t) reads h(t-1) and h(t) reads n(t): the delay edge h -> n would lie on
    the edge n -> h, so it leaves and enters on the right; other delay edges keep the
    default route, and so do the same-step edges."""
    dot = Dot(gr.render(gr.load(MODELS / "gru_cho.grnn", I=3, H=4, O=2)))
    (delay,) = dot.edges_between("h.h(t) [4]", "h.n(t) [4]")
    assert delay["label"] == "t-1" and (delay["tailport"], delay["headport"]) == ("e", "e")
    (plain,) = dot.edges_between("h.n(t) [4]", "h.h(t) [4]")
    assert "tailport" not in plain and "label" not in plain
    (to_hx,) = dot.edges_between("h.h(t) [4]", "h.hx(t) [7]")
    assert to_hx["label"] == "t-1" and "tailport" not in to_hx


def test_backward_initial_value_stands_at_T_plus_1():
    model = gr.load(MODELS / "birnn.grnn", I=3, H=4, O=2)
    folded = Dot(gr.render(model))
    (init,) = folded.edges_between("h.bw.h(T+1) [4]", "h.bw.h(t) [4]")
    assert init["label"] == "init"
    assert folded.edges_between("h.fw.h(0) [4]", "h.fw.h(t) [4]")
    unrolled = Dot(gr.render(model, unroll=3))
    assert unrolled.cluster_of[unrolled.node("h.bw.h(T+1) [4]")] == "cluster_t4"
    assert unrolled.cluster_of[unrolled.node("h.fw.h(0) [4]")] == "cluster_t0"
    assert unrolled.edges_between("h.bw.h(T+1) [4]", "h.bw.h@3 [4]")
    assert unrolled.edges_between("h.fw.h(0) [4]", "h.fw.h@1 [4]")
    assert 'label="t = 4"' in unrolled.text
    bare = Dot(to_dot(model.unroll(3)))  # no folded graph: the readers' steps tell
    assert bare.cluster_of[bare.node("h.bw.h(T+1) [4]")] == "cluster_t4"
    assert bare.cluster_of[bare.node("h.fw.h(0) [4]")] == "cluster_t0"


def test_ops_detail_draws_every_node(elman):
    dot = Dot(to_dot(elman.graph, detail="ops"))
    labels = dot.labels()
    assert len(labels) == len(elman.graph.nodes())
    assert sum(label.startswith("matmul (t)") for label in labels) == 3
    (delay_node,) = [n for n, a in dot.nodes.items() if a["label"].startswith("delay")]
    h = dot.node("h(t) [4]\\ntanh")
    (into_delay,) = [a for u, v, a in dot.edges if (u, v) == (h, delay_node)]
    assert into_delay["style"] == "dashed" and into_delay["label"] == "t-1"


def test_title_and_unknown_detail(elman):
    assert 'label="Elman RNN"' in to_dot(elman.graph, title="Elman RNN")
    with pytest.raises(GraphRNNError, match="detail"):
        to_dot(elman.graph, detail="everything")


# ---- the unrolled graph ------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_unrolled_elman_copies_each_step_once_and_shares_parameters(elman, tau):
    dot = Dot(to_dot(elman.unroll(tau)))
    labels = dot.labels()
    for name, size in (("x", 3), ("a", 4), ("h", 4), ("o", 2), ("y", 2)):
        copies = sorted(label for label in labels if label.startswith(f"{name}@"))
        assert copies == sorted(f"{name}@{k} [{size}]" for k in range(1, tau + 1))
    shapes = {"U": "[4, 3]", "W": "[4, 4]", "b": "[4]", "V": "[2, 4]", "c": "[2]"}
    for name in PARAMS:
        assert labels.count(f"{name} {shapes[name]}") == 1
        assert dot.cluster_of[dot.node(f"{name} {shapes[name]}")] is None
    assert labels.count("loss") == 1
    # step 0 holds the initial value h(0)
    assert sorted(dot.clusters) == sorted(f"cluster_t{k}" for k in range(0, tau + 1))


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_unrolled_steps_sit_in_their_clusters(elman, tau):
    dot = Dot(gr.render(elman, unroll=tau))
    for k in range(1, tau + 1):
        for name, size in (("a", 4), ("h", 4), ("o", 2)):
            assert dot.cluster_of[dot.node(f"{name}@{k} [{size}]")] == f"cluster_t{k}"
        assert f'label="t = {k}"' in dot.text
    assert dot.cluster_of[dot.node("loss")] is None
    assert dot.cluster_of[dot.node("h(0) [4]")] == "cluster_t0"
    assert 'label="t = 0"' in dot.text


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_unrolled_edges_between_steps_are_red_and_unlabelled(elman, jordan, tau):
    """No delay edges are left; what they became, edges from one step into the next, are
    drawn solid red3 (and do not constrain the layout); edges within a step stay black."""
    for model in (elman, jordan):
        dot = Dot(gr.render(model, unroll=tau))
        assert dot.delay_edges() == []
        assert not any("label" in attrs for _, _, attrs in dot.edges)
        across = 0
        for u, v, attrs in dot.edges:
            cu, cv = dot.cluster_of[u], dot.cluster_of[v]
            if cu is not None and cv is not None and cu != cv:
                assert attrs["color"] == "red3" and attrs["constraint"] == "false"
                across += 1
            else:
                assert attrs.get("color") != "red3"
        assert across == tau  # h(0) -> a@1, then h@k -> a@k+1 (jordan: y_hat@k -> a@k+1)


def test_unrolled_recurrence_links_consecutive_steps(elman):
    dot = Dot(gr.render(elman, unroll=3))
    assert dot.edges_between("h@1 [4]", "a@2 [4]") and dot.edges_between("h@2 [4]", "a@3 [4]")
    assert dot.edges_between("h(0) [4]", "a@1 [4]")
    assert not dot.edges_between("h@1 [4]", "a@3 [4]")
    for k in (1, 2, 3):
        assert dot.edges_between("W [4, 4]", f"a@{k} [4]")


def test_unrolled_ops_detail_puts_anonymous_ops_in_their_step(elman):
    dot = Dot(gr.render(elman, unroll=2, detail="ops"))
    matmuls = [n for n, a in dot.nodes.items() if a["label"].startswith("matmul")]
    assert len(matmuls) == 2 * 3
    assert sorted(dot.cluster_of[n] for n in matmuls) == ["cluster_t1"] * 3 + ["cluster_t2"] * 3
    assert dot.cluster_of[dot.node("U [4, 3]")] is None


def test_unrolled_several_axes():
    model = gr.loads(GRID, C=2, H=3)
    expected = {"cluster_i1_j1", "cluster_i1_j2", "cluster_i2_j1", "cluster_i2_j2"}
    # Through render the folded graph says e is over j; bare to_dot infers it from q@k.
    for text in (gr.render(model, unroll=2), to_dot(model.unroll(2))):
        dot = Dot(text)
        assert set(dot.clusters) == expected | {"cluster_j1", "cluster_j2"}
        assert dot.cluster_of[dot.node("d@(2,1) [3]")] == "cluster_i2_j1"
        assert dot.cluster_of[dot.node("e@2 [3]")] == "cluster_j2"
        assert dot.cluster_of[dot.node("q@2 [2]")] == "cluster_j2"
        assert 'label="i = 2, j = 1"' in text
        assert dot.delay_edges() == []
    folded = Dot(gr.render(model))
    (delay,) = folded.edges_between("d(i, j) [3]", "d(i, j) [3]")
    assert delay["label"] == "i-1"


def test_render_accepts_a_graph_and_lengths_per_axis(elman):
    dot = Dot(gr.render(elman.graph, unroll={"t": 2}))
    assert sorted(dot.clusters) == ["cluster_t0", "cluster_t1", "cluster_t2"]
    with pytest.raises(GraphRNNError, match="positive"):
        gr.render(elman, unroll=0)
    with pytest.raises(TypeError):
        gr.render("models/elman.grnn")


# ---- files and the Graphviz binaries ------------------------------------------------------


def _no_dot(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Source, "pipe", missing)


def test_dot_file_needs_no_binaries(elman, tmp_path, monkeypatch):
    _no_dot(monkeypatch)
    path = tmp_path / "elman.dot"
    text = gr.render(elman, unroll=3, path=str(path))
    assert path.read_text() == text
    assert text.startswith("digraph")
    assert [p.name for p in tmp_path.iterdir()] == ["elman.dot"]
    assert gr.render(elman) == gr.render(elman, path=None)


def test_image_without_binaries_says_how_to_install(elman, tmp_path, monkeypatch):
    _no_dot(monkeypatch)
    for name in ("elman.svg", "elman.png"):
        with pytest.raises(GraphRNNError) as info:
            gr.render(elman, unroll=3, path=str(tmp_path / name))
        message = str(info.value)
        assert "apt-get install graphviz" in message
        assert "brew install graphviz" in message
        assert "file.dot" in message
    assert list(tmp_path.iterdir()) == []


def test_executable_not_found_is_reported_too(elman, tmp_path, monkeypatch):
    """`which` can find a `dot` that graphviz then fails to run (broken install, PATH race)."""
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: "/usr/bin/dot")

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Source, "pipe", missing)
    with pytest.raises(GraphRNNError, match="apt-get install graphviz"):
        gr.render(elman, path=str(tmp_path / "elman.svg"))


def test_bad_file_names(elman, tmp_path):
    with pytest.raises(GraphRNNError, match=r"\.svg"):
        gr.render(elman, path=str(tmp_path / "elman.bmp"))
    with pytest.raises(GraphRNNError, match="cannot write"):
        gr.render(elman, path=str(tmp_path / "missing" / "elman.dot"))
    assert list(tmp_path.iterdir()) == []


@needs_dot
def test_svg_is_written(elman, tmp_path):
    path = tmp_path / "elman.svg"
    text = gr.render(elman, unroll=3, path=path)
    svg = path.read_text()
    assert "<svg" in svg and "h@3" in svg and "t = 3" in svg
    assert text.startswith("digraph")
    assert [p.name for p in tmp_path.iterdir()] == ["elman.svg"], "no stray source file"


@needs_dot
def test_image_bytes_without_a_path(jordan):
    png = gr.render(jordan, fmt="png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")


@needs_dot
def test_cli_render(tmp_path, capsys):
    from graphrnn.cli import main

    path = tmp_path / "elman.svg"
    assert main(["render", str(MODELS / "elman.grnn"), "--unroll", "3", "-o", str(path)]) == 0
    assert "<svg" in path.read_text()


# ---- the unrolled layout: positions from Graphviz --------------------------------------


class Layout:
    """Where Graphviz put every node (centre x, y; y grows upwards) and every cluster."""

    def __init__(self, data: bytes | str):
        laid = json.loads(data)
        self.at: dict[str, tuple[float, float]] = {}
        self.half: dict[str, tuple[float, float]] = {}  # half width and height, in points
        self.box: dict[str, tuple[float, float, float, float]] = {}
        self.members: dict[str, set[str]] = {}
        names = {o["_gvid"]: o["name"] for o in laid["objects"] if "pos" in o}
        for o in laid["objects"]:
            if "pos" in o and "nodes" not in o:
                x, y = (float(v) for v in o["pos"].split(","))
                self.at[o["label"]] = (x, y)
                self.half[o["label"]] = (36 * float(o["width"]), 36 * float(o["height"]))
            elif o.get("name", "").startswith("cluster_"):
                self.box[o["name"]] = tuple(float(v) for v in o["bb"].split(","))
                self.members[o["name"]] = {names[i] for i in o.get("nodes", []) if i in names}

    def overlapping(self) -> list[tuple[str, str]]:
        """Pairs of nodes whose boxes overlap."""
        found = []
        for a, b in itertools.combinations(self.at, 2):
            (xa, ya), (xb, yb) = self.at[a], self.at[b]
            (wa, ha), (wb, hb) = self.half[a], self.half[b]
            if abs(xa - xb) < wa + wb and abs(ya - yb) < ha + hb:
                found.append((a, b))
        return found

    def x(self, label: str) -> float:
        return self.at[label][0]

    def y(self, label: str) -> float:
        return self.at[label][1]


def _residual_gru() -> gr.Model:
    return gr.load(DATA / "residual_gru.grnn", I=3, H=4, O=2)


def _layout(model: gr.Model, tau: int) -> tuple[Dot, Layout]:
    return Dot(gr.render(model, unroll=tau)), Layout(gr.render(model, unroll=tau, fmt="json"))


LAID_OUT = [
    ("birnn", 1),
    ("residual_gru", 3),
    ("deep_birnn", 3),
    ("birnn", 4),
    ("many_to_one", 5),  # dot draws these columns out of order
    ("elman_relu", 6),
]


def _model(name: str) -> gr.Model:
    if name == "residual_gru":
        return _residual_gru()
    return gr.load(MODELS / f"{name}.grnn", I=3, H=4, O=2)


@pytest.mark.parametrize(("name", "tau"), LAID_OUT)
def test_unrolled_columns_stand_in_step_order(name, tau):
    """One column per step, t = 0 (initial values) first, left to right, no two overlapping,
    every copy inside its own column, no node on another."""
    dot, layout = _layout(_model(name), tau)
    columns = sorted(layout.box, key=lambda c: int(c.removeprefix("cluster_t")))
    assert columns == sorted(layout.box, key=lambda c: layout.box[c][0])
    for left, right in zip(columns, columns[1:]):
        assert layout.box[left][2] <= layout.box[right][0], (left, right)
    for node, cluster in dot.cluster_of.items():
        if cluster is not None:
            x0, y0, x1, y1 = layout.box[cluster]
            x, y = layout.x(dot.nodes[node]["label"]), layout.y(dot.nodes[node]["label"])
            assert x0 <= x <= x1 and y0 <= y <= y1, (dot.nodes[node]["label"], cluster)
    assert layout.overlapping() == []


def test_residual_gru_keeps_one_row_per_equation_and_a_band_per_layer():
    dot, layout = _layout(_residual_gru(), 3)
    copies: dict[str, list[str]] = {}
    for label in dot.labels():
        if "@" in label:
            copies.setdefault(label.split("@")[0], []).append(label)
    assert len(copies) == 2 + 3 * 5 + 4 + 1  # x, y; hx r z n h per layer; v[0..3]; o
    for name, row in copies.items():
        assert len(row) == 3 and len({layout.y(label) for label in row}) == 1, name
    for k in (1, 2, 3):
        for upper, lower in (("g[1]", "g[2]"), ("g[2]", "g[3]")):
            above = [
                layout.y(c) for c in dot.labels() if c.startswith(f"{upper}.") and f"@{k} " in c
            ]
            below = [
                layout.y(c) for c in dot.labels() if c.startswith(f"{lower}.") and f"@{k} " in c
            ]
            assert len(above) == len(below) == 5
            assert min(above) > max(below), (upper, lower, k)


def test_residual_gru_draws_each_parameter_once():
    model = _residual_gru()
    dot = Dot(gr.render(model, unroll=3))
    labels = dot.labels()
    for name, value in model.params.items():
        label = f"{name} [{', '.join(str(d) for d in value.shape)}]"
        assert labels.count(label) == 1, label
        assert dot.cluster_of[dot.node(label)] is None
    assert len(model.params) == 3 + 3 * 8


def test_bidirectional_layers_draw_forward_above_backward_and_T_plus_1_at_the_right():
    dot, layout = _layout(gr.load(MODELS / "deep_birnn.grnn", I=3, H=4, O=2), 3)
    for k in (1, 2, 3):
        rows = [f"h[{n}].{d}.h@{k} [4]" for n in (1, 2) for d in ("fw", "bw")]
        heights = [layout.y(r) for r in rows]
        assert all(a > b for a, b in zip(heights, heights[1:])), (k, heights)
    for n in (1, 2):
        start, end = f"h[{n}].fw.h(0) [4]", f"h[{n}].bw.h(T+1) [4]"
        assert layout.x(start) < layout.x(f"h[{n}].fw.h@1 [4]")
        assert layout.x(end) > layout.x(f"h[{n}].bw.h@3 [4]")
        assert layout.y(end) == layout.y(f"h[{n}].bw.h@3 [4]")  # in the row it starts
        assert dot.cluster_of[dot.node(end)] == "cluster_t4"


def test_pinned_moves_columns_into_step_order():
    """Columns drawn t2 (with a parameter in the gap to its right), then t1, come back as
    t1, t2 with the parameter still right of t2; nodes are pinned for neato -n2."""
    text = "\n".join(
        [
            "digraph g {",
            "\tn9 [label=P]",
            "\tsubgraph cluster_t1 {",
            '\t\tn1 [label="h@1"]',
            "\t}",
            "\tsubgraph cluster_t2 {",
            '\t\tn2 [label="h@2"]',
            "\t}",
            "\tn1 -> n2 [style=invis]",
            "\tn9 -> n1",
            "}",
        ]
    )
    objects = [
        {"_gvid": 0, "name": "cluster_t1", "bb": "200,0,300,50", "nodes": [2]},
        {"_gvid": 1, "name": "cluster_t2", "bb": "0,0,100,50", "nodes": [3]},
        {"_gvid": 2, "name": "n1", "pos": "250,25"},
        {"_gvid": 3, "name": "n2", "pos": "50,25"},
        {"_gvid": 4, "name": "n9", "pos": "150,25"},
    ]
    fixed = pinned(text, json.dumps({"bb": "0,0,300,60", "objects": objects}))
    assert 'n1 [label="h@1" pos="50.00,25.00!"]' in fixed
    assert 'n2 [label="h@2" pos="158.00,25.00!"]' in fixed  # after t1 and t1's margin
    assert 'n9 [label=P pos="258.00,25.00!"]' in fixed  # still in the gap right of t2
    assert 'bb="0.00,0.00,100.00,50.00"' in fixed and "style=invis" not in fixed
    assert "n9 -> n1" in fixed
    in_order = [{**o, "pos": "10,25"} if o["name"] == "n1" else o for o in objects]
    in_order[0] = {**objects[0], "bb": "0,0,20,50"}
    in_order[1] = {**objects[1], "bb": "40,0,60,50"}
    assert pinned(text, json.dumps({"bb": "0,0,60,60", "objects": in_order})) is None
