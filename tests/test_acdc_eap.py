"""Method acdc-eap: exact ACDC that removes, untested, the edges EAP-IG rates far below the threshold."""

import math

import pytest
from factories import random_task, small_model

from acdc_engine import AcdcError, discover
from acdc_engine.core.graph import build_graph
from acdc_engine.methods.acdc_eap import attribution_skips
from acdc_engine.measure.metrics import make_metric
from acdc_engine.patching import EdgePatcher
from acdc_engine.formats.circuit_file import circuit_to_dict

THRESHOLD = 0.002


@pytest.fixture(scope="module")
def model():
    return small_model(attn_only=False, seed=3)


def test_skip_below_zero_is_exact_acdc(model):
    task = random_task()
    exact = discover(model, task, threshold=THRESHOLD, progress=False)
    seeded = discover(model, task, method="acdc-eap", threshold=THRESHOLD, skip_below=0.0, progress=False)
    assert seeded.method["edges_skipped"] == 0
    assert circuit_to_dict(seeded)["edges"] == circuit_to_dict(exact)["edges"]
    assert circuit_to_dict(seeded)["head_inputs"] == circuit_to_dict(exact)["head_inputs"]


def test_edges_below_the_bound_are_removed_untested_and_all_others_are_tested_as_acdc_tests_them(model):
    task = random_task()
    seeded = discover(model, task, method="acdc-eap", threshold=THRESHOLD, skip_below=1.0, steps=3, progress=False)
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, "resample", split_input=graph.shape.split_input)
    full = patcher.logits(graph.full_mask())
    skip, _ = attribution_skips(patcher, make_metric("kl", task, full), THRESHOLD, 1.0, steps=3)
    assert 0 < int(skip.sum()) < int(graph.edge_exists.sum())
    assert seeded.method["edges_skipped"] == int(skip.sum())
    for sender, receiver in graph.edges():
        i, j = graph.sender_index[sender], graph.receiver_index[receiver]
        if skip[i, j]:
            assert not seeded.kept.edges[i, j] and math.isnan(float(seeded.scores.edges[i, j]))


def test_skipping_tests_fewer_candidates_than_exact_acdc(model):
    task = random_task()
    exact = discover(model, task, threshold=THRESHOLD, progress=False)
    seeded = discover(model, task, method="acdc-eap", threshold=THRESHOLD, skip_below=1.0, steps=3, progress=False)
    assert seeded.run["candidates_tested"] < exact.run["candidates_tested"]
    assert seeded.run["backward_passes"] == 3


@pytest.mark.parametrize("skip_below", [-0.1, math.inf, math.nan])
def test_a_negative_or_non_finite_bound_is_refused(model, skip_below):
    with pytest.raises(AcdcError, match="skip_below"):
        discover(model, random_task(), method="acdc-eap", skip_below=skip_below, progress=False)
