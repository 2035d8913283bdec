"""Server interceptors for the agent gRPC service.

An exception that escapes a grpc.aio servicer is answered with UNKNOWN and the exception's text
as details, which hands agents whatever the text holds (SQL, paths, hostnames). The interceptor
here logs such an exception in full on the control plane and answers INTERNAL "internal error"
instead. Deliberate `context.abort(...)` answers pass through unchanged.
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
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _guarded(behavior: _Behavior, method: str) -> _Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise  # the servicer chose its status and details
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_DETAILS)

    return guarded
