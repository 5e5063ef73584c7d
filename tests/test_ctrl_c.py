"""tinylm.ctrl_c: every Ctrl-C recorded (raised at once, or deferred), never lost; Python's handler back after."""

import os
import signal
import threading
import time

import pytest

from tinylm.ctrl_c import recorded_ctrl_c, stage_main


def press() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # let the main thread handle it


def test_deferred_presses_are_recorded_not_raised_and_python_s_handler_is_back_after():
    with recorded_ctrl_c(defer=True) as pressed:
        press()
        press()
        assert pressed == [signal.SIGINT, signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        press()


def test_an_undeferred_press_raises_and_is_recorded():
    with pytest.raises(KeyboardInterrupt), recorded_ctrl_c(defer=False) as pressed:
        press()
    assert pressed == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_deferring_block_inside_a_raising_one_records_in_both_and_gives_the_outer_handler_back():
    with recorded_ctrl_c(defer=False) as outer:
        with recorded_ctrl_c(defer=True) as inner:
            press()
        assert inner == outer == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            press()
    assert outer == [signal.SIGINT, signal.SIGINT]


def test_a_press_taken_by_another_thread_is_deferred_too():
    """With SIGINT blocked in the main thread, the OS hands it to another thread and the main thread runs the
    Python handler at once: blocking does not defer it, replacing the handler does."""
    done = threading.Event()
    threading.Thread(target=done.wait, daemon=True).start()
    with recorded_ctrl_c(defer=True) as pressed:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            press()
            assert pressed == [signal.SIGINT]  # handled while the main thread still blocks it
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    done.set()


def test_outside_the_main_thread_nothing_is_recorded_or_replaced():
    seen = []

    def run():
        with recorded_ctrl_c(defer=True) as pressed:
            seen.append((pressed, signal.getsignal(signal.SIGINT)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [([], signal.default_int_handler)]


def test_a_stage_whose_ctrl_c_was_swallowed_still_ends_in_keyboard_interrupt():
    """As when the signal lands in a weakref callback or os.fork's hooks, whose exceptions Python only prints."""
    done = []

    def swallowing_main(argv):
        try:
            press()
        except KeyboardInterrupt:
            pass
        done.append(argv)

    with pytest.raises(KeyboardInterrupt):
        stage_main(swallowing_main, ["x=1"])
    assert done == [["x=1"]]
    stage_main(done.append, ["y=2"])  # no press: main's return
    assert done[-1] == ["y=2"]
