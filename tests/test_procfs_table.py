"""The shared /proc table: one scan serves every caller for a while, and is taken again as soon
as a new process may exist (the kernel's last pid moved) — on a fake /proc tree we control."""

from __future__ import annotations

import os
import time
from pathlib import Path

from orchestrator.drivers import procfs


def fake_proc(root: Path, pids: list[int], last: int) -> Path:
    root.mkdir(exist_ok=True)
    (root / "loadavg").write_text(f"0.00 0.00 0.00 1/100 {last}\n")
    for pid in pids:
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(f"{pid} (sh) S 1 {pid} {pid} 34816 {pid} 0 0\n")
    return root


def test_the_table_is_kept_while_no_process_was_created(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", [100, 101], last=101)
    assert [p.pid for p in procfs.process_table(proc, max_age=0.01)] == [100, 101]
    fake_proc(proc, [102], last=101)  # a pid dir the kernel could not have made: the table stands
    time.sleep(0.02)  # past max_age
    assert sorted(p.pid for p in procfs.process_table(proc, max_age=0.01)) == [100, 101]
    fake_proc(proc, [103], last=103)  # a new process: scanned again
    assert sorted(p.pid for p in procfs.process_table(proc, max_age=0.01)) == [100, 101, 102, 103]


def test_max_age_zero_always_scans(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", [200], last=200)
    assert [p.pid for p in procfs.process_table(proc, max_age=0)] == [200]
    fake_proc(proc, [201], last=200)
    assert sorted(p.pid for p in procfs.process_table(proc, max_age=0)) == [200, 201]


def test_the_real_proc_lists_this_process() -> None:
    assert os.getpid() in {p.pid for p in procfs.process_table(max_age=0)}
    assert procfs.last_pid() is not None
