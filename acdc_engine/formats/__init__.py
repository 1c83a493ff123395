"""File formats: what the engine reads and writes, and nothing it computes.

  atomic_files  crash-safe writes (a file is replaced whole or not at all)
  strict_json   JSON that refuses what a data file must not hold
  weights       weight files read without running code from them
  circuit_file  this engine's circuit file (``save_circuit``, ``circuit_from_dict``)
  circuit_header  the few fields a table of runs needs, read without torch
  eap_ig        EAP-IG / MIB graph files, JSON and ``.pt``
  reader        ``load_circuit``: any of those files
  drawing       Graphviz drawings of a circuit; diff_drawing: of two circuits' overlap
  tables        Markdown and CSV text of result rows
  mib           MIB circuit-track submission folders
"""
