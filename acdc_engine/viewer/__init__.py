"""The interactive viewer: one self-contained HTML file per circuit or diff (no network).

``write_circuit_html(circuit, path)`` (written as ``circuit.html`` next to every ``circuit.json``),
``write_diff_html(comparison, path)`` (``acdc-compare``), and ``acdc-view FILE`` for any circuit file;
``notebook_html(circuit)`` shows the page inline in Jupyter (``viewer.notebook`` registers it),
``attention_block(patterns, tokens)`` the heads' attention patterns a page shows.
What is drawn: ``acdc_engine.viewer.data`` (node order: ``layout``); the page and its script:
``page`` and ``assets``.
"""

from acdc_engine.viewer.data import attention_block
from acdc_engine.viewer.page import circuit_html, diff_html, notebook_html, write_circuit_html, write_diff_html

__all__ = ["attention_block", "circuit_html", "diff_html", "notebook_html", "write_circuit_html", "write_diff_html"]
