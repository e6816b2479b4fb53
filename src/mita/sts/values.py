"""Frozen value classes that behave as ``@dataclass(frozen=True, slots=True)`` ones, for less start-up time.

Why not :mod:`dataclasses`: it writes each class's methods as source and compiles them, about a millisecond a
class, and importing it (with :mod:`inspect`) costs as much again as the whole token engine. ``mita token credit``
defines every token type (the registry lists them all), so the 15 types cost ~15 ms of a command meant to start in
a few tens. Here the methods are written once, in :class:`Value`, and read the class's field list; defining a
class only turns its annotations into that list, ``__slots__`` and ``__match_args__`` (:class:`_ValueType`).

Behaviour, the same as the dataclass's:

==================  ============================================================================================
fields              the annotated names that are not ``ClassVar``, in order, a parent's first
constructor         positional or keyword arguments; a field with a default in the class body may be left out
``==``              an instance of the same class with equal fields (else ``NotImplemented``)
``hash``            of the fields' tuple
``repr``            ``Name(field=value!r, ...)``
immutable           assigning or deleting an attribute raises :class:`FrozenInstanceError` (an AttributeError)
``match``           ``__match_args__`` is the field names
pickle, copy        by the constructor, with the fields in order
==================  ============================================================================================

Type checkers see frozen dataclasses (``dataclass_transform``, PEP 681). Field defaults must be immutable (there
is no ``default_factory``): every default of the token types is a number or an enum member.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a command's start-up time
if TYPE_CHECKING:
    from typing import Any, ClassVar, dataclass_transform
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda cls: cls


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen value (as :class:`dataclasses.FrozenInstanceError`)."""


@dataclass_transform(frozen_default=True)
class _ValueType(type):
    """Makes a class's field list, ``__slots__``, ``__match_args__`` and defaults from its annotations."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> _ValueType:
        inherited: tuple[str, ...] = ()
        defaults: dict[str, Any] = {}
        for base in bases:
            inherited += getattr(base, "_fields", ())
            defaults |= getattr(base, "_defaults", {})
        own = tuple(n for n, a in namespace.get("__annotations__", {}).items() if not _is_class_var(a))
        if set(own) & set(inherited):
            raise TypeError(f"{name} redeclares a field of its parent")
        for field in own:
            if field in namespace:  # a default: kept apart, as a slot cannot share its name with a class attribute
                defaults[field] = namespace.pop(field)
        fields = inherited + own
        required = [f for f in fields if f not in defaults]
        if fields[: len(required)] != tuple(required):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        namespace.update(__slots__=own, __match_args__=fields, _fields=fields, _defaults=defaults)
        return super().__new__(mcs, name, bases, namespace, **kwargs)


def _is_class_var(annotation: object) -> bool:
    """``ClassVar[...]``, as a string (``from __future__ import annotations``) or an object."""
    return str(annotation).startswith(("ClassVar", "typing.ClassVar"))


class Value(metaclass=_ValueType):
    """Base of the frozen value classes: the methods a frozen dataclass has, reading ``_fields``."""

    _fields: ClassVar[tuple[str, ...]]
    _defaults: ClassVar[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        names = cls._fields
        if len(args) > len(names):
            raise TypeError(f"{cls.__qualname__}() takes {len(names)} arguments but {len(args)} were given")
        setter = object.__setattr__
        for name, value in zip(names, args, strict=False):  # fewer args than fields: the rest below
            setter(self, name, value)
        if len(args) == len(names) and not kwargs:
            return  # the common call, every field given in order
        defaults = cls._defaults
        for name in names[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in defaults:
                value = defaults[name]
            else:
                raise TypeError(f"{cls.__qualname__}() missing required argument: {name!r}")
            setter(self, name, value)
        for name in kwargs:
            why = "multiple values for" if name in names else "an unexpected keyword"
            raise TypeError(f"{cls.__qualname__}() got {why} argument {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._fields])

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[Value], tuple[Any, ...]]:
        return type(self), self._values()
