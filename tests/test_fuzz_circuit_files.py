"""Fuzzing the circuit-file loader (hypothesis, derandomized: the same cases every run).

Whatever bytes a circuit file holds, ``load_circuit`` returns a Circuit or raises AcdcError, nothing
else; whatever it accepts writes back and reads again to the same file; valid circuits round-trip
exactly (dict equality after save -> load -> save, and the same bytes).
"""

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine import AcdcError, load_circuit
from acdc_engine.core.circuit import Circuit, on_input_to_logits_paths
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.formats.circuit_file import KNOWN_FIELDS
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit

FUZZ = settings(
    derandomize=True, database=None, deadline=None, max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
huge_integers = st.integers(10**300, 10**400) | st.integers(-(10**400), -(10**300))  # beyond float range
json_scalars = st.none() | st.booleans() | st.integers() | huge_integers | finite_floats | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=3)


@st.composite
def circuits(draw):
    """A valid circuit: random graph shape, decisions, scores, metrics and descriptive fields.

    Decisions and scores come from a drawn seed (cheap to generate), with a few scores replaced
    by floats hypothesis picks (extremes, subnormals, -0.0).
    """
    shape = GraphShape(
        n_layers=draw(st.integers(1, 3)), n_heads=draw(st.integers(1, 3)),
        has_mlp=draw(st.booleans()), split_input=draw(st.booleans()),
    )
    graph = build_graph(shape, split_input=shape.split_input)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))

    def decisions(n):
        return torch.rand(n, generator=g) < density

    def scores(n):
        values = torch.randn(n, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-30, 30, (n,), generator=g)
        values[torch.rand(n, generator=g) < 0.3] = math.nan  # not tested
        for index, value in draw(st.lists(st.tuples(st.integers(0, n - 1), finite_floats), max_size=3)):
            values[index] = value
        return values

    head_shape = (shape.n_layers, shape.n_heads, 3)
    edge_kept = torch.zeros_like(graph.edge_exists)
    edge_kept[graph.edge_exists] = decisions(graph.n_edges)
    edge_scores = torch.full(graph.edge_exists.shape, math.nan, dtype=torch.float64)
    edge_scores[graph.edge_exists] = scores(graph.n_edges)
    head_kept = decisions(math.prod(head_shape)).reshape(head_shape)
    in_graph = on_input_to_logits_paths(graph, CircuitMask(edge_kept, head_kept))
    model = {
        **draw(json_objects),
        "name": draw(st.text(max_size=10)), "n_layers": shape.n_layers, "n_heads": shape.n_heads,
        "attn_only": not shape.has_mlp, "split_input": shape.split_input,
    }
    metric = {"name": draw(st.sampled_from(["kl", "logit_diff", "prob_diff", "nll"]))}
    metric.update({key: draw(st.none() | finite_floats) for key in ("full", "circuit", "empty")})
    return Circuit(
        graph=graph, kept=CircuitMask(edge_kept, head_kept), in_graph=in_graph,
        scores=Scores(edge_scores, scores(math.prod(head_shape)).reshape(head_shape)),
        metric=metric, threshold=draw(st.none() | finite_floats), model=model,
        task=draw(json_objects), method=draw(json_objects), run=draw(json_objects),
        extra=draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in KNOWN_FIELDS), json_values, max_size=3)),
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-circuits")


def load_or_reject(path):
    """load_circuit(path), or None if it raised AcdcError; any other exception fails the test."""
    try:
        return load_circuit(path)
    except AcdcError as error:
        assert str(error), "an AcdcError must say what is wrong"
        return None


def assert_writes_back_exactly(circuit, scratch):
    """Whatever the loader accepted writes out and reads back to the same dict and the same bytes."""
    first = save_circuit(circuit, scratch / "first.json")
    again = load_circuit(first)
    assert circuit_to_dict(again) == circuit_to_dict(circuit)
    assert save_circuit(again, scratch / "second.json").read_bytes() == first.read_bytes()


# --- valid files round-trip ------------------------------------------------------------------


@FUZZ
@given(circuit=circuits())
def test_valid_circuit_round_trips_exactly(scratch, circuit):
    assert_writes_back_exactly(circuit, scratch)


