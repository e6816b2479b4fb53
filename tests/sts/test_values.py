"""``mita.sts.values``: value classes behave as the dataclasses they replace (issue 11: start-up time).

Each check builds the same class twice, with :mod:`dataclasses` and with :class:`Value`, and compares what a
caller can see: construction (and its errors), ``==``, ``hash``, ``repr``, immutability, ``match``, pickling.
Then ``mita.sts``'s lazy names: every name of ``__all__`` resolves, to the object of the module the table names.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mita import sts
from mita.sts import REGISTRY
from mita.sts.values import FrozenInstanceError, Value, field, fields, replace


@dataclasses.dataclass(frozen=True, slots=True)
class DPoint:
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 0
    z: int = 7


class VPoint(Value):
    KIND: ClassVar[str] = "point"
    x: int
    y: int = 0
    z: int = 7


@dataclasses.dataclass
class DState:
    name: str
    key: int = dataclasses.field(repr=False)
    tids: list[int] = dataclasses.field(default_factory=list)
    seen: int = dataclasses.field(default=0, compare=False)


class VState(Value, frozen=False):
    name: str
    key: int = field(repr=False)
    tids: list[int] = field(default_factory=list)
    seen: int = field(default=0, compare=False)


def _same_call(d: type, v: type, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Both constructors on the same arguments: the same error type, or two values with equal reprs."""
    try:
        dv = d(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            v(*args, **kwargs)
        return None, None
    vv = v(*args, **kwargs)
    assert repr(vv).replace("VPoint", "DPoint").replace("VState", "DState") == repr(dv)
    return dv, vv


@given(st.lists(st.integers(-3, 3), max_size=4), st.dictionaries(st.sampled_from("xyzw"), st.integers(-3, 3)))
def test_frozen_values_construct_compare_and_hash_as_dataclasses(args: list[int], kwargs: dict[str, int]) -> None:
    dv, vv = _same_call(DPoint, VPoint, *args, **kwargs)
    if dv is None:
        return
    other_d, other_v = DPoint(1, 2, 3), VPoint(1, 2, 3)
    assert (vv == other_v) == (dv == other_d) and (vv != other_v) == (dv != other_d)
    assert hash(vv) == hash(dv)  # both hash the tuple of the fields
    assert vv != dv and vv != (vv.x, vv.y, vv.z)  # another class is never equal
    assert pickle.loads(pickle.dumps(vv)) == vv and copy.deepcopy(vv) == vv and copy.copy(vv) == vv
    assert VPoint.__match_args__ == DPoint.__match_args__ == ("x", "y", "z")
    match vv:
        case VPoint(x, y, z):
            assert (x, y, z) == (dv.x, dv.y, dv.z)
        case _:
            pytest.fail("a value did not match its own class pattern")


def test_frozen_values_refuse_changes() -> None:
    point = VPoint(1)
    for change in (lambda: setattr(point, "x", 2), lambda: setattr(point, "new", 2), lambda: delattr(point, "y")):
        with pytest.raises(FrozenInstanceError) as exc:
            change()
        assert isinstance(exc.value, AttributeError)  # as dataclasses.FrozenInstanceError is
    assert point == VPoint(1, 0, 7) and not hasattr(point, "__dict__") and VPoint.KIND == "point"
    assert replace(point, z=1) == VPoint(1, 0, 1) and fields(point) == ("x", "y", "z")


def test_mutable_values_as_dataclasses() -> None:
    dv, vv = _same_call(DState, VState, "m", 5)
    assert "5" not in repr(vv)  # repr=False: a key never shows
    assert vv.tids == [] and vv.tids is not VState("m", 5).tids  # a fresh list each time
    vv.seen, dv.seen = 3, 3
    assert vv == VState("m", 5) and dv == DState("m", 5)  # compare=False
    vv.tids.append(1)
    assert vv != VState("m", 5)
    with pytest.raises(TypeError):
        hash(vv)  # mutable: unhashable, as a dataclass with eq
    for args, kwargs in (((), {}), (("m",), {}), (("m", 1, [], 0, 9), {}), (("m",), {"key": 1, "name": "n"})):
        _same_call(DState, VState, *args, **kwargs)


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError):

        class Bad(Value):
            a: int = 0
            b: int


@pytest.mark.parametrize("kind", sorted(set(REGISTRY.values()), key=lambda k: k.__name__))
def test_every_token_type_is_a_frozen_value_without_a_dict(kind: type[sts.Token]) -> None:
    assert issubclass(kind, Value)
    assert not hasattr(kind.__new__(kind), "__dict__")


# ---------------------------------------------------------------- mita.sts: names loaded on first use


def test_every_public_name_resolves_to_its_module() -> None:
    assert sorted(sts.__all__) == sorted(name for names in sts.MODULES.values() for name in names)
    for module, names in sts.MODULES.items():
        for name in names:
            assert getattr(sts, name) is getattr(importlib.import_module(f"mita.sts.{module}"), name)
    with pytest.raises(AttributeError):
        sts.no_such_name  # noqa: B018


def test_the_type_checking_imports_are_the_table() -> None:
    """mypy reads the imports under TYPE_CHECKING, the runtime reads MODULES: the same names from the same
    modules."""
    tree = ast.parse(Path(sts.__file__).read_text())
    imported: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            imported[node.module] = tuple(alias.name for alias in node.names)
    assert imported == sts.MODULES


def test_encoding_one_token_loads_neither_key_derivation_nor_dataclasses() -> None:
    probe = (
        "import sys; from mita import sts; "
        "sts.encode(sts.TransferCredit(1, 10), sts.EA.STA, 1); print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    )
    assert {"mita.sts.codec", "mita.sts.tokens"} <= loaded
    assert not loaded & {"mita.sts.dkga", "mita.sts.keychange", "mita.sts.identity", "hmac", "dataclasses", "typing"}
