"""Secure aggregation's pieces together, without a broker: worker shares, the coordinator's
masked FedBuff (coordinator/strategies/secure_fedbuff.py), the helper's answer
(helper/service.py), messages through the sealed codecs, and the settings that cannot work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from common import identity, sealed_wire
from common.codec import Codec
from common.errors import ConfigError
from common.messages import MaskSeed, TrainTask, UnmaskAnswer, UnmaskRequest, WeightUpdate, new_id
from common.sealing import SealError
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator import checkpoint
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore
from coordinator.secure_link import SecureLink, unmask_request
from coordinator.strategies import Contribution, FedBuff, SecureFedBuff, make_strategy
from helper.service import HelperService
from helper.settings import HelperRoleSettings
from worker.secure_share import SecureSharer, task_refusal

WORKERS = ["w0", "w1", "w2", "w3", "w4", "w5"]
SHAPES = [(4, 3), (3,)]


@dataclass
class Parties:
    keys: Path
    settings: CoordinatorSettings
    core: CoordinatorCore
    helper: HelperService
    coordinator_codec: Codec
    helper_codec: Codec

    def sharer(self, worker: str) -> SecureSharer:
        return SecureSharer(identity.load_identity(self.keys / f"{worker}.key"),
                            identity.load_public(self.keys / "helper.pub"), "j")

    def ask(self, request: UnmaskRequest) -> UnmaskAnswer:
        """The request as the coordinator seals it, opened and answered as the helper does."""
        helper_pub = identity.load_public(self.keys / "helper.pub")
        coordinator_pub = identity.load_public(self.keys / "coordinator.pub")
        body = self.coordinator_codec.encode(request, {"helper": helper_pub.encryption})
        opened = self.helper_codec.decode(body, UnmaskRequest,
                                          {"coordinator": coordinator_pub.signing}).message
        answer = self.helper.answer(opened)
        back = self.helper_codec.encode(answer, {"coordinator": coordinator_pub.encryption})
        return self.coordinator_codec.decode(back, UnmaskAnswer,
                                             {"helper": helper_pub.signing}).message


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    keys = tmp_path / "keys"
    registry = identity.Registry()
    for name in ["coordinator", "helper", *WORKERS]:
        made = identity.Identity.generate(name)
        identity.save_identity(made, keys)
        if name in WORKERS:
            registry.add(made.public())
    registry.save(keys / "registry.json")
    settings = CoordinatorSettings(
        job="j", strategy="fedbuff", buffer_size=3, max_updates=6, secure_aggregation=True,
        secure_clip=1.0, max_update_norm_factor=0, identity=keys / "coordinator.key",
        registry=keys / "registry.json", helper_key=keys / "helper.pub")
    weights = [np.full(s, 0.5, np.float32) for s in SHAPES]
    core = CoordinatorCore.for_job(settings, weights, make_strategy(settings))
    helper = HelperService(HelperRoleSettings(
        job="j", identity=keys / "helper.key", registry=keys / "registry.json",
        coordinator_key=keys / "coordinator.pub", k_min=3, state_dir=tmp_path / "helper"))
    return Parties(keys, settings, core, helper,
                   Codec(1 << 24, identity.load_identity(keys / "coordinator.key")),
                   Codec(1 << 24, identity.load_identity(keys / "helper.key")))


def send(parties: Parties, worker: str, delta: list[np.ndarray],
         rng: np.random.Generator) -> WeightUpdate:
    """A worker answers a task the core issued with its masked delta."""
    task = parties.core.issue_task()
    update_id = new_id()
    shares, seed = parties.sharer(worker).share(delta, task, update_id, rng)
    update = WeightUpdate(update_id=update_id, worker_id=worker, task_id=task.task_id,
                          base_version=parties.core.version, num_examples=10, train_seconds=0.1,
                          weights=shares, is_delta=True, helper_seed=seed)
    assert parties.core.handle(update).kind == "buffered"
    return update


def test_a_masked_buffer_steps_like_plain_fedbuff_and_nobody_sees_one_update(
        parties: Parties) -> None:
    # Given three workers' deltas, sent masked in answer to tasks asking for secure aggregation
    rng = np.random.default_rng(0)
    deltas = [[rng.normal(0, 0.05, s) for s in SHAPES] for _ in range(3)]
    tasks_ask = parties.core.issue_task()
    assert tasks_ask.secure_scale > 0 and tasks_ask.secure_clip == 1.0
    updates = [send(parties, w, d, rng) for w, d in zip(WORKERS[:3], deltas, strict=True)]
    strategy = parties.core.strategy
    assert isinstance(strategy, SecureFedBuff)
    # Then the coordinator holds uint32 shares and seeds it cannot open
    assert all(u.weights[0].dtype == np.uint32 for u in updates)
    coordinator = identity.load_identity(parties.keys / "coordinator.key")
    with pytest.raises(SealError, match="not_a_recipient"):
        sealed_wire.decode_sealed(updates[0].helper_seed, MaskSeed,
                                  trusted={"w0": identity.load_public(
                                      parties.keys / "w0.pub").signing},
                                  me=coordinator)
    # And the full buffer is sealed, the model unchanged until the helper answers
    assert len(strategy.sealed) == 1 and parties.core.version == 0
    sealed = strategy.sealed[0]
    assert [u for u, _ in sealed.members] == [u.update_id for u in updates]
    # When the helper is asked for that buffer and its answer is applied
    answer = parties.ask(unmask_request(sealed, "j", 15))
    assert answer.answered, answer.reason
    new_weights, count = strategy.complete(parties.core.weights, answer.buffer_id,
                                           answer.mask_sum) or (None, 0)
    assert new_weights is not None and count == 3
    # Then the step is plain FedBuff's on the same deltas, to within the quantisation
    plain = FedBuff(buffer_size=3)
    for delta in deltas:
        want = plain.submit(parties.core.weights, Contribution(
            [d.astype(np.float32) for d in delta], True, 0, 10))
    assert want is not None
    for got, expected in zip(new_weights, want, strict=True):
        assert got.dtype == np.float32
        assert np.max(np.abs(got - expected)) < 3 / strategy.scale + 1e-7
    # And the same buffer asked again gets the same answer (a coordinator that crashed)
    again = parties.ask(unmask_request(sealed, "j", 15))
    assert again.answered and np.array_equal(again.mask_sum[0], answer.mask_sum[0])


def test_the_helper_refuses_an_update_in_a_second_buffer(parties: Parties) -> None:
    # Given a first buffer answered
    rng = np.random.default_rng(1)
    first = [send(parties, w, [rng.normal(0, 0.05, s) for s in SHAPES], rng)
             for w in WORKERS[:3]]
    strategy = parties.core.strategy
    assert isinstance(strategy, SecureFedBuff)
    assert parties.ask(unmask_request(strategy.sealed[0], "j", 15)).answered
    # When the coordinator builds a second buffer holding one of the first's updates
    more = [send(parties, w, [rng.normal(0, 0.05, s) for s in SHAPES], rng)
            for w in WORKERS[3:5]]
    members = [first[0], *more]
    request = UnmaskRequest(buffer_id=new_id(), job="j", coordinates=15,
                            weights={u.update_id: 16 for u in members},
                            seeds={u.update_id: u.helper_seed for u in members})
    answer = parties.ask(request)
    # Then the helper refuses it: the difference would reveal the update
    assert not answer.answered and answer.code == "update_reused" and answer.mask_sum == ()


def test_a_seed_relabelled_to_another_update_is_refused_and_burns_nothing(
        parties: Parties) -> None:
    # Given a buffer of three updates whose seeds the coordinator swaps between two ids
    rng = np.random.default_rng(2)
    updates = [send(parties, w, [rng.normal(0, 0.05, s) for s in SHAPES], rng)
               for w in WORKERS[:3]]
    seeds = {u.update_id: u.helper_seed for u in updates}
    a, b = updates[0].update_id, updates[1].update_id
    seeds[a], seeds[b] = seeds[b], seeds[a]
    request = UnmaskRequest(buffer_id="x", job="j", coordinates=15,
                            weights={u.update_id: 16 for u in updates}, seeds=seeds)
    # Then the helper refuses it, and the honest buffer is still answered afterwards
    assert parties.ask(request).code == "bad_seed"
    strategy = parties.core.strategy
    assert isinstance(strategy, SecureFedBuff)
    assert parties.ask(unmask_request(strategy.sealed[0], "j", 15)).answered


def test_a_sealed_buffer_survives_the_checkpoint_bit_for_bit(parties: Parties,
                                                             tmp_path: Path) -> None:
    # Given a sealed buffer and one more update in the open buffer, checkpointed
    rng = np.random.default_rng(3)
    for w in WORKERS[:4]:
        send(parties, w, [rng.normal(0, 0.05, s) for s in SHAPES], rng)
    checkpoint.save(tmp_path / "c.npz", parties.core.state())
    # When a new coordinator core loads it
    restored = CoordinatorCore.for_job(parties.settings, [np.zeros(s, np.float32)
                                                          for s in SHAPES],
                                       make_strategy(parties.settings))
    restored.load_state(checkpoint.load(tmp_path / "c.npz"))
    before, after = parties.core.strategy, restored.strategy
    assert isinstance(before, SecureFedBuff) and isinstance(after, SecureFedBuff)
    # Then the same buffer id, members, seeds, shares and open buffer are back
    assert after.state().keys() == before.state().keys() and after.buffered == 4
    answer = parties.ask(unmask_request(before.sealed[0], "j", 15))
    one = before.complete(parties.core.weights, answer.buffer_id, answer.mask_sum)
    two = after.complete(restored.weights, answer.buffer_id, answer.mask_sum)
    assert one is not None and two is not None
    assert all(np.array_equal(x, y) for x, y in zip(one[0], two[0], strict=True))
    assert after.members == before.members and after.seeds == before.seeds


@pytest.mark.parametrize("changes,words", [
    ({"aggregator": "median"}, "cannot run on masked shares"),
    ({"norm_bound": 1.0}, "cannot run on masked shares"),
    ({"max_update_norm_factor": 20.0}, "cannot run on masked shares"),
    ({"strategy": "fedasync"}, "use strategy fedbuff"),
    ({"helper_key": None}, "--helper-key"),
    ({"max_updates": 7}, "multiple of buffer_size"),
    ({"weight_by_examples": True}, "staleness only"),
])
def test_configurations_that_cannot_work_on_masked_shares_stop_at_start(
        parties: Parties, changes: dict[str, object], words: str) -> None:
    base = parties.settings.model_dump()
    with pytest.raises(ValidationError, match=words):
        CoordinatorSettings(**(base | changes))


def test_a_worker_without_a_helper_key_refuses_a_secure_task() -> None:
    task = TrainTask(task_id="t", job="j", min_version=0, send_delta=True, secure_clip=1.0,
                     secure_scale=1000.0)
    assert "--helper-key" in (task_refusal(task, None, None) or "")
    assert task_refusal(TrainTask(task_id="t", job="j", min_version=0), None, None) is None
    assert task_refusal(TrainTask(task_id="t", job="j", min_version=0), None,
                        "update 5 ...") == "privacy budget: update 5 ..."


def link_to(parties: Parties, core: CoordinatorCore | None = None,
            settings: CoordinatorSettings | None = None) -> SecureLink:
    """The coordinator's side of the helper conversation, without a checkpoint."""
    return SecureLink(settings or parties.settings, Topology("j", secure=True),
                      parties.coordinator_codec, core or parties.core,
                      Commit(None, lambda *_: None, lambda *_: None, lambda: (0, [])),
                      lambda *_: None)