@FUZZ
@given(circuit=circuits(), keep_nodes=st.booleans())
def test_mib_style_file_loads_and_then_round_trips(scratch, circuit, keep_nodes):
    data = circuit_to_dict(circuit)
    mib = {"model": data["model"], "edges": {name: {"in_graph": e["in_graph"]} for name, e in data["edges"].items()}}
    if keep_nodes:
        mib["nodes"] = data["nodes"]
    path = scratch / "mib.json"
    path.write_text(json.dumps(mib))
    loaded = load_circuit(path)
    assert loaded.edges() == circuit.edges()
    assert_writes_back_exactly(loaded, scratch)


# --- anything else is accepted and round-trips, or rejected with AcdcError --------------------


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_raise_only_acdc_error(scratch, raw):
    path = scratch / "bytes.json"
    path.write_bytes(raw)
    assert load_or_reject(path) is None


@FUZZ
@given(value=json_values | st.dictionaries(st.sampled_from(sorted(KNOWN_FIELDS)) | st.text(max_size=4), json_values, max_size=8))
def test_random_json_value_raises_only_acdc_error(scratch, value):
    path = scratch / "value.json"
    path.write_text(json.dumps(value))
    assert load_or_reject(path) is None


class Raw:
    """Text put into the serialized file as it is: NaN, 1e999, a 5000-digit integer."""

    def __init__(self, text):
        self.text = text


def to_text(value):
    """JSON text of ``value``, where an object may be a list of (key, value) pairs (keys may repeat)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_text(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return to_text(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ", ".join(to_text(v) for v in value) + "]"
    return json.dumps(value)


class Pairs(list):
    """A JSON object as (key, value) pairs, so that a key can appear twice."""


def paths(value, prefix=()):
    """Every path (tuple of keys / indices) to a value inside ``value``, the root included."""
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from paths(child, prefix + (key,))


def parent_and_key(data, path):
    target = data
    for key in path[:-1]:
        target = target[key]
    return target, path[-1]


odd_numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "7" * 5000, "1" + "0" * 400, "-0", "1.0"])


@st.composite
def mutated_files(draw):
    """A valid circuit file after one to three mutations; returns its bytes."""
    data = circuit_to_dict(draw(circuits()))
    for _ in range(draw(st.integers(1, 3))):
        all_paths = [p for p in paths(data) if p]
        if not all_paths:
            break
        path = draw(st.sampled_from(all_paths))
        parent, key = parent_and_key(data, path)
        kind = draw(st.sampled_from(["drop", "rename", "retype", "flip", "odd-number", "duplicate"]))
        if kind == "drop":
            del parent[key]
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(key)
        elif kind == "retype":
            parent[key] = draw(json_values)
        elif kind == "flip":  # a bool becomes the string a careless tool would write, and so on
            value = parent[key]
            parent[key] = str(value).lower() if isinstance(value, bool) else [value] if value is not None else False
        elif kind == "odd-number":
            parent[key] = Raw(draw(odd_numbers))
        elif kind == "duplicate" and isinstance(parent, dict):  # the last mutation: pairs are no dict
            pairs = Pairs(parent.items())
            pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_values)))
            if len(path) == 1:
                data = pairs
            else:
                grand, grand_key = parent_and_key(data, path[:-1])
                grand[grand_key] = pairs
            break
    raw = to_text(data).encode()
    cut = draw(st.sampled_from(["none"] * 4 + ["truncate", "bytes"]))  # mostly: reach the field checks
    if cut == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif cut == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at + 1 :]
    return raw


@FUZZ
@given(raw=mutated_files())
def test_mutated_circuit_file_is_rejected_with_acdc_error_or_round_trips(scratch, raw):
    path = scratch / "mutated.json"
    path.write_bytes(raw)
    loaded = load_or_reject(path)
    if loaded is not None:
        assert_writes_back_exactly(loaded, scratch)


@st.composite
def files_with_one_field_replaced(draw):
    """A valid circuit file with one value, anywhere in it, replaced by a random JSON value or an
    odd number (NaN, 1e999, a 5000-digit integer); returns its bytes."""
    data = circuit_to_dict(draw(circuits()))
    path = draw(st.sampled_from([p for p in paths(data) if p]))
    parent, key = parent_and_key(data, path)
    parent[key] = draw(json_values | odd_numbers.map(Raw))
    return to_text(data).encode()


@FUZZ
@given(raw=files_with_one_field_replaced())
def test_any_field_replaced_by_any_value_is_rejected_with_acdc_error_or_round_trips(scratch, raw):
    path = scratch / "replaced.json"
    path.write_bytes(raw)
    loaded = load_or_reject(path)
    if loaded is not None:
        assert_writes_back_exactly(loaded, scratch)
