"""contextlib's suppress and nullcontext without importing contextlib.

``contextlib`` pulls in collections and functools and builds its ABCs: ~2-4 ms of every `isle`
start, for two trivial context managers the engine uses everywhere.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["suppress", "nullcontext"]


class suppress:
    """with suppress(OSError): ...  -- the listed exceptions (and subclasses) end the block
    quietly."""

    __slots__ = ("_exc",)

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self._exc = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, ev: Any, tb: Any) -> bool:
        return et is not None and issubclass(et, self._exc)


class nullcontext:
    """with nullcontext(): ...  -- does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
