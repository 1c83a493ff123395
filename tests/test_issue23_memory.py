"""Issue 23, probe 6: the memory check honours the job's cgroup limit (v1 and v2), not only the
machine's MemAvailable: under slurm ``--mem`` a task that cannot fit is refused by name instead of
being OOM-killed."""

import pytest

from acdc_engine.methods import arguments
from acdc_engine.patching import memory
from acdc_engine.core.errors import AcdcError
from factories import random_task, small_model

MiB = 2**20


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_job(tmp_path, limit="1073741824", usage=100 * MiB, cache=0, parent_limit="max"):
    root = tmp_path / "cgroup"
    write(tmp_path / "self-cgroup", "0::/slurm/job_7/step_0\n")
    write(root / "slurm" / "memory.max", f"{parent_limit}\n")
    write(root / "slurm" / "memory.current", f"{usage}\n")
    job = root / "slurm" / "job_7" / "step_0"
    write(job / "memory.max", f"{limit}\n")
    write(job / "memory.current", f"{usage}\n")
    write(job / "memory.stat", f"anon {usage - cache}\ninactive_file {cache}\n")
    return tmp_path / "self-cgroup", root


def test_a_v2_limit_less_its_usage_is_what_is_available(tmp_path):
    assert memory.cgroup_available(*v2_job(tmp_path)) == 1024 * MiB - 100 * MiB


def test_reclaimable_page_cache_does_not_count_as_used(tmp_path):
    assert memory.cgroup_available(*v2_job(tmp_path, cache=60 * MiB)) == 1024 * MiB - 40 * MiB


def test_the_smallest_limit_above_the_job_applies(tmp_path):
    available = memory.cgroup_available(*v2_job(tmp_path, limit="max", parent_limit=str(500 * MiB)))
    assert available == 400 * MiB


def test_a_v1_limit_is_read_from_the_memory_controller(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path / "self-cgroup", "5:cpu,cpuacct:/slurm/job_3\n4:memory:/slurm/job_3\n0::/\n")
    write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # the root: no limit
    write(root / "memory" / "memory.usage_in_bytes", "1\n")
    write(root / "memory" / "slurm" / "job_3" / "memory.limit_in_bytes", f"{256 * MiB}\n")
    write(root / "memory" / "slurm" / "job_3" / "memory.usage_in_bytes", f"{56 * MiB}\n")
    assert memory.cgroup_available(tmp_path / "self-cgroup", root) == 200 * MiB


def test_a_namespaced_cgroup_reads_the_mounts_own_files(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path / "self-cgroup", "0::/\n")
    write(root / "memory.max", f"{64 * MiB}\n")
    write(root / "memory.current", f"{4 * MiB}\n")
    assert memory.cgroup_available(tmp_path / "self-cgroup", root) == 60 * MiB


def test_no_limit_is_none(tmp_path):
    assert memory.cgroup_available(*v2_job(tmp_path, limit="max")) is None
    assert memory.cgroup_available(tmp_path / "missing", tmp_path) is None


def test_a_task_beyond_the_jobs_cgroup_limit_is_refused(tmp_path, monkeypatch):
    proc, root = v2_job(tmp_path, limit=str(101 * MiB))  # 1 MiB left for the job
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    model = small_model(attn_only=False)
    task = random_task(n_prompts=64)
    with pytest.raises(AcdcError, match=r"need about .* GiB for the patched pass .*, and cpu has 0.0 GiB available under this job.s memory limit"):
        arguments.check_task_fits(model, task)
