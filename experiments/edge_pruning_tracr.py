"""edge-pruning on a tracr program against the ACDC paper's circuit (zero ablation, l2, split input).

    PYTHONPATH=. python experiments/edge_pruning_tracr.py tracr-proportion target_sparsity=0.5 steps=200 mask_seed=0

Prints the edges found against the paper's (precision, recall, extra, missed) and the head inputs.
Further arguments are edge-pruning's parameters, key=value (values as Python literals).
"""

import ast
import sys
import time

from acdc_engine import discover
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tracr import compiled_program


def head_inputs(circuit):
    g = circuit.graph
    return {n for n in g.head_input_names() if circuit.in_graph.head_inputs[g.parse_head_input(n)]}


def main(name: str, *pairs: str) -> None:
    params = {key: ast.literal_eval(value) for key, value in (pair.split("=", 1) for pair in pairs)}
    paper = reference_circuit(f"{name}-acdc-paper")
    start = time.perf_counter()
    found = discover(compiled_program(name).model(), name, method="edge-pruning", ablation="zero", split_input=True, progress=False, **params)
    f, p = set(found.edges()), set(paper.edges())
    common = len(f & p)
    print(
        f"{name} {params}: {time.perf_counter() - start:.1f}s, graph {found.graph.n_edges} edges; found {len(f)}, paper {len(p)}, "
        f"common {common}; precision {common / max(1, len(f)):.3f} recall {common / len(p):.3f}; "
        f"l2 circuit {found.metric['circuit']:.3g} (empty {found.metric['empty']:.3g}); "
        f"expected sparsity {found.run['final_expected_sparsity']:.3f}"
    )
    print("  extra: ", sorted(f - p))
    print("  missed:", sorted(p - f))
    hf, hp = head_inputs(found), head_inputs(paper)
    print(f"  head inputs: found {len(hf)}, paper {len(hp)}, common {len(hf & hp)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
