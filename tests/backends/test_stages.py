"""Cutting a loop program into stages: packing respects the cut points and the budget, each
stage takes what it reads and returns what later stages read, and running the stages in order
computes what the uncut program computes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphrnn.backends.stages import pack, split

# A toy program in the generated style: v0 and v1 are arguments, each statement creates or
# updates a buffer. Cut points lie between statements.
STATEMENTS = [
    ["    v2 = np.empty((S_t, B,), dtype=DT)", "    v2[...] = v0 + v1"],
    [
        "    v3 = np.empty((S_t, B,), dtype=DT)",
        "    for i_t in range(S_t):",
        "        v3[i_t] = v2[i_t] * 2",
    ],
    ["    v4 = v3 + v0"],
    ["    v2[...] = v2 + 1.0"],
    [
        "    v5 = np.empty((S_t, B,), dtype=DT)",
        "    for i_t in range(S_t):",
        "        s7 = v4[i_t] - v2[i_t]",
        "        v5[i_t] = s7 * s7",
    ],
    ["    v6 = v5.sum() + v3"],
]
RESULTS = ["v6", "v4"]


def program():
    lines, cuts = [], []
    for statement in STATEMENTS:
        lines += statement
        cuts.append(len(lines))
    return lines, cuts


def run_whole(v0, v1):
    lines, _ = program()
    namespace = {"np": np, "DT": np.float64}
    text = "def kernel(v0, v1):\n    S_t, B = v0.shape\n" + "\n".join(lines)
    exec(text + f"\n    return ({', '.join(RESULTS)},)\n", namespace)
    return namespace["kernel"](v0, v1)


def run_stages(stages, v0, v1):
    env = {"v0": v0, "v1": v1, "S_t": v0.shape[0], "B": v0.shape[1]}
    for stage in stages:
        namespace = {"np": np, "DT": np.float64}
        exec(stage.source, namespace)
        out = namespace["stage"](*(env[a] for a in stage.args))
        env.update(zip(stage.returns, out or ()))
    return tuple(env[r] for r in RESULTS)


@settings(max_examples=40, deadline=None)
@given(budget=st.integers(1, 30))
def test_stages_compute_what_the_whole_program_computes(budget):
    lines, cuts = program()
    chunks = pack(lines, cuts, budget)
    assert sum(chunks, []) == lines
    for chunk in chunks:  # a chunk over budget holds exactly one uncuttable piece
        assert len(chunk) <= budget or len(chunk) in {len(s) for s in STATEMENTS}
    stages = split(chunks, RESULTS)
    rng = np.random.default_rng(budget)
    v0, v1 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for got, want in zip(run_stages(stages, v0.copy(), v1.copy()), run_whole(v0, v1)):
        np.testing.assert_array_equal(got, want)


def test_a_stage_returns_only_what_is_read_later():
    lines, cuts = program()
    stages = split(pack(lines, cuts, 1), RESULTS)  # one stage per statement
    assert [s.args for s in stages[:3]] == [
        ["v0", "v1", "B", "S_t"],
        ["v2", "B", "S_t"],
        ["v3", "v0"],
    ]
    assert [s.returns for s in stages] == [["v2"], ["v3"], ["v4"], [], ["v5"], ["v6"]]


def test_equal_code_under_different_names_is_one_stage_source():
    a = [
        "    v7 = np.empty((B,), dtype=DT)",
        "    for ib in range(B):",
        "        acc_12 = v3[ib]",
        "        v7[ib] = acc_12",
    ]
    b = [line.replace("v7", "v40").replace("v3", "v2").replace("acc_12", "acc_3") for line in a]
    (sa,), (sb,) = split([a], ["v7"]), split([b], ["v40"])
    assert sa.source == sb.source and sa.digest == sb.digest
    assert sa.args == ["v3", "B"] and sb.args == ["v2", "B"]
