"""Pictures of folded and unrolled graphs (graphrnn.viz), checked on the DOT text itself.

The DOT text is parsed with a few regular expressions rather than a DOT library: the tests
only need node labels, edge attributes and which cluster a node is declared in.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import graphviz
import pytest

import graphrnn as gr
from graphrnn.errors import GraphRNNError
from graphrnn.viz import to_dot

MODELS = Path(__file__).resolve().parent.parent / "models"
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
        cluster = None
        for line in text.splitlines():
            if m := _CLUSTER.match(line):
                cluster = m[1]
                self.clusters.append(cluster)
            elif line.strip() == "}":
                cluster = None
            elif m := _EDGE.match(line):
                self.edges.append((m[1], m[2], _attrs(m[3])))
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
    assert sorted(dot.clusters) == sorted(f"cluster_t{k}" for k in range(1, tau + 1))


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_unrolled_steps_sit_in_their_clusters(elman, tau):
    dot = Dot(gr.render(elman, unroll=tau))
    for k in range(1, tau + 1):
        for name, size in (("a", 4), ("h", 4), ("o", 2)):
            assert dot.cluster_of[dot.node(f"{name}@{k} [{size}]")] == f"cluster_t{k}"
        assert f'label="t = {k}"' in dot.text
    assert dot.cluster_of[dot.node("loss")] is None
    assert dot.cluster_of[dot.node("h(0) [4]")] is None


@pytest.mark.parametrize("tau", [1, 3, 5])
def test_unrolled_picture_has_no_delay_edges(elman, jordan, tau):
    for model in (elman, jordan):
        dot = Dot(gr.render(model, unroll=tau))
        assert dot.delay_edges() == []
        assert not any("label" in attrs for _, _, attrs in dot.edges)
        assert not any(attrs.get("color") == "red" for _, _, attrs in dot.edges)


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
    assert sorted(dot.clusters) == ["cluster_t1", "cluster_t2"]
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
