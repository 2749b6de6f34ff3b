"""Optimising rewrites of the IR; each pass is its own module and can be switched off by name.

Every pass maps a Graph to a Graph with the same outputs (same keys) and the same values and
returns `(graph, lines)`, the lines saying what it did. Passes copy the graph unless called
with `inplace=True`: leaves (inputs, targets, parameters) are never copied or changed, and a
surviving user-named node keeps its name and source location.

  simplify    algebraic identities, zero propagation, constant folding   (simplify.py)
  cse         common-subexpression elimination by hash-consing            (cse.py)
  gemm_merge  products sharing a vector -> one product of stacked rows    (gemm_merge.py)
  gemm_sum    a sum of products -> one product of concatenations          (gemm_sum.py)
  dce         drop outputs not asked for, and what only they needed       (dce.py)

`optimize(graph, disable=...)` runs them in the default order (pipeline.py). Fusion of
elementwise nodes and hoisting of non-recurrent nodes out of loops are not passes: the
backend's lowering and the schedule do them. See docs/passes.md.
"""

from graphrnn.passes.pipeline import ORDER, PASSES, check_disable, optimize

__all__ = ["optimize", "check_disable", "PASSES", "ORDER"]
