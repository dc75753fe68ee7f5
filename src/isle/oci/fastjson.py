"""json.loads/dumps through CPython's C accelerator alone, skipping ``json``'s import of ``re``.

``import json`` costs ~6 ms here (json.decoder compiles regexes, pulling in re and enum); the
runtime's start-up is measured against runc, so it parses config.json and state.json with the
same C scanner/encoder that ``json`` itself uses, and falls back to ``json`` where ``_json`` is
missing. Output and errors match ``json`` for the compact form (no indent).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["loads", "dumps"]


try:
    import _json
except ImportError:  # pragma: no cover - other Pythons
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


# typeshed types these by their Python-level callers; the C functions take what is passed here
_scan = _json.make_scanner(_Ctx()) if _json is not None else None  # type: ignore[arg-type]
_encode = (_json.make_encoder(None, None, _json.encode_basestring_ascii,  # type: ignore[arg-type]
                              None, ": ", ", ", False, False, True)
           if _json is not None else None)


def loads(s: str | bytes) -> Any:
    """Like json.loads; bad input raises json.JSONDecodeError (a ValueError) from json itself."""
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    if _scan is None:
        import json

        return json.loads(s)
    n = len(s)
    i = 0
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
        while end < n and s[end] in _WS:
            end += 1
        if end == n:
            return obj
    except (StopIteration, ValueError, SystemError):
        pass
    import json  # bad input: let json itself say what is wrong and where

    return json.loads(s)


def dumps(obj: Any) -> str:
    """Like json.dumps(obj) (compact separators ', ' and ': ', ASCII)."""
    if _encode is None:
        import json

        return json.dumps(obj)
    return "".join(_encode(obj, 0))
