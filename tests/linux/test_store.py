"""The control store against a real 3-member etcd cluster in a lab: compared writes, watches
from a revision, compaction, members lost and back, and etcd's roles for each certificate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from railnet.core.store_keys import (
    ENVIRONMENTS,
    MEMBERS,
    addressed_key,
    alive_key,
    applied_key,
    environment_key,
    member_key,
)
from railnet.store.etcd import (
    Compacted,
    Compare,
    Delete,
    EtcdStore,
    Put,
    StoreDenied,
    StoreUnavailable,
    Unchanged,
)

from .conftest import LabNet, running_lab, wait_until

pytestmark = pytest.mark.linux


@pytest.fixture(scope="module")
def lab() -> Iterator[LabNet]:
    with running_lab(3, dns=False) as net:
        yield net


@pytest.fixture
def provider(lab: LabNet) -> Iterator[EtcdStore]:
    with lab.lab.store("provider") as store:
        yield store


def test_the_lab_runs_three_members_on_the_underlay(lab: LabNet) -> None:
    members = lab.lab.etcd_members()
    assert [m.name for m in members] == ["etcd-1", "etcd-2", "etcd-3"]
    assert [m.host for m in members] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert all(lab.lab.etcd_pid(m) is not None for m in members)
    with lab.lab.store("operator") as store:
        status = store.member_status()
    assert len(status) == 3
    assert all(line.startswith("ok:") for line in status.values()), status
    assert lab.cluster.store is not None
    assert lab.cluster.store.endpoints == tuple(m.local_endpoint for m in members)


def test_a_compared_write_loses_to_the_one_before_it(provider: EtcdStore) -> None:
    key = environment_key("cmpwrite")
    _, before = provider.get(key)
    assert before is None
    first = provider.commit([Compare(key, 0)], [Put(key, b"first")])
    assert first.succeeded
    # A second writer that read before the first wrote: its comparison fails, nothing lost.
    second = provider.commit([Compare(key, 0)], [Put(key, b"second")])
    assert not second.succeeded
    _, entry = provider.get(key)
    assert entry is not None and entry.value == b"first"
    assert entry.mod_revision == first.revision
    # Re-read and retry: lands on the revision it read.
    third = provider.commit([Compare(key, entry.mod_revision)], [Put(key, b"merged")])
    assert third.succeeded and third.revision > first.revision
    # A compared delete of a stale revision changes nothing.
    assert not provider.commit([Compare(key, first.revision)], [Delete(key)]).succeeded
    assert provider.get(key)[1] is not None
    assert provider.commit([Compare(key, third.revision)], [Delete(key)]).succeeded
    assert provider.get(key)[1] is None


def test_one_transaction_writes_all_or_nothing(provider: EtcdStore) -> None:
    doc, copy = environment_key("txnall"), addressed_key("node-2", "txnall")
    stale = provider.commit([Compare(doc, 12345)], [Put(doc, b"d"), Put(copy, b"d")])
    assert not stale.succeeded
    assert provider.get(doc)[1] is None and provider.get(copy)[1] is None
    done = provider.commit([Compare(doc, 0)], [Put(doc, b"d"), Put(copy, b"d")])
    assert done.succeeded
    assert provider.get(doc)[1] is not None and provider.get(copy)[1] is not None


def test_a_watch_from_a_revision_sees_every_later_change(provider: EtcdStore) -> None:
    prefix = ENVIRONMENTS + "watch"
    start = provider.put(prefix + "a", b"1")
    provider.put(prefix + "b", b"2")
    deleted = provider.commit([], [Delete(prefix + "a")])
    seen = []
    with provider.watch(prefix, start + 1) as watch:
        # A watch that goes quiet fails the test instead of hanging it.
        timer = threading.Timer(10, watch.close)
        timer.start()
        try:
            for batch in watch:
                seen.extend(batch.events)
                if any(e.mod_revision >= deleted.revision for e in seen):
                    break
        finally:
            timer.cancel()
    assert [(e.key.removeprefix(prefix), e.deleted) for e in seen] == [("b", False), ("a", True)]


def test_a_watch_from_a_compacted_revision_says_list_again(provider: EtcdStore) -> None:
    key = ENVIRONMENTS + "compacted"
    old = provider.put(key, b"1")
    now = provider.put(key, b"2")
    provider.compact(now)
    # etcd says so when it creates the watch, or right after in the stream.
    with pytest.raises(Compacted) as raised, provider.watch(key, old) as watch:
        timer = threading.Timer(10, watch.close)
        timer.start()
        try:
            for _ in watch:
                pass
        finally:
            timer.cancel()
    assert raised.value.compact_revision >= now


def test_one_member_down_changes_nothing_for_clients(lab: LabNet, provider: EtcdStore) -> None:
    member = lab.lab.etcd_members()[0]
    lab.lab.stop_etcd(member)
    try:
        key = environment_key("onedown")
        assert provider.commit([Compare(key, 0)], [Put(key, b"x")]).succeeded
        assert provider.get(key)[1] is not None
    finally:
        lab.lab.start_etcd(member)
    with lab.lab.store("operator") as store:
        assert wait_until(lambda: store.member_status()[member.local_endpoint].startswith("ok"))


def test_without_quorum_every_call_fails_closed_naming_the_endpoints(lab: LabNet) -> None:
    members = lab.lab.etcd_members()
    for member in members[:2]:
        lab.lab.stop_etcd(member)
    try:
        with lab.lab.store("provider", timeout=3.0) as store:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as raised:
                store.get(environment_key("noquorum"))
            assert time.monotonic() - started < 10
            message = str(raised.value)
            for member in members:
                assert member.local_endpoint in message
            with pytest.raises(StoreUnavailable):
                store.commit(
                    [Compare(environment_key("noquorum"), 0)],
                    [Put("/railnet/v1/environments/noquorum", b"x")],
                )
    finally:
        for member in members[:2]:
            lab.lab.start_etcd(member)
    with lab.lab.store("provider") as store:
        assert wait_until(lambda: _answers(store), timeout=30)


def _answers(store: EtcdStore) -> bool:
    try:
        store.get(environment_key("noquorum"))
        return True
    except StoreUnavailable:
        return False


# -- least privilege: one test per denial, each with the real certificate ------------------


def test_a_node_reads_what_is_addressed_to_it_and_nothing_else(
    lab: LabNet, provider: EtcdStore
) -> None:
    provider.put(addressed_key("node-1", "privone"), b"for node-1")
    provider.put(addressed_key("node-2", "privone"), b"for node-2")
    with lab.lab.store("node-1") as node:
        assert node.get(addressed_key("node-1", "privone"))[1] is not None
        with pytest.raises(StoreDenied):
            node.get(addressed_key("node-2", "privone"))
        with pytest.raises(StoreDenied):
            node.get(environment_key("privone"))
        with pytest.raises(StoreDenied):
            node.list(MEMBERS)
        with pytest.raises(StoreDenied):
            node.watch(addressed_key("node-2", "privone"), 1)


def test_a_node_cannot_write_a_document(lab: LabNet) -> None:
    with lab.lab.store("node-1") as node:
        for key in (
            environment_key("privtwo"),
            addressed_key("node-1", "privtwo"),
            member_key("node-1"),
        ):
            with pytest.raises(StoreDenied):
                node.put(key, b"forged")
        with pytest.raises(StoreDenied):
            node.put(alive_key("node-2"), b"not me")
        # Its own reports it may write.
        assert node.put(applied_key("node-1", "privtwo"), b"7") > 0


def test_an_operator_reads_and_cannot_write(lab: LabNet, provider: EtcdStore) -> None:
    provider.put(environment_key("privthree"), b"doc")
    with lab.lab.store("operator") as operator:
        assert operator.get(environment_key("privthree"))[1] is not None
        for key in (environment_key("privthree"), member_key("node-9"), alive_key("node-1")):
            with pytest.raises(StoreDenied):
                operator.put(key, b"x")
        with pytest.raises(StoreDenied):
            operator.commit([], [Delete(environment_key("privthree"))])


def test_the_provider_cannot_forge_a_node_report(provider: EtcdStore) -> None:
    with pytest.raises(StoreDenied):
        provider.put(applied_key("node-1", "privfour"), b"99")


def test_a_range_condition_sees_any_write_under_the_prefix(provider: EtcdStore) -> None:
    prefix = ENVIRONMENTS + "range"
    read = provider.put(prefix + "a", b"1")
    provider.put(prefix + "b", b"2")  # another writer, after the read
    stale = provider.commit([Unchanged(prefix, read)], [Put(prefix + "c", b"3")])
    assert not stale.succeeded and provider.get(prefix + "c")[1] is None
    now, _ = provider.list(prefix)
    assert provider.commit([Unchanged(prefix, now)], [Put(prefix + "c", b"3")]).succeeded
