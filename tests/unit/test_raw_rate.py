"""bench/raw_rate.py's cleanup: the threads that use the connections end before the connections
are used to delete the queue and closed (pika connections are not thread-safe)."""

from __future__ import annotations

import threading
import time

from bench import raw_rate


def test_stop_ends_every_running_loop_before_cleanup() -> None:
    done, errors = threading.Event(), list[BaseException]()

    def client() -> None:  # runs until an error is recorded, as the bench's loops do
        while not errors:
            time.sleep(0.001)

    # Given such a loop still running because the caller left early, and a thread that never
    # started
    loop = threading.Thread(target=client)
    loop.start()
    never_started = threading.Thread(target=lambda: None)
    # When the bench stops its threads
    raw_rate.stop(done, errors, [loop, never_started])
    # Then the loop has ended, and the event every server loop waits on is set
    assert not loop.is_alive() and done.is_set()
    assert len(errors) == 1  # the marker that ended it


def test_stop_after_a_normal_end_records_nothing() -> None:
    done, errors = threading.Event(), list[BaseException]()
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    raw_rate.stop(done, errors, [finished])
    assert errors == [] and done.is_set()
