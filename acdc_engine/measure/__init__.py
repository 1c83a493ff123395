"""Measuring circuits: the metrics (``metrics``), the one path from a circuit to its metric value
(``measurement.Measurement``), and a cache of values shared by runs of one setting (``metric_cache``)."""
