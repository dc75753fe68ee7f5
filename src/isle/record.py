"""Plain data records without ``dataclasses``, for what every ``isle`` start builds.

``dataclasses`` imports re, enum, copy and friends and compiles an __init__/__repr__/__eq__ per
class: ~10 ms of every container start for the ~15 records on that path. The records need only
keyword construction with defaults, repr, equality, their field names and a deep to-dict, which
a generic __init__ gives without generating code:

    @record
    class Point:
        x: int
        tags: list[str] = field(default_factory=list)

    Point(x=1) == Point(x=1, tags=[]);  to_dict(Point(x=1)) == {"x": 1, "tags": []}

Classes are keyword-only and slotted (as ``@dataclass(slots=True, kw_only=True)``);
``frozen=True`` forbids assignment after __init__. Type checkers see them as dataclasses.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_kw):  # typing costs ~5 ms to import; the checker needs it only
        return lambda f: f

__all__ = ["record", "field", "field_names", "to_dict", "FrozenInstanceError"]


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A default made fresh for every instance (a list, a dict, another record)."""
    return _Factory(default_factory)


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
def record(cls: Any = None, *, frozen: bool = False) -> Any:
    """Make cls a slotted, keyword-only record of its annotated fields (see the module doc)."""
    def wrap(c: type) -> type:
        return _build(c, frozen)
    return wrap if cls is None else wrap(cls)


def _build(cls: type, frozen: bool) -> type:
    ns = dict(cls.__dict__)
    names: list[str] = []
    defaults: dict[str, Any] = {}
    for name, ann in ns.get("__annotations__", {}).items():
        if isinstance(ann, str) and ann.replace("typing.", "").startswith("ClassVar"):
            continue
        names.append(name)
        if name in ns:
            defaults[name] = ns.pop(name)
    for k in ("__dict__", "__weakref__"):
        ns.pop(k, None)
    fields = tuple(names)
    qual = cls.__qualname__
    setattr_ = object.__setattr__

    def __init__(self: Any, **kw: Any) -> None:
        for n in fields:
            if n in kw:
                v = kw.pop(n)
            elif n in defaults:
                v = defaults[n]
                if type(v) is _Factory:
                    v = v.make()
            else:
                raise TypeError(f"{qual}() missing required keyword argument: {n!r}")
            setattr_(self, n, v)
        if kw:
            raise TypeError(f"{qual}() got an unexpected keyword argument {next(iter(kw))!r}")

    def __repr__(self: Any) -> str:
        return f"{qual}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in fields)

    ns.update(__slots__=fields, __record_fields__=fields, __init__=__init__, __repr__=__repr__,
              __eq__=__eq__, __match_args__=())
    if frozen:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in fields))

        ns.update(__setattr__=__setattr__, __delattr__=__setattr__, __hash__=__hash__)
    else:
        ns["__hash__"] = None
    for f in (__init__, __repr__, __eq__):
        f.__qualname__ = f"{qual}.{f.__name__}"
    new = type(cls)(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = qual
    return new


def field_names(cls_or_obj: Any) -> tuple[str, ...]:
    """The record's field names, in declaration order."""
    return cls_or_obj.__record_fields__  # type: ignore[no-any-return]


def to_dict(obj: Any) -> Any:
    """A record as a dict, recursively through records, lists, tuples and dicts (copies)."""
    fields = getattr(type(obj), "__record_fields__", None)
    if fields is not None:
        return {n: to_dict(getattr(obj, n)) for n in fields}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
