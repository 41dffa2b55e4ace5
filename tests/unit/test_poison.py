"""The coordinator's own poison detection (coordinator/poison.py): a body in hand when the process
died is suspected once per death and refused at CRASHES; a body handled to the end never is."""

from __future__ import annotations

from pathlib import Path

from coordinator.poison import CRASHES, PoisonJournal, digest


def test_a_body_in_hand_at_three_deaths_is_refused(tmp_path: Path) -> None:
    key = digest(b"an update that kills the coordinator")
    for death in range(CRASHES):
        journal = PoisonJournal(tmp_path)  # a new process after each death
        assert journal.crashes(key) == death
        journal.begin(key)  # ... and it dies here, never reaching end()
    assert PoisonJournal(tmp_path).crashes(key) == CRASHES


def test_a_body_handled_to_the_end_is_never_suspected(tmp_path: Path) -> None:
    key = digest(b"a valid update")
    for _ in range(5):
        journal = PoisonJournal(tmp_path)
        journal.begin(key)
        journal.end()  # the process then dies between two updates
    assert PoisonJournal(tmp_path).crashes(key) == 0
