"""The thread policy: a given count is used, small work stays on one thread, busy CPUs are left
alone, the count is restored after a run, and results are the same bits for every count."""

import torch
from factories import random_task, small_model

from acdc_engine import discover
from acdc_engine.core import threads
from acdc_engine.core.threads import ELEMENTS_PER_THREAD, thread_count, using_threads
from acdc_engine.formats.circuit_file import circuit_to_dict


def test_a_requested_count_is_used_as_is():
    assert thread_count(10, requested=3) == 3


def test_omp_num_threads_in_the_environment_is_used_as_is(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert thread_count(100 * ELEMENTS_PER_THREAD) == 5


def test_small_work_stays_on_one_thread_without_looking_at_the_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cpus", lambda: (_ for _ in ()).throw(AssertionError("sampled")))
    assert thread_count(ELEMENTS_PER_THREAD - 1) == 1


def test_large_work_uses_the_free_cpus_only(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 3.2)
    assert thread_count(100 * ELEMENTS_PER_THREAD) == 5


def test_work_sizes_one_thread_per_slice_of_elements(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0.0)
    assert thread_count(3 * ELEMENTS_PER_THREAD) == 3


def test_every_cpu_busy_still_gives_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 5.0)
    assert thread_count(100 * ELEMENTS_PER_THREAD) == 1


def test_usable_cpus_are_at_most_the_affinity_set():
    import os

    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_the_previous_count_is_restored_after_the_block():
    before = torch.get_num_threads()
    with using_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_discover_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    discover(small_model(True), random_task(), threshold=0.01, threads=2, progress=False)
    assert torch.get_num_threads() == before


def test_a_circuit_is_the_same_bits_for_one_and_two_threads():
    model, task = small_model(False, seed=3), random_task(seed=3, positions=[4, 6])
    runs = [circuit_to_dict(discover(model, task, threshold=0.002, threads=n, progress=False)) for n in (1, 2)]
    for run in runs:
        run["run"].pop("seconds")
    assert runs[0] == runs[1]


def test_a_count_below_one_is_refused_in_one_line():
    import pytest

    from acdc_engine import AcdcError

    with pytest.raises(AcdcError, match="threads must be at least 1"):
        discover(small_model(True), random_task(), threshold=0.01, threads=0, progress=False)
