"""uvicorn's h11 protocol with a deadline for stalled clients.

uvicorn times out a keep-alive connection only while no byte arrives after a response, so a
client can hold a connection for ever: by never finishing its request head, or by trickling the
rest of a body the app already answered (a 404, a 405, a 413 before the body). The app itself
times out a body it is reading (408, see `emulator.wire.params.read_body`). This protocol closes
the connection when, one body timeout after it opened or after its last response, the client
still has not sent a whole request head, or is still sending the body of an answered request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from emulator.settings import Limits


class StallGuardedH11Protocol(H11Protocol):
    limits: Limits = Limits()  # set per server by `protocol_for`; read at each deadline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stall_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0  # loop time the connection opened or last finished an answer
        self._close_after_answer = False  # the client shut its sending side mid-request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._idle_since = self.loop.time()
        self._arm_stall_timer(self.limits.body_timeout_seconds)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        # A client may shut its sending side once its request is out (shutdown(SHUT_WR), `nc
        # -N`) and still read the answer. Returning None lets asyncio close the connection at
        # once (uvicorn's way), dropping an answer still being made, such as a batch waiting for
        # its commit (emulator/group_commit.py): keep it open until that answer is complete.
        # A request that is not whole never will be: that client is gone, as before.
        request_whole = self.conn.their_state in (h11.DONE, h11.MUST_CLOSE)
        if request_whole and self.cycle is not None and not self.cycle.response_complete:
            self._close_after_answer = True
            return True
        return None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Only the deadline moves: the timer, when it comes, waits out the rest. Cancelling and
        # arming a timer for every answer cost a few percent of a keep-alive request.
        self._idle_since = self.loop.time()
        # The client sends no more: close, unless a request it pipelined before is now started.
        if self._close_after_answer and self.cycle.response_complete:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().connection_lost(exc)

    def _arm_stall_timer(self, delay: float) -> None:
        self._stall_timer = self.loop.call_later(delay, self._close_if_stalled)

    def _close_if_stalled(self) -> None:
        timeout = self.limits.body_timeout_seconds
        remaining = self._idle_since + timeout - self.loop.time()
        if remaining > 0:  # an answer finished since the timer was armed
            self._arm_stall_timer(remaining)
            return
        ours, theirs = self.conn.our_state, self.conn.their_state
        head_unfinished = ours is h11.IDLE and theirs is h11.IDLE
        answered_body_unfinished = ours is h11.DONE and theirs is h11.SEND_BODY
        if (head_unfinished or answered_body_unfinished) and not self.transport.is_closing():
            self.transport.close()
            self._stall_timer = None
            return
        # Busy (the app is answering) or closing: look again one timeout later.
        self._arm_stall_timer(timeout)


def protocol_for(limits: Limits) -> type[StallGuardedH11Protocol]:
    """The protocol class for one server, reading that server's (run-time mutable) limits."""
    return type("StallGuardedH11Protocol", (StallGuardedH11Protocol,), {"limits": limits})