def sealed_buffer(parties: Parties, seed: int) -> str:
    """Three workers fill a buffer, which is sealed; its id."""
    rng = np.random.default_rng(seed)
    for w in WORKERS[:3]:
        send(parties, w, [rng.normal(0, 0.05, s) for s in SHAPES], rng)
    strategy = parties.core.strategy
    assert isinstance(strategy, SecureFedBuff)
    return strategy.sealed[0].buffer_id


@pytest.mark.parametrize(("code", "reason", "says"), [
    # a full buffer refused as below the helper's K_min (K_min above K)
    ("below_k_min", "3 updates, fewer than K_min 5",
     "--buffer-size to at least the helper's --k-min"),
    # a full buffer refused for its weights (the helper's --max-weight below the coordinator's
    # --secure-weight-resolution: every buffer would be refused the same way)
    ("bad_weight", "weight 16 outside [1, 8]", "--secure-weight-resolution to at most"),
])
def test_a_helper_refusing_every_full_buffer_stops_the_coordinator_with_one_message(
        parties: Parties, code: str, reason: str, says: str) -> None:
    # Given a full sealed buffer the helper refuses in a way it would refuse every buffer
    refusal = UnmaskAnswer(sealed_buffer(parties, 5), False, code, reason)
    # Then the coordinator stops with what to change, instead of losing every buffer for ever
    with pytest.raises(ConfigError, match=says):
        link_to(parties).apply(refusal)


