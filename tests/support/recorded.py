"""Typed access to the messages a ``TestScheduler`` observer records.

``Recorded.value`` is typed as a notification or one of reactivex's predicate
matchers, and only ``OnError`` declares ``exception``, so reading
``message.value.exception`` does not type-check. These helpers narrow the
value first and fail with the message they got when it is the wrong kind.
"""

from __future__ import annotations

from typing import Any, TypeVar

from reactivex import Notification
from reactivex.notification import OnError
from reactivex.testing.recorded import Recorded

__all__ = ["error_of", "notification_of", "value_of"]

_T = TypeVar("_T")


def notification_of(message: Recorded[_T]) -> Notification[_T]:
    """Return the notification of a recorded message, failing on a predicate matcher."""
    notification = message.value
    assert isinstance(notification, Notification), f"not a notification: {message}"
    return notification


def value_of(message: Recorded[_T]) -> _T:
    """Return the item of a recorded ``on_next`` message."""
    notification = notification_of(message)
    # kind, not isinstance(OnNext), because isinstance would widen the item type to Any.
    assert notification.kind == "N", f"expected on_next, got {message}"
    return notification.value


def error_of(message: Recorded[Any]) -> Exception:
    """Return the exception of a recorded ``on_error`` message."""
    notification = message.value
    assert isinstance(notification, OnError), f"expected on_error, got {message}"
    return notification.exception
