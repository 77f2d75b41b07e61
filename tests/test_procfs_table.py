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


def test_group_members_come_from_the_tables_index_and_a_new_table_is_indexed_again(tmp_path: Path) -> None:
    """A liveness round asks the members of every running command's foreground group: they are
    looked up by (group, terminal) in an index built once per table, each re-read now."""
    proc = fake_proc(tmp_path / "proc", [300, 301], last=301)
    (proc / "302").mkdir()
    (proc / "302" / "stat").write_text("302 (sleep) S 300 300 300 34816 300 0 0\n")  # in 300's group
    fake_proc(proc, [], last=302)
    assert [m.pid for m in procfs.group_members(300, 34816, proc)] == [300, 302]
    assert procfs.group_members(300, 1, proc) == []  # the same group on another terminal: none
    (proc / "302" / "stat").write_text("302 (sleep) S 300 999 300 34816 300 0 0\n")  # moved to group 999
    assert [m.pid for m in procfs.group_members(300, 34816, proc)] == [300]  # each member read again now
    (proc / "303").mkdir()
    (proc / "303" / "stat").write_text("303 (cat) S 301 301 301 34816 301 0 0\n")
    fake_proc(proc, [], last=303)
    procfs.process_table(proc, max_age=0)  # a new table: the index follows it
    assert [m.pid for m in procfs.group_members(301, 34816, proc)] == [301, 303]
