"""Evaluating and comparing circuits.

  metric_cache   MetricCache: metric values keyed by the exact circuit, shared by runs of one setting
  sweep          ACDC threshold sweeps that compute each shared circuit once
  roc            TPR/FPR points and AUC against a ground-truth circuit (edge and node level)
  faithfulness   the metric of any circuit, normalised faithfulness, MIB's CPR and CMD
  testbed_truth  ground truths of the trained testbeds, read off their attention patterns
  methods        ACDC, EAP and EAP-IG side by side on one model and task (ROC, faithfulness curves)
  plots          matplotlib figures of ROC and faithfulness curves (PNG and SVG)
  cli            the ``acdc-evaluate`` command
"""
