"""The helper's rules (helper/decisions.py, helper/journal.py): K_min, no update in two buffers,
the same answer for the same buffer after a crash, all journaled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common import masking, quantise
from common.errors import ConfigError
from helper.decisions import HelperBook
from helper.journal import Journal


def book(path: Path, k_min: int = 3) -> HelperBook:
    return HelperBook(Journal(path / "helper.journal"), k_min=k_min, max_weight=16)


def test_a_buffer_below_k_min_is_refused_and_not_journaled(tmp_path: Path) -> None:
    # Given a helper with K_min 3
    helper = book(tmp_path)
    # When asked for a buffer of two updates
    decision = helper.decide("b1", [("u1", 16), ("u2", 16)])
    # Then it refuses, and its two updates may still go into a full buffer later
    assert not decision.answer and decision.code == "below_k_min"
    assert helper.decide("b2", [("u1", 16), ("u2", 16), ("u3", 8)]).answer


def test_the_difference_attack_is_refused(tmp_path: Path) -> None:
    # Given three workers' masked updates, the coordinator holding their shares
    rng = np.random.default_rng(0)
    scale = quantise.max_scale(1.0, 4 * 16)
    deltas = {u: [rng.normal(0, 0.1, 8)] for u in ("a", "b", "c", "d")}
    seeds = {u: masking.new_seed() for u in deltas}
    shares = {u: masking.share(quantise.quantise(d, 1.0, scale, rng), seeds[u])
              for u, d in deltas.items()}
    helper = book(tmp_path)

    def ask(buffer_id: str, members: list[str]) -> list[np.ndarray] | None:
        decision = helper.decide(buffer_id, [(u, 1) for u in members])
        if not decision.answer:
            return None
        masks = masking.weighted_mask_sum([seeds[u] for u in members], [1] * len(members), [(8,)])
        return masking.unshare(masking.weighted_field_sum([shares[u] for u in members],
                                                          [1] * len(members)), masks)

    # When the coordinator gets {a, b, c} unmasked, then asks for {a, b, c, d} to subtract
    first = ask("b1", ["a", "b", "c"])
    second = ask("b2", ["a", "b", "c", "d"])
    # Then the first is answered and the second refused: d alone is never revealed
    assert first is not None and second is None
    refused = helper.decide("b2", [("a", 1), ("b", 1), ("c", 1), ("d", 1)])
    assert refused.code == "update_reused" and "buffer b1" in refused.reason
    # (had it been answered, the difference would be d's quantised delta exactly)
    plain = masking.unshare(masking.weighted_field_sum([shares[u] for u in "abcd"], [1] * 4),
                            masking.weighted_mask_sum([seeds[u] for u in "abcd"], [1] * 4,
                                                      [(8,)]))
    revealed = quantise.to_signed(plain[0] - first[0]) / scale
    assert np.allclose(revealed, deltas["d"][0], atol=2 / scale)
    # And the same attack under the same buffer id (changed members) is refused too
    assert helper.decide("b1", [("a", 1), ("b", 1), ("d", 1)]).code == "buffer_changed"


def test_the_same_buffer_gets_the_same_answer_after_a_crash(tmp_path: Path) -> None:
    # Given a helper that answered buffer b1 and then crashed
    members = [("u1", 16), ("u2", 11), ("u3", 9)]
    assert book(tmp_path).decide("b1", members).answer
    # When a new helper process starts from the journal and is asked for b1 again
    restarted = book(tmp_path)
    again = restarted.decide("b1", members)
    # Then it answers again (nothing new journaled), and still refuses reusing b1's updates
    assert again.answer and again.again
    assert len(Journal(tmp_path / "helper.journal").records()) == 1
    assert restarted.decide("b2", [("u3", 1), ("u4", 1), ("u5", 1)]).code == "update_reused"


def test_the_same_members_with_other_weights_are_refused(tmp_path: Path) -> None:
    # Given b1 answered with weights (16, 16, 16)
    helper = book(tmp_path)
    assert helper.decide("b1", [("u1", 16), ("u2", 16), ("u3", 16)]).answer
    # When asked for b1 with other weights (a second equation over the same masks)
    decision = helper.decide("b1", [("u1", 16), ("u2", 16), ("u3", 15)])
    # Then it refuses
    assert not decision.answer and decision.code == "buffer_changed"


@pytest.mark.parametrize("members,code", [
    ([("u1", 1), ("u1", 1), ("u2", 1)], "duplicate_member"),
    ([("u1", 0), ("u2", 1), ("u3", 1)], "bad_weight"),
    ([("u1", 17), ("u2", 1), ("u3", 1)], "bad_weight"),
])
def test_malformed_buffers_are_refused(tmp_path: Path, members: list[tuple[str, int]],
                                       code: str) -> None:
    helper = book(tmp_path)
    assert helper.decide("b", members).code == code
    assert Journal(tmp_path / "helper.journal").records() == []


def test_a_torn_last_line_is_dropped_and_a_corrupt_journal_stops(tmp_path: Path) -> None:
    # Given a journal with one record and a last line cut short by a crash
    path = tmp_path / "helper.journal"
    book(tmp_path).decide("b1", [("u1", 1), ("u2", 1), ("u3", 1)])
    with open(path, "ab") as handle:
        handle.write(b'{"buffer":"b2","memb')
    # Then replay keeps the first record only, and the next record is a whole line again
    restarted = book(tmp_path)
    assert list(restarted.answered) == ["b1"]
    assert restarted.decide("b3", [("u4", 1), ("u5", 1), ("u6", 1)]).answer
    assert list(book(tmp_path).answered) == ["b1", "b3"]
    # And garbage in the middle stops the helper with a clear error
    path.write_bytes(b"not json\n" + path.read_bytes())
    with pytest.raises(ConfigError, match="not a journal record"):
        book(tmp_path)


def test_k_min_below_two_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="K_min"):
        book(tmp_path, k_min=1)