def test_a_model_whose_mask_sum_cannot_be_one_message_is_refused_at_start(
        parties: Parties) -> None:
    # Given a message limit below the helper's answer for this model (4 bytes per parameter;
    # mask sums are not sent in chunks: the helper would be refused by the broker for ever)
    settings = parties.settings.model_copy(update={"max_message_bytes": 64 * 1024})
    big = CoordinatorCore.for_job(settings, [np.zeros(20_000, np.float32)],
                                  make_strategy(settings))
    # Then the coordinator stops at start with one message instead of hanging
    with pytest.raises(ConfigError, match="mask sum for this model is one message"):
        link_to(parties, big, settings)


def test_no_task_is_issued_while_a_buffer_waits_for_the_helper(parties: Parties) -> None:
    # Given a full buffer sealed (tasks in flight: none; more updates still wanted), the model
    # at version 0 until the helper answers
    buffer_id = sealed_buffer(parties, 5)
    core = parties.core
    assert core.version == 0 and not core.in_flight
    # When the coordinator tops up its tasks while the helper has not answered
    tasks, _ = core.top_up(concurrency=3, max_updates=6)
    # Then it issues none: a task issued now would train on version 0, which the step is about
    # to replace (one version of staleness more than plain FedBuff's, every buffer: 10.77
    # points of accuracy lost on average over six seeds on digits, docs/benchmarks.md)
    assert tasks == []
    # And once the answer is applied, the tasks go out at the new version
    strategy = core.strategy
    assert isinstance(strategy, SecureFedBuff) and strategy.sealed[0].buffer_id == buffer_id
    link_to(parties).apply(parties.ask(unmask_request(strategy.sealed[0], "j", 15)))
    assert core.version == 1 and not strategy.stepping
    tasks, _ = core.top_up(concurrency=3, max_updates=6)
    assert len(tasks) == 3 and all(t.min_version == 1 for t in tasks)


def test_tasks_go_out_again_once_the_helper_refuses_the_waiting_buffer(parties: Parties) -> None:
    # Given a sealed buffer waiting for the helper (no task goes out meanwhile)
    buffer_id = sealed_buffer(parties, 6)
    core = parties.core
    assert core.top_up(concurrency=3, max_updates=6)[0] == []
    # When the helper refuses it (its updates are lost)
    link_to(parties).apply(UnmaskAnswer(buffer_id, False, "overlap", "a member was answered"))
    # Then nothing waits any more, the model is unchanged, and the tasks go out again
    assert not core.strategy.stepping and core.version == 0
    tasks, _ = core.top_up(concurrency=3, max_updates=6)
    assert len(tasks) == 3 and all(t.min_version == 0 for t in tasks)
