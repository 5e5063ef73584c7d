"""Ctrl-C (SIGINT) that library code cannot lose.

    with recorded_ctrl_c(defer) as pressed: ...

Within, every Ctrl-C is appended to `pressed`. defer=False: it also raises KeyboardInterrupt at once, as Python's
default handler does, so the caller can raise it again if something on the way swallowed it (an exception in
os.fork's after-fork hooks is only printed). defer=True: nothing is raised; the caller raises it where that is
safe (between items, never inside a lock). Only in the main thread while Python's default handler is installed;
elsewhere the signal is not ours to handle and `pressed` stays empty. The default handler is restored on exit.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def recorded_ctrl_c(defer: bool) -> Iterator[list]:
    pressed: list = []
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield pressed
        return

    def handler(signum, frame):
        pressed.append(signum)
        if not defer:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
