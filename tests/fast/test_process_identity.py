"""A process's identity and whether it is gone: only what this machine can prove counts as gone."""

from __future__ import annotations

import dataclasses

from rollbook.pg.process_identity import ProcessIdentity, current_process, is_gone


def test_this_process_runs_and_one_with_its_pid_but_another_start_or_boot_is_gone():
    here = current_process()
    assert is_gone(here) is False
    assert is_gone(dataclasses.replace(here, start_ticks=(here.start_ticks or 0) + 1)) is True
    assert is_gone(dataclasses.replace(here, boot_id="an-earlier-boot")) is True


def test_a_process_this_machine_cannot_check_is_never_called_gone():
    here = current_process()
    assert is_gone(dataclasses.replace(here, host="another-host")) is None
    assert is_gone(dataclasses.replace(here, pid_namespace="pid:[1]")) is None
    assert is_gone(dataclasses.replace(here, start_ticks=None)) is None


def test_an_identity_reads_back_and_anything_else_is_not_one():
    here = current_process()
    assert ProcessIdentity.from_dict(here.to_dict()) == here
    assert ProcessIdentity.from_dict({"host": "h", "pid": "not a pid"}) is None
