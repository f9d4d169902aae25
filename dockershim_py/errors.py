"""The one exception type that carries a gRPC status from the place that knows what went wrong."""

from __future__ import annotations

import grpc


class CRIError(Exception):
    """A failure with the gRPC status code the caller should see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


def not_found(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.NOT_FOUND, message)


def invalid_argument(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.UNAVAILABLE, message)


def deadline_exceeded(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def unimplemented(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.UNIMPLEMENTED, message)
