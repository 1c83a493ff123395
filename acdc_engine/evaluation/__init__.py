"""Evaluating and comparing circuits.

  sweep              ACDC threshold sweeps that compute each shared circuit once
  roc                TPR/FPR points and AUC against a ground-truth circuit (edge and node level)
  faithfulness       normalised faithfulness of any circuit, MIB's CPR and CMD
  testbed_truth      ground truths of the trained testbeds, read off their attention patterns
  method_comparison  ACDC, EAP and EAP-IG side by side on one model and task (ROC, faithfulness curves)
  plots              matplotlib figures of ROC and faithfulness curves (PNG and SVG)
  tables             Markdown and CSV text of result rows
  cli                the ``acdc-evaluate`` command

Circuits are measured by ``acdc_engine.measure.measurement`` (the path ``discover`` measures with), and a
sweep shares evaluations through ``acdc_engine.measure.metric_cache``.
"""
