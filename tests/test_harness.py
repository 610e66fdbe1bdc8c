"""The test tiers and the DDP harness of tests/conftest.py: an unmarked test cannot start a process, and a hung
distributed run fails its own test, with a message, and leaves no process behind."""

import os
import subprocess
import sys
import time

import pytest

from conftest import DDP


def test_a_test_without_the_process_marker_cannot_start_one():
    with pytest.raises(pytest.fail.Exception, match=r"starts a process but is not marked: add @pytest.mark.process"):
        subprocess.run([sys.executable, "-c", "pass"])


def _gone(pid: int) -> bool:
    """No such process, or only its exit status is left (a zombie whose new parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = f"/proc/{pid}/stat"
    return os.path.exists(stat) and open(stat).read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.process
def test_a_hung_run_fails_its_test_and_leaves_no_process(tmp_path):
    """A launcher whose child hangs (as torchrun's ranks can): past the deadline both are killed and the test fails
    naming the run."""
    pid_file = tmp_path / "child.pid"
    child = "import time; time.sleep(600)"
    launcher = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(600)"
    )
    ddp = DDP(tmp_path, deadline_s=3)
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"a sleeper did not finish within the test's 3 s \(killed\)"):
        ddp._run([sys.executable, "-c", launcher], "a sleeper")
    assert time.monotonic() - start < 60
    child_pid = int(pid_file.read_text())
    for _ in range(50):  # SIGKILL is delivered at once; the orphaned child is reaped by init shortly after
        if _gone(child_pid):
            break
        time.sleep(0.1)
    assert _gone(child_pid)
