"""Which buffers the helper answers: the rules that keep one update hidden in every sum.

The helper holds every update's mask seed, so its answer sum w_i r_i unmasks whatever the
coordinator sums over the same members. It therefore answers a buffer only when:
- the buffer has at least K_min members, all different (a sum of one is the update itself);
- no member was in a buffer answered before: two overlapping buffers reveal their difference
  (the difference attack: {a, b} then {a, b, c} gives c);
- every weight is an integer in [1, max_weight] (the field's overflow bound assumes it);
- a buffer id answered before is asked again with exactly the same members and weights: then it
  gets the same answer (idempotent, for a coordinator that crashed after asking). The same members
  with other weights would give a second linear equation over the same masks, so it is refused.
Pure logic over a journal (journal.py) that makes these promises survive a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Member = tuple[str, int]
"""(update id, integer weight)"""


class JournalLike(Protocol):
    def records(self) -> list[dict[str, Any]]: ...

    def append(self, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Decision:
    """Answer the buffer (`answer`), or refuse it with a `code` and a readable `reason`."""

    answer: bool
    code: str = "ok"
    reason: str = ""
    again: bool = False  # an answer given before, given again


def _refuse(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


class HelperBook:
    """The helper's memory of answered buffers, rebuilt from its journal on start."""

    def __init__(self, journal: JournalLike, k_min: int, max_weight: int) -> None:
        if k_min < 2:
            raise ValueError("K_min below 2 would reveal single updates")
        self.journal, self.k_min, self.max_weight = journal, k_min, max_weight
        self.answered: dict[str, tuple[Member, ...]] = {}
        self.used: dict[str, str] = {}  # update id -> the buffer it was answered in
        for record in journal.records():
            members = tuple((str(u), int(w)) for u, w in record["members"])
            self._remember(str(record["buffer"]), members)

    def _remember(self, buffer_id: str, members: tuple[Member, ...]) -> None:
        self.answered[buffer_id] = members
        for update_id, _ in members:
            self.used[update_id] = buffer_id

    def decide(self, buffer_id: str, members: Sequence[Member]) -> Decision:
        """Decide on one buffer; a new answer is journaled (fsynced) before this returns."""
        asked = tuple((str(u), int(w)) for u, w in members)
        before = self.answered.get(buffer_id)
        if before is not None:
            if before == asked:
                return Decision(True, again=True)
            return _refuse("buffer_changed", f"buffer {buffer_id} was answered with other "
                           f"members or weights")
        problem = self._problem(asked)
        if problem is not None:
            return problem
        self.journal.append({"buffer": buffer_id, "members": [list(m) for m in asked]})
        self._remember(buffer_id, asked)
        return Decision(True)

    def _problem(self, members: tuple[Member, ...]) -> Decision | None:
        ids = [u for u, _ in members]
        if len(members) < self.k_min:
            return _refuse("below_k_min", f"{len(members)} updates, fewer than K_min "
                           f"{self.k_min}")
        if len(set(ids)) != len(ids):
            return _refuse("duplicate_member", "an update appears twice in the buffer")
        reused = [u for u in ids if u in self.used]
        if reused:
            return _refuse("update_reused", f"update {reused[0]} was already in buffer "
                           f"{self.used[reused[0]]}")
        bad = [w for _, w in members if not 1 <= w <= self.max_weight]
        if bad:
            return _refuse("bad_weight", f"weight {bad[0]} outside [1, {self.max_weight}]")
        return None
