"""A process that warped with OpenCV's thread pool can fork loader workers that use OpenCV
(forecast.features.opencv_fork): without the fork hooks the child hangs in its first cv2.setNumThreads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    import cv2, numpy as np
    if sys.argv[1] == "hooked":
        from forecast.features import opencv_fork
        opencv_fork.install()  # as forecast.training.datamodule does

    def child(q):
        cv2.setNumThreads(1)  # what a loader worker's init does
        cv2.warpAffine(np.zeros((96, 96, 4), np.uint8), np.eye(2, 3), (96, 96))
        q.put(cv2.getNumThreads())

    if __name__ == "__main__":
        cv2.setNumThreads(2)
        img = np.random.default_rng(0).integers(0, 255, (300, 300, 4), dtype=np.uint8)
        m = np.array([[0.9, 0.1, 3.0], [-0.1, 0.9, 2.0]])
        for _ in range(2000):  # small warps, as building samples makes them: OpenCV's pool is busy
            cv2.warpAffine(img, m, (96, 96))
        time.sleep(0.1)  # the pool's thread asleep on its condition variable, not still spinning: the hang's state
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        p.join(float(sys.argv[2]))
        if p.is_alive():
            p.kill()
            print("hung")
        else:
            print("ok", p.exitcode, q.get(timeout=5), cv2.getNumThreads())
""")


def _run(tmp_path, mode: str, wait_s: float) -> str:
    script = tmp_path / "fork_after_warps.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), mode, str(wait_s)], capture_output=True, text=True,
                          timeout=wait_s + 60, check=True).stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="fork is Linux's start method here")
def test_a_worker_forked_after_opencv_warps_does_not_hang(tmp_path):
    # with the hooks: the child finishes, with one OpenCV thread, and the parent has its two back
    assert _run(tmp_path, "hooked", 60.0) == "ok 0 1 2"
    control = _run(tmp_path, "plain", 10.0)
    if control != "hung":  # this OpenCV build or machine does not show the problem: the hooks proved nothing here
        pytest.skip(f"without the hooks the child did not hang here ({control!r})")


def test_the_training_data_module_installs_the_hooks():
    from forecast.features import opencv_fork
    from forecast.training import datamodule  # noqa: F401 - importing it installs them

    assert opencv_fork._installed
