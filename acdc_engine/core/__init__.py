"""The vocabulary every layer shares; depends on nothing heavier than torch (and networkx for paths).

  errors     ``AcdcError``: every problem a user can cause
  nodes      ``NodeKind`` and ``Node``: the one place that builds and reads node names
  choices    the named choices of a run's settings (metric, ablation, dtype, device)
  values     a schema's values checked: types, ranges, the naming conventions for ranges
  shape      ``GraphShape``, the forward-order axis, ``edge_count`` (no torch)
  graph      ``Graph``: senders, receivers, which edges exist; ``build_graph``
  mask       ``CircuitMask`` and ``Scores``: a circuit's edge and head-input tensors as one object
  pruning    the emitted circuit: the part of a mask on input-to-logits paths
  task_data  ``TaskData``: clean and corrupted prompts, positions, answers
  circuit    ``Circuit``: a method's decisions, the emitted circuit, scores, metric (data only)
  patcher    the ``Patcher`` protocol methods are typed against, and ``Evaluate``
  progress   the one rule for progress bars (drawn in a terminal, never under CI)
"""
