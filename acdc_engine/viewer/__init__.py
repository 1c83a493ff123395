"""The interactive circuit viewer: one self-contained HTML file per circuit or diff (no network).

``write_circuit_html(circuit, path)`` (written as ``circuit.html`` next to every ``circuit.json``),
``write_diff_html(comparison, path)`` (``acdc-compare``), and ``acdc-view FILE`` for any circuit file.
What is drawn: ``acdc_engine.viewer.data``; the page and its script: ``page`` and ``assets``.
"""

from acdc_engine.viewer.page import circuit_html, diff_html, write_circuit_html, write_diff_html

__all__ = ["circuit_html", "diff_html", "write_circuit_html", "write_diff_html"]
