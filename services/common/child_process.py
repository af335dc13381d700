"""Child processes that do not outlive their parent: Linux's parent-death
signal (prctl(2) ``PR_SET_PDEATHSIG``), set in the child between fork and exec.

The kernel sends the signal when the *thread* that forked the child ends, not
when the parent process does: a child started from a short-lived thread would
be told to die as soon as that thread returns. So start such children from a
thread that lives as long as the process (``esign up`` starts every child from
its main thread, and says so if it is not).

The setting survives ``execve`` (except of a set-user-ID program, which none of
ours is). A parent that dies between ``fork`` and the ``prctl`` call would be
missed, so the child also checks that its parent is still the one that forked it.
"""
from __future__ import annotations

import ctypes
import os
import signal
from typing import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``signum``
    when the thread that started it ends (its process killed outright included)."""
    parent = os.getpid()
    prctl = _prctl()  # loaded here: between fork and exec a child should take no lock (the loader's)

    def preexec() -> None:  # pragma: no cover - runs in the child, between fork and exec
        _arm(prctl, parent, signum)

    return preexec


def die_with(parent: int, signum: int = signal.SIGKILL) -> None:
    """The same, from inside a child already running (a pool's worker process, in its
    initializer): ``signum`` when the thread of ``parent`` that started it ends."""
    _arm(_prctl(), parent, signum)


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None  # not Linux: the parent's own stop is all there is


def _arm(prctl: Callable[..., int] | None, parent: int, signum: int) -> None:
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the prctl: nobody will send the signal
        os.kill(os.getpid(), signal.SIGKILL)  # not signum: a handler inherited from the parent may catch it
