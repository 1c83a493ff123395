"""Circuit discovery methods: every method registers a ``MethodSpec`` (``method.py``) in ``METHODS``.

  acdc       exact ACDC (Conmy et al. 2023), ``acdc.py``
  acdc-eap   exact ACDC that skips edges EAP-IG rates negligible, ``acdc_eap.py``
  eap        edge attribution patching (Syed et al. 2023), ``eap.py``
  eap-ig     EAP with integrated gradients on the input embeddings (Hanna et al. 2024), ``eap.py``
  eap-ig-activations  EAP-IG interpolating each sender group's activations, ``attribution.py``
  clean-corrupted     EAP with gradients at the clean and the corrupted run, ``attribution.py``
  exact      every edge patched alone, measured, ``exact.py``
  edge-pruning  hard-concrete edge masks trained by gradient (Bhaskar et al. 2024), ``edge_pruning.py``
  information-flow-routes  norm-based contributions of the clean run (Ferrando and Voita 2024),
             circuits grown greedily from the logits as MIB does, ``information_flow_routes.py``
  ugs        edge masks sampled uniformly in a window, trained by gradient (Li and Janson 2024, as MIB runs it), ``ugs.py``
  subnetwork-probing  hard-concrete masks on heads' q/k/v and MLP outputs (the ACDC paper's SP), ``subnetwork_probing.py``
  acdc-nodes exact ACDC over whole nodes (heads, MLPs, the input), latest first, ``acdc_nodes.py``
  eap-nodes, eap-ig-nodes, eap-ig-activations-nodes, exact-nodes
             node-level scores as EAP-IG's attribute_node computes them, ``node_attribution.py``
  eap-neurons, eap-ig-neurons, eap-ig-activations-neurons
             its neuron-level scores (each output dimension of each node), ``neuron_attribution.py``
"""

from __future__ import annotations

from acdc_engine.core.errors import AcdcError
from acdc_engine.methods import (
    acdc, acdc_eap, acdc_nodes, attribution, eap, edge_pruning, exact, information_flow_routes, neuron_attribution,
    node_attribution, subnetwork_probing, ugs,
)
from acdc_engine.methods.method import RUN_KEYS, CircuitSelection, MethodInput, MethodOutcome, MethodSpec

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        acdc.SPEC, acdc_eap.SPEC, *eap.SPECS, *attribution.SPECS, exact.SPEC, edge_pruning.SPEC,
        information_flow_routes.SPEC, ugs.SPEC, subnetwork_probing.SPEC, acdc_nodes.SPEC, *node_attribution.SPECS,
        *neuron_attribution.SPECS,
    )
}


def method_spec(name: str) -> MethodSpec:
    """The registry entry of method ``name``; AcdcError naming the known ones otherwise."""
    if name not in METHODS:
        raise AcdcError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "RUN_KEYS", "CircuitSelection", "MethodInput", "MethodOutcome", "MethodSpec", "method_spec"]
