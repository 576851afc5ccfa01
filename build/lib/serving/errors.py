"""A gRPC status raised inside the server, and TF Serving's message truncation."""

import grpc

MAX_MESSAGE_CHARS = 1024  # TF Serving's ToGRPCStatus (model_servers/grpc_status_util.cc)

_CODES = {code.value[0]: code for code in grpc.StatusCode}  # TF error codes are gRPC codes


class ServingError(Exception):
    """A request failed with a gRPC status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def truncated(message: str) -> str:
    """Cut a message to 1024 characters + "...TRUNCATED", as TF Serving does."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"


def from_op_error(error) -> ServingError:
    """A TF runtime error (`tf.errors.OpError`) as a status: same code, the runtime's own message.

    TF's Python layer prefixes "Graph execution error:" and, per failing node, a "Detected at node"
    block that may list the Python frames that built the node; those are dropped here so that no
    Python traceback reaches the client.
    """
    lines = error.message.split("\n")
    if lines[0] == "Graph execution error:":
        last = max((i for i, line in enumerate(lines) if line.startswith("Detected at node ")), default=0)
        rest = lines[last + 1:]
        while rest and (not rest[0].strip() or rest[0] == "<stack traces unavailable>"
                        or rest[0].startswith('  File "') or rest[0].startswith("    ")):
            rest = rest[1:]
        lines = rest or lines
    return ServingError(_CODES.get(error.error_code, grpc.StatusCode.UNKNOWN), "\n".join(lines).strip())


def internal_error(what: str, error: Exception) -> ServingError:
    """An unexpected exception as INTERNAL with a one-line message (the traceback is for the log)."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    return ServingError(grpc.StatusCode.INTERNAL, f"{what} failed: {type(error).__name__}: {first_line}")
