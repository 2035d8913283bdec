"""Server interceptors for the agent gRPC service.

An exception that escapes a grpc.aio servicer is answered with UNKNOWN and the exception's text
as details, which hands agents whatever the text holds (SQL, paths, hostnames). The interceptor
here logs such an exception in full on the control plane and answers INTERNAL "internal error"
instead. Deliberate `context.abort(...)` answers pass through unchanged.

A request that is not a valid message of the method's type (garbage bytes) would fail in gRPC's
own deserialisation, answered UNKNOWN with the parser's text and logged with a traceback; it is
answered INVALID_ARGUMENT "malformed request" instead, before the servicer runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

INTERNAL_ERROR_DETAILS = "internal error"

_Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class InternalErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns unexpected exceptions of async unary-unary handlers into INTERNAL "internal error".

    AgentService has only such methods; other handlers pass through untouched (wrapping a sync
    one in a coroutine would move it from grpc's thread pool onto the event loop).
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not inspect.iscoroutinefunction(handler.unary_unary):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, handler_call_details.method),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, and whatever else a parser raises
            return _Malformed(exc)

    return deserialize


def _guarded(behavior: _Behavior, method: str) -> _Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            log.warning("refused a malformed %s request from %s", method, context.peer())
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed request: not a valid {method.rsplit('/', 1)[-1]} message",
            )
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise  # the servicer chose its status and details
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_DETAILS)

    return guarded
