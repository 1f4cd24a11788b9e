"""Atomic replacement: the old file or the new one, never part of one, and no temp files left."""

from __future__ import annotations

import pytest

from ssl_lightning.atomic_files import replaced_atomically, write_text_atomically


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    write_text_atomically(target, "old")
    with pytest.raises(OSError), replaced_atomically(target) as tmp:
        tmp.write_text("half of the new")
        raise OSError("No space left on device")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_finished_write_replaces_the_file_in_a_new_folder(tmp_path):
    target = tmp_path / "run" / "split.npz"
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert list(target.parent.iterdir()) == [target]
