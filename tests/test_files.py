"""Atomic writes, content hashes and the advisory lock every writer shares."""

import threading

import pytest

from mmpipe.files import atomic_path, hold_lock, sha256_file, stable_hash, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


def test_stable_hash_ignores_key_order_and_hashes_files_by_content(tmp_path):
    assert stable_hash({"a": 1, "b": [2, 3]}) == stable_hash({"b": [2, 3], "a": 1}) != stable_hash({"a": 2})
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_lock_makes_a_second_holder_wait_and_says_so(tmp_path):
    lock, order, waited = tmp_path / ".lock", [], threading.Event()

    def second():
        with hold_lock(lock, on_wait=waited.set):
            order.append("second")

    with hold_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        assert waited.wait(timeout=10)
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
