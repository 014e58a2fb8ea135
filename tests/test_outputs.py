"""OutputFolder: numbering, atomic writes, concurrency, failure cleanup, history."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from studio.outputs.metadata import read_metadata
from studio.outputs.folder import OutputFolder

DAY = datetime(2024, 5, 17, 12, 0, 0)


def image(color: tuple[int, int, int] = (200, 100, 50)) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_nothing_created_until_first_save(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    folder = OutputFolder(root)
    assert folder.root == root
    assert not root.exists()
    assert folder.history() == []
    assert not root.exists()


def test_save_names_numbers_and_metadata(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out", clock=lambda: DAY)
    first = folder.save(image(), "a cat\nSteps: 2", {"seed": 7, "p": "🐱"}, seed=7)
    second = folder.save(image(), "a dog\nSteps: 2", {"seed": 8}, seed=8)

    day = tmp_path / "out" / "2024-05-17"
    assert first == day / "00001-7.png"
    assert second == day / "00002-8.png"
    assert read_metadata(first) == ("a cat\nSteps: 2", {"seed": 7, "p": "🐱"})
    with Image.open(second) as saved:
        assert saved.format == "PNG"
        assert saved.size == (16, 16)
        assert saved.getpixel((0, 0)) == (200, 100, 50)
    assert all_files(tmp_path) == [first, second]  # no temp files left behind


def test_default_clock_uses_today(tmp_path: Path) -> None:
    before = datetime.now().strftime("%Y-%m-%d")
    path = OutputFolder(tmp_path).save(image(), "p", {}, seed=1)
    after = datetime.now().strftime("%Y-%m-%d")
    assert path.parent.name in {before, after}
    assert path.name == "00001-1.png"


def test_numbering_continues_after_highest_existing(tmp_path: Path) -> None:
    day = tmp_path / "2024-05-17"
    day.mkdir()
    (day / "00003-5.png").write_bytes(b"x")
    (day / "00041-9.png").write_bytes(b"x")
    (day / "notes.txt").write_bytes(b"x")
    (day / ".99999-1.png").write_bytes(b"x")  # hidden files don't count
    path = OutputFolder(tmp_path, clock=lambda: DAY).save(image(), "p", {}, seed=12)
    assert path.name == "00042-12.png"
    assert (day / "00041-9.png").read_bytes() == b"x"


def test_new_day_starts_at_one(tmp_path: Path) -> None:
    clock = [DAY]
    folder = OutputFolder(tmp_path, clock=lambda: clock[0])
    folder.save(image(), "p", {}, seed=1)
    folder.save(image(), "p", {}, seed=1)
    clock[0] = datetime(2024, 5, 18, 0, 0, 1)
    assert folder.save(image(), "p", {}, seed=1) == tmp_path / "2024-05-18" / "00001-1.png"


def test_never_overwrites_existing_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the chosen name appears anyway (another process), the next number is used."""
    folder = OutputFolder(tmp_path, clock=lambda: DAY)
    day = tmp_path / "2024-05-17"
    day.mkdir()
    (day / "00001-4.png").write_bytes(b"keep me")
    monkeypatch.setattr(OutputFolder, "_next_number", staticmethod(lambda _day: 1))
    path = folder.save(image(), "p", {}, seed=4)
    assert path.name == "00002-4.png"
    assert (day / "00001-4.png").read_bytes() == b"keep me"


def test_concurrent_saves_get_distinct_files(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path, clock=lambda: DAY)
    start = threading.Barrier(8)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            start.wait()
            results.append(folder.save(image((i * 30, 0, 0)), f"p{i}", {"i": i}, seed=i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(set(results)) == 8
    numbers = sorted(int(p.name.split("-")[0]) for p in results)
    assert numbers == list(range(1, 9))
    assert all_files(tmp_path) == sorted(results)
    for path in results:  # each file holds the image its own thread saved
        _, data = read_metadata(path)
        assert data is not None
        assert path.name.endswith(f"-{data['i']}.png")


def test_two_objects_same_root_share_numbering(tmp_path: Path) -> None:
    a = OutputFolder(tmp_path, clock=lambda: DAY)
    b = OutputFolder(tmp_path / ".." / tmp_path.name, clock=lambda: DAY)
    paths = {a.save(image(), "p", {}, seed=1), b.save(image(), "p", {}, seed=1)}
    assert {p.name for p in paths} == {"00001-1.png", "00002-1.png"}


class Exploding:
    """Stands in for an image whose encoding fails half-way through writing."""

    def save(self, fp, format=None, **kwargs) -> None:  # noqa: A002 - PIL's name
        fp.write(b"\x89PNG partial data")
        raise OSError("disk full")


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path, clock=lambda: DAY)
    with pytest.raises(OSError, match="disk full"):
        folder.save(Exploding(), "p", {}, seed=1)  # type: ignore[arg-type]
    assert all_files(tmp_path) == []
    assert folder.history() == []


def test_failure_from_pil_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = OutputFolder(tmp_path, clock=lambda: DAY)
    folder.save(image(), "p", {}, seed=1)

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        folder.save(image(), "p", {}, seed=2)
    monkeypatch.undo()

    assert [p.name for p in all_files(tmp_path)] == ["00001-1.png"]
    assert folder.save(image(), "p", {}, seed=3).name == "00002-3.png"


def test_failure_at_rename_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.outputs.folder as outputs

    def failing_replace(src, dst):
        raise PermissionError("locked")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        OutputFolder(tmp_path, clock=lambda: DAY).save(image(), "p", {}, seed=1)
    assert all_files(tmp_path) == []


def test_history_newest_first_and_skips_temp_files(tmp_path: Path) -> None:
    clock = [datetime(2024, 5, 16)]
    folder = OutputFolder(tmp_path, clock=lambda: clock[0])
    old = [folder.save(image(), "p", {}, seed=s) for s in (1, 2)]
    clock[0] = DAY
    new = [folder.save(image(), "p", {}, seed=s) for s in (3, 4, 5)]

    day = tmp_path / "2024-05-17"
    (day / ".deadbeef.tmp").write_bytes(b"in progress")
    (day / ".hidden.png").write_bytes(b"x")
    (day / "notes.txt").write_bytes(b"x")
    (tmp_path / "not-a-day").mkdir()
    (tmp_path / "not-a-day" / "00099-1.png").write_bytes(b"x")

    expected = list(reversed(old + new))
    assert folder.history() == expected[:]
    assert folder.history(limit=2) == expected[:2]
    assert folder.history(limit=4) == expected[:4]
    assert folder.history(limit=0) == []


def test_history_orders_by_number_not_name_length(tmp_path: Path) -> None:
    day = tmp_path / "2024-05-17"
    day.mkdir()
    for name in ("00009-1.png", "00010-1.png", "100000-1.png"):
        (day / name).write_bytes(b"x")
    assert [p.name for p in OutputFolder(tmp_path).history()] == [
        "100000-1.png", "00010-1.png", "00009-1.png"]
