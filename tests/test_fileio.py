from pathlib import Path

import pytest

from irp.fileio import atomic_dir, atomic_write_text, existing_dir, replace_dir


def test_replace_dir_swaps_and_survives_a_crash_mid_swap(tmp_path: Path) -> None:
    final, new = tmp_path / "last", tmp_path / "last.tmp"
    final.mkdir()
    (final / "v").write_text("1")
    new.mkdir()
    (new / "v").write_text("2")
    replace_dir(new, final)
    assert (final / "v").read_text() == "2" and not new.exists() and not (tmp_path / "last.old").exists()
    # A crash after `final` was moved aside and before the new copy arrived leaves `last.old`.
    final.rename(tmp_path / "last.old")
    assert existing_dir(final) == tmp_path / "last.old"
    assert existing_dir(tmp_path / "nothing") is None


def test_atomic_write_gives_normal_permissions(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # readable by group/others under the usual umask


def test_atomic_dir_installs_only_a_completed_folder(tmp_path: Path) -> None:
    final = tmp_path / "best"
    with atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
        assert not final.exists()  # nothing is visible while the block writes
    assert (final / "v").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "v").write_text("half")
        raise RuntimeError("crash while writing")
    assert (final / "v").read_text() == "1"  # the failed write left the old folder as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # and no .tmp / .old behind
