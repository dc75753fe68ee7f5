"""isle.record: the dataclass stand-in on the start path (keyword init, defaults, repr, eq, to_dict)."""

from __future__ import annotations

import copy
import pickle

import pytest

from isle.record import FrozenInstanceError, field, field_names, record, to_dict


@record
class Inner:
    """doc kept"""
    n: int = 1


@record
class Outer:
    name: str
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    ratio: float = 0.5

    @property
    def shout(self) -> str:
        return self.name.upper()

    @classmethod
    def make(cls) -> Outer:
        return cls(name="made")


@record(frozen=True)
class Frozen:
    a: str


def test_defaults_factories_are_fresh_per_instance() -> None:
    a, b = Outer(name="a"), Outer(name="b")
    a.tags.append("x")
    assert b.tags == [] and a.inner is not b.inner
    assert Outer.make().shout == "MADE" and Inner.__doc__ == "doc kept"


def test_keyword_only_and_named_errors() -> None:
    with pytest.raises(TypeError, match="missing required keyword argument: 'name'"):
        Outer()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nam'"):
        Outer(name="a", nam="b")
    with pytest.raises(TypeError):
        Outer("a")  # type: ignore[misc]


def test_eq_repr_fields_to_dict() -> None:
    o = Outer(name="a", items=[Inner(n=2)])
    assert o == Outer(name="a", items=[Inner(n=2)]) and o != Outer(name="b")
    assert o != ("a",) and repr(Inner()) == "Inner(n=1)"
    assert field_names(Outer) == ("name", "tags", "inner", "items", "ratio")
    d = to_dict(o)
    assert d == {"name": "a", "tags": [], "inner": {"n": 1}, "items": [{"n": 2}], "ratio": 0.5}
    d["items"][0]["n"] = 9
    assert o.items[0].n == 2  # a copy, as dataclasses.asdict


def test_slots_copy_pickle_and_unhashable() -> None:
    o = Outer(name="a")
    with pytest.raises(AttributeError):
        o.other = 1  # type: ignore[attr-defined]
    assert copy.deepcopy(o) == o and pickle.loads(pickle.dumps(o)) == o
    with pytest.raises(TypeError):
        hash(o)


def test_frozen() -> None:
    f = Frozen(a="x")
    with pytest.raises(FrozenInstanceError):
        f.a = "y"  # type: ignore[misc]
    assert hash(f) == hash(Frozen(a="x")) and {f: 1}[Frozen(a="x")] == 1
