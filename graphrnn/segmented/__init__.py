"""Segmented BPTT with recomputation: gradient checkpointing along time.

Plain BPTT keeps every intermediate value of every step for the backward pass: memory grows
with the sequence length T. Here the T steps are cut into segments of k steps. A forward
sweep keeps only the recurrent states at segment boundaries (T/k of them); a backward sweep
then goes over the segments from the last to the first, recomputes each segment's forward
pass and back-propagates through it alone (k steps of intermediates). With k ~ sqrt(T) the
memory is O(sqrt(T)) instead of O(T), for the price of one extra forward pass.

The rewrite of the graph that one segment runs is in rewrite.py (`build_segment_graph`); the
sweeps over the segments at run time in driver.py (`SegmentedBPTT`).
"""
