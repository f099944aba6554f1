"""Thread defaults count physical cores, not SMT siblings."""

from __future__ import annotations

import os

import pytest

from vgg_deploy.benchmark.machine import physical_cores


def _topology(root, cpu, package, core):
    folder = root / f"cpu{cpu}" / "topology"
    folder.mkdir(parents=True)
    (folder / "physical_package_id").write_text(f"{package}\n")
    (folder / "core_id").write_text(f"{core}\n")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_smt_siblings_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    for cpu, core in zip(range(4), (0, 1, 0, 1)):  # cpu2, cpu3 are the siblings of cpu0, cpu1
        _topology(tmp_path, cpu, 0, core)
    assert physical_cores(tmp_path) == 2
    _topology(tmp_path, 4, 1, 0)  # a second socket's core 0 is another core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert physical_cores(tmp_path) == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_without_topology_each_allowed_cpu_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5})
    assert physical_cores(tmp_path) == 2


def test_int8_instructions_are_read_from_the_cpu_flags(tmp_path):
    from vgg_deploy.benchmark.machine import int8_instructions
    from vgg_deploy.benchmark.report import _int8_isa

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    assert int8_instructions(cpuinfo) == ["avx512_vnni", "avx512f", "avx2"]
    assert "no VNNI" not in _int8_isa(int8_instructions(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert int8_instructions(cpuinfo) == ["avx2"] and "no VNNI" in _int8_isa(["avx2"])
    assert int8_instructions(tmp_path / "missing") is None and _int8_isa(None) == ""
