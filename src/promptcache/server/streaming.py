"""A chat stream after its headers are sent: the events tapped, framed, and closed.

:class:`Tap` passes the engine's events through (deadline per event, first token
and final Result acted on); :func:`stream_frames` renders them in the dialect and,
once a 200 is out, turns any failure into the dialect's in-band error frame.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from promptcache.dialects.base import Dialect
from promptcache.errors import InternalError, PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent, TextDelta

logger = logging.getLogger(__name__)

Publish = Callable[[Result], Awaitable[None]]


async def stream_frames(
    tap: Tap,
    request: ChatRequest,
    dialect: Dialect,
    stack: AsyncExitStack,
) -> AsyncIterator[bytes]:
    exc_info: tuple[Any, Any, Any] = (None, None, None)
    frames = dialect.render_stream(tap.stream, request)
    try:
        async for frame in frames:
            yield frame
    except PromptCacheError as error:
        # Headers (200) are gone: report in-band, as both APIs do mid-stream.
        exc_info = (type(error), error, error.__traceback__)
        yield dialect.stream_error_frame(error)
    except Exception as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
        yield dialect.stream_error_frame(logged_internal_error(dialect.name))
    except BaseException as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
        raise
    finally:
        await aclose_quietly(frames)
        await tap.aclose()
        await stack.__aexit__(*exc_info)


class Tap:
    """Passes a primed engine stream through, acting on the first token and the Result.

    The Result is stored (``publish``) as soon as it arrives, before its frames
    are rendered, so a client leaving right after the last token does not
    lose a complete answer; a stream that never reaches its Result stores
    nothing.
    """

    def __init__(
        self,
        *,
        first: StreamEvent,
        events: AsyncIterator[StreamEvent],
        deadline: float | None,
        timed_out: Callable[[], PromptCacheError],
        on_first_token: Callable[[], None],
        on_result: Callable[[Result], object],
        publish: Publish | None,
    ) -> None:
        self._first = first
        self._events = events
        self._deadline = deadline
        self._timed_out = timed_out
        self._on_first_token = on_first_token
        self._on_result = on_result
        self._publish = publish
        self._seen_token = False
        self.stream = self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        yield await self._see(self._first)
        while True:
            # The deadline covers the wait for each event, never a yield: a
            # timeout scope left open across a yield would fire in the consumer.
            try:
                async with asyncio.timeout_at(self._deadline):
                    event = await anext(self._events, None)
            except TimeoutError:
                raise self._timed_out() from None
            if event is None:
                return
            yield await self._see(event)

    async def _see(self, event: StreamEvent) -> StreamEvent:
        if not self._seen_token and isinstance(event, TextDelta | Result):
            self._seen_token = True
            self._on_first_token()
        if isinstance(event, Result):
            if self._publish is not None:
                await self._publish(event)
            self._on_result(event)
        return event

    async def aclose(self) -> None:
        await aclose_quietly(self.stream)
        await aclose_quietly(self._events)


def logged_internal_error(route: str) -> InternalError:
    """A 500 for a failure outside the engine, logged (call from an except block)."""
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    logger.exception("request %s on the %s route failed", request_id, route)
    return InternalError(request_id)


async def aclose_quietly(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
