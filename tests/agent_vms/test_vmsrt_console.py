"""The console log's copy-truncate rotation and its tail, on real files."""

from __future__ import annotations

from otherix.agent.vms import console


def test_a_log_under_the_cap_is_left_alone(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"x" * 100)
    assert console.rotate(log, cap=100) is False
    assert log.read_bytes() == b"x" * 100
    assert not console.rotated(log).exists()


def test_a_missing_log_is_nothing_to_rotate(tmp_path):
    assert console.rotate(tmp_path / "console.log", cap=1) is False
    assert console.tail(tmp_path / "console.log") == ()


def test_a_log_over_the_cap_is_copied_to_dot_1_keeping_its_last_cap_bytes(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"old line\n" + b"a" * 50 + b"\nlast\n")
    assert console.rotate(log, cap=20) is True
    assert log.read_bytes() == b""
    kept = console.rotated(log).read_bytes()
    assert len(kept) == 20
    assert kept.endswith(b"\nlast\n")


def test_appends_after_a_rotation_land_at_the_start_of_the_log(tmp_path):
    log = tmp_path / "console.log"
    with log.open("ab", buffering=0) as writer:  # as QEMU's append=on chardev does
        writer.write(b"boot\n" * 10)
        console.rotate(log, cap=10)
        writer.write(b"after\n")
    assert log.read_bytes() == b"after\n"


def test_tail_reads_across_the_rotated_file(tmp_path):
    log = tmp_path / "console.log"
    console.rotated(log).write_bytes(b"one\r\ntwo\n")
    log.write_bytes(b"three\nfour\xff\n")
    assert console.tail(log, 3) == ("two", "three", "four\ufffd")
    assert console.tail(log, 10) == ("one", "two", "three", "four\ufffd")
    assert console.tail(log, 0) == ()


def test_clear_forgets_both_files(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("a\n")
    console.rotated(log).write_text("b\n")
    console.clear(log)
    assert console.tail(log) == ()
