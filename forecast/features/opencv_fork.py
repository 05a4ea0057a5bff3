"""OpenCV's thread pool across ``fork()``: brought down before a fork, so a forked child starts with none.

A forked child inherits the memory of OpenCV's pthreads pool but none of its threads. After the parent
has warped with the pool (a few thousand 96 px warps are enough: building samples in the main
process, calibration after training), the child's first ``cv2.setNumThreads`` (the loader workers'
init) waits forever in ``pthread_cond_destroy`` for threads that do not exist in it. Seen as a
full-config training whose two forked loader workers produced no batch in 120 s, and in
``tests/features/test_opencv_fork.py``.

``install()`` registers ``os.register_at_fork`` hooks: before a fork the parent sets OpenCV to one
thread (which shuts its pool down, in the process that has the threads), and after the fork it sets
its own thread count back (the pool restarts on its next parallel call); the child keeps one thread,
which is what a loader worker wants. The training data module installs them (it makes the loaders);
the raster code and the car's runtime do not, so a program embedding the runtime keeps its forks as
they were. ``subprocess`` runs the hooks only with a ``preexec_fn``, which this project does not use.
OpenCV shuts its pool down only when no other thread is inside a parallel OpenCV call; a fork during
one leaves the pool's state in the child, which then stays at one thread and never touches it.
"""

from __future__ import annotations

import os

import cv2

_saved: list[int] = []
_installed = False


def _before_fork() -> None:
    _saved.append(cv2.getNumThreads())
    cv2.setNumThreads(1)


def _after_fork_in_parent() -> None:
    if _saved:
        cv2.setNumThreads(_saved.pop())


def _after_fork_in_child() -> None:
    _saved.clear()


def install() -> None:
    """Register the fork hooks once per process (a no-op where the OS has no fork)."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
    _installed = True
