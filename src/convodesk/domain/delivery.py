"""The delivery status of an outbound message, and the one rule that moves it.

Statuses: ours (``pending``, ``sending``, ``accepted``: written by the sender around the
``messages:send`` call) and Sinch's (``QUEUED_ON_CHANNEL``, ``DELIVERED``, ``READ``, ``FAILED``,
``SWITCHING_CHANNEL``; reference section 3). Reports arrive duplicated, out of order and even
before the send call has returned (reference section 6), so the rule must not depend on arrival
order. It is a maximum over one total order::

    pending < sending < accepted < QUEUED_ON_CHANNEL < FAILED < DELIVERED < READ

``advance(current, incoming)`` returns whichever of the two ranks higher. Being a maximum, the
result of any set of reports is the same in every arrival order, and a status never moves
backwards (DESIGN section 5).

Where FAILED sits, and why: Sinch calls both READ and FAILED terminal. FAILED is terminal for
the send pipeline: no QUEUED_ON_CHANNEL (from a channel tried before the failover ran out, say)
can revive it. But a DELIVERED or READ is a receipt from the customer's device, evidence that
the message did arrive, so it wins over FAILED whichever came first. Putting FAILED above
DELIVERED instead would let a late or spurious FAILED hide a read message; putting it in no
order at all (first terminal wins) would make the outcome depend on arrival order.

SWITCHING_CHANNEL (one channel failed, the next in the priority order is being tried) is
recorded as an event by the caller but never changes the status. Unknown statuses (a newer
Sinch enum value, ``QUEUED``, lower-case spellings) change nothing either. An unknown
*current* status ranks below everything, so the first known report replaces it.
"""

from __future__ import annotations

from typing import Final

PENDING: Final = "pending"
SENDING: Final = "sending"
ACCEPTED: Final = "accepted"
QUEUED_ON_CHANNEL: Final = "QUEUED_ON_CHANNEL"
FAILED: Final = "FAILED"
DELIVERED: Final = "DELIVERED"
READ: Final = "READ"
SWITCHING_CHANNEL: Final = "SWITCHING_CHANNEL"

ORDER: Final[tuple[str, ...]] = (
    PENDING,
    SENDING,
    ACCEPTED,
    QUEUED_ON_CHANNEL,
    FAILED,
    DELIVERED,
    READ,
)
STATUSES: Final = frozenset((*ORDER, SWITCHING_CHANNEL))
# No further report is expected in normal operation (FAILED can still be superseded by a
# delivery receipt, see the module docstring).
TERMINAL: Final = frozenset({FAILED, READ})
_RANK: Final = {status: index for index, status in enumerate(ORDER)}


def rank(status: str) -> int | None:
    """The position of ``status`` in ORDER; None for SWITCHING_CHANNEL and unknown values."""
    return _RANK.get(status)


def advance(current: str, incoming: str) -> str:
    """The status after a report of ``incoming`` on a message now at ``current``."""
    new = _RANK.get(incoming)
    if new is None:
        return current
    return incoming if new > _RANK.get(current, -1) else current


def is_terminal(status: str) -> bool:
    return status in TERMINAL
