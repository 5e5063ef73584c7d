"""Ctrl-C (SIGINT) that is never lost, and deferred where stopping at once is not safe.

    with recorded_ctrl_c(defer) as pressed: ...

Within, every Ctrl-C is appended to `pressed` (and to the lists of the blocks around it). defer=False: it also
raises KeyboardInterrupt at once, as Python's default handler does, and the caller raises it again after the
block if something on the way swallowed it: Python only prints ("Exception ignored in ...") an exception raised
in a weakref callback, a __del__ method or os.fork's after-fork hooks, and goes on (`stage_main` does this for
every pipeline stage). defer=True: nothing is raised; the caller raises it where stopping is safe (between
items, never inside a lock or while forking).

`signal.signal` runs a pending handler before it replaces it, so a press can be recorded as the block exits:
check `pressed` after the block as well. Blocking the signal instead (pthread_sigmask) would not do: it masks
the calling thread only, and any other thread (tqdm's monitor, a pool's helpers) takes the signal for the main
thread to handle at once. Forked children inherit the handler until they set their own. Only in the main thread
while Python's default handler or an enclosing block's is installed; elsewhere the signal is not ours to
handle and `pressed` stays empty. On exit the handler that was installed before is back.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


class _Record:
    """The SIGINT handler of one block: records the press here and in every enclosing block."""

    def __init__(self, defer: bool, outer: "_Record | None"):
        self.pressed: list = []
        self.defer, self.outer = defer, outer

    def __call__(self, signum, frame) -> None:
        block = self
        while block is not None:
            block.pressed.append(signum)
            block = block.outer
        if not self.defer:
            raise KeyboardInterrupt


@contextlib.contextmanager
def recorded_ctrl_c(defer: bool) -> Iterator[list]:
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or \
            not (previous is signal.default_int_handler or isinstance(previous, _Record)):
        yield []
        return
    record = _Record(defer, previous if isinstance(previous, _Record) else None)
    signal.signal(signal.SIGINT, record)
    try:
        yield record.pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def stage_main(main: Callable[[list[str]], None], argv: list[str]) -> None:
    """main(argv), ending in KeyboardInterrupt if Ctrl-C was pressed, even where Python swallowed it."""
    with recorded_ctrl_c(defer=False) as pressed:
        main(argv)
    if pressed:
        raise KeyboardInterrupt
