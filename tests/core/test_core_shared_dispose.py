"""Disposing a shared-poll member never waits for a delivery on another thread."""

from __future__ import annotations

import threading
from typing import Any

from reactivex import Observer
from reactivex.testing import TestScheduler

from rxrunpod.http import NO_RETRY
from rxrunpod.polling import Emit, Poll, SharedPoll


class NeverPoll(Poll[str]):
    def fetch(self) -> Any:
        return None

    def on_response(self, response: Any, emit: Emit) -> float | None:
        return 60.0


def test_dispose_returns_while_delivery_blocks() -> None:
    shared: SharedPoll[str] = SharedPoll(lambda: NeverPoll(NO_RETRY), TestScheduler())
    entered = threading.Event()
    release = threading.Event()

    def slow_on_next(_value: str) -> None:
        # Stands for a delivering thread that lost the GIL while holding the member's lock.
        entered.set()
        release.wait(5)

    member = shared.subscribe(Observer(on_next=slow_on_next))
    delivering = threading.Thread(target=member.deliver, args=(1, "IN_QUEUE"))
    delivering.start()
    assert entered.wait(5)

    disposing = threading.Thread(target=member.dispose)
    disposing.start()
    disposing.join(1.0)
    returned_early = not disposing.is_alive()
    release.set()
    delivering.join(5)
    disposing.join(5)

    assert returned_early
    assert member.is_stopped
    assert shared.member_count == 0
