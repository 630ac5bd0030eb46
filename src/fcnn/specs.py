"""Rebuild any model from its spec (docs/architecture.md#specs).

Every ``Layer`` carries ``spec``, a JSON description of the constructor calls that
built it; ``from_spec`` makes the same model again from it, with no registry name::

    spec = dump_spec(model)                    # {"spec_version": 2, "type": "Sequential", ...}
    again = from_spec(json.loads(json.dumps(spec)))
    assert again.spec == model.spec           # same layers, same params paths and shapes

One table, ``LAYERS``, maps each leaf spec ``type`` to its constructor, which takes the
spec's other fields as keyword arguments (``{"type": "Conv2d", "out_channels": 8, ...}``
-> ``Conv2d(out_channels=8, ...)``); a field the spec lacks takes the constructor's
default, so a spec written before a layer grew a new option still loads. The
containers (``Sequential``, ``Residual``, ``Concat``) rebuild their children first.
A child's ``name`` in its container's spec becomes the rebuilt layer's name.

A layer of your own is rebuilt by the function that built it, marked
``@fcnn.rebuildable`` (its spec records ``"builder": "module:function"`` and the
arguments). ``from_spec`` never imports that code unless told to trust it
(``trust_code=True``); without that it raises ``CodeNotTrustedError`` saying what to
pass. Alternatively hand it your constructors (``layers={"gate": mynets.gate}``): then
nothing is imported. No spec is ever evaluated, executed or unpickled.

Format versions (``SPEC_VERSION``; ``dump_spec`` writes ``"spec_version"`` at the top):

- 1: fcnn 0.2.0's specs, which carry no version: Sequential and the leaf layers.
- 2: adds ``Residual``, ``Concat``, ``GlobalAvgPool2d`` and ``"builder"``.

Each version reads every older one unchanged (a spec without a version is read as 1).

Code named by a path is imported by ``import_function("module:function")`` alone (from
the current folder or ``sys.path``, one-line errors); ``check_rebuildable(model)`` says
whether another program could rebuild ``model`` from its spec (``fcnn.save_trained`` and
``train.py --model module:function`` check it before writing a checkpoint).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import ModuleType
from typing import Any

from .layers.activation import Gelu, LeakyRelu, Relu, Sigmoid, Tanh
from .layers.base import Layer
from .layers.conv import Conv2d
from .layers.conv_transpose import ConvTranspose2d
from .layers.dense import Dense
from .layers.dropout import Dropout, SpatialDropout2d
from .layers.norm import BatchNorm1d, BatchNorm2d
from .layers.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .layers.shape import Flatten
from .model import concat, residual, sequential

__all__ = [
    "LAYERS",
    "SPEC_VERSION",
    "VERSION_KEY",
    "CodeNotTrustedError",
    "SpecError",
    "check_rebuildable",
    "dump_spec",
    "from_spec",
    "import_function",
    "spec_version",
]

SPEC_VERSION = 2
"""The spec format this fcnn writes; it reads this one and every older one."""

VERSION_KEY = "spec_version"

LAYERS: dict[str, Callable[..., Layer]] = {
    "Conv2d": Conv2d,
    "Dense": Dense,
    "Relu": Relu,
    "MaxPool2d": MaxPool2d,
    "AvgPool2d": AvgPool2d,
    "GlobalAvgPool2d": GlobalAvgPool2d,
    "Flatten": Flatten,
    "BatchNorm2d": BatchNorm2d,
    "BatchNorm1d": BatchNorm1d,
    "Dropout": Dropout,
    "SpatialDropout2d": SpatialDropout2d,
    "ConvTranspose2d": ConvTranspose2d,
    "LeakyRelu": LeakyRelu,
    "Gelu": Gelu,
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
}
"""Leaf spec type -> constructor taking the spec's other fields as keyword arguments.

A new layer adds one line here, and its constructor accepts exactly the fields its
``to_spec`` writes."""

_META = ("type", "name", "builder")  # spec keys that are not constructor arguments


class SpecError(ValueError):
    """A spec that cannot be rebuilt: malformed, of an unknown type, or too new."""


class CodeNotTrustedError(SpecError):
    """A spec names code to import (a layer of a user's own) and the caller did not
    allow it. ``builder`` is the ``module:function`` path it names, ``where`` the layer's
    path in the model (``"stage1/gate1"``)."""

    def __init__(self, message: str, builder: str, where: str = "") -> None:
        super().__init__(message)
        self.builder = builder
        self.where = where


def dump_spec(model: Layer) -> dict[str, Any]:
    """What to store to rebuild ``model``: its spec with ``"spec_version"`` at the top."""
    if not isinstance(model, Layer):
        raise TypeError(f"dump_spec: model must be a Layer, got {type(model).__name__}")
    return {VERSION_KEY: SPEC_VERSION, **model.spec}


def spec_version(spec: Mapping[str, Any]) -> int:
    """The format version of a stored spec: its ``"spec_version"``, or 1 (fcnn 0.2.0) when
    it has none. Raises ``SpecError`` for a version that is not an int in
    ``[1, SPEC_VERSION]`` (a newer fcnn wrote it)."""
    if not isinstance(spec, Mapping):
        raise SpecError(f"from_spec: a spec must be an object, got {type(spec).__name__}")
    version = spec.get(VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecError(f"from_spec: spec_version must be an int >= 1, got {version!r}")
    if version > SPEC_VERSION:
        raise SpecError(
            f"from_spec: the spec has format version {version}, newer than this fcnn reads "
            f"({SPEC_VERSION}); upgrade fcnn to rebuild it"
        )
    return version


def from_spec(
    spec: Mapping[str, Any],
    *,
    trust_code: bool = False,
    layers: Mapping[str, Callable[..., Layer]] | None = None,
) -> Layer:
    """The model ``spec`` describes: a ``Layer`` whose ``spec`` equals it (without the
    version; a field the spec lacks shows the constructor's default).

    ``spec``: a ``Layer.spec`` or ``dump_spec``'s output (any version up to
    ``SPEC_VERSION``, fcnn 0.2.0's included). ``layers``: your own constructors by spec
    type, consulted before fcnn's table (not for the containers). ``trust_code``: import
    the ``"builder"`` a user layer's spec names when ``layers`` does not have its type;
    only for specs from a source you trust, since it runs that code.

    Raises ``SpecError`` (a ``ValueError``) naming the layer's path for a malformed spec,
    an unknown type or arguments its constructor refuses, and ``CodeNotTrustedError``
    when the spec needs code imported and ``trust_code`` is false.
    """
    spec_version(spec)
    body = {k: v for k, v in spec.items() if k != VERSION_KEY}
    return _Builder(trust_code, dict(layers or {})).build(body, "")


class _Builder:
    """One ``from_spec`` call: what the caller allows, and the walk over the spec tree."""

    def __init__(self, trust_code: bool, own: dict[str, Callable[..., Layer]]) -> None:
        self.trust_code = trust_code
        self.own = own

    def build(self, spec: Any, path: str) -> Layer:
        """The layer of ``spec`` at ``path`` ("" for the model), named as the spec says."""
        where = path or "model"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
            got = dict(spec) if isinstance(spec, Mapping) else type(spec).__name__
            raise SpecError(f"from_spec: {where}: a layer spec needs a 'type' string, got {got}")
        kind = spec["type"]
        container = _CONTAINERS.get(kind)
        if container is not None:
            try:
                layer = container(self, spec, path)
            except SpecError:
                raise
            except (ValueError, TypeError) as err:  # the combinator refused its arguments
                raise SpecError(f"from_spec: {where}: {err}") from err
        else:
            ctor = self._constructor(spec, where)
            layer = _call(ctor, {k: v for k, v in spec.items() if k not in _META}, kind, where)
        name = spec.get("name")
        if name is not None and not isinstance(name, str):
            raise SpecError(f"from_spec: {where}: name must be a string, got {name!r}")
        return layer if name is None else replace(layer, name=name)

    def child(self, entry: Any, path: str, what: str) -> Layer:
        """A container's named child: ``entry`` must hold a ``name`` string."""
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            raise SpecError(f"from_spec: {path or 'model'}: each of {what} needs a 'name' string")
        return self.build(entry, f"{path}/{name}" if path else name)

    def _constructor(self, spec: Mapping[str, Any], where: str) -> Callable[..., Layer]:
        kind, builder = spec["type"], spec.get("builder")
        if kind in self.own:
            return self.own[kind]
        if builder is not None:
            return self._import(builder, kind, where)
        if kind in LAYERS:
            return LAYERS[kind]
        raise SpecError(
            f"from_spec: {where}: unknown layer type {kind!r}; fcnn's types are "
            f"{sorted([*LAYERS, *_CONTAINERS])}; a layer of your own is rebuilt by a function "
            f"marked @fcnn.rebuildable, or pass layers={{{kind!r}: its constructor}}"
        )

    def _import(self, builder: Any, kind: str, where: str) -> Callable[..., Layer]:
        """The function at ``builder`` ("module:qualname"), imported only with trust."""
        module, _, qualname = builder.partition(":") if isinstance(builder, str) else ("", "", "")
        if not module or not qualname:
            raise SpecError(
                f"from_spec: {where}: builder must be 'module:function', got {builder!r}"
            )
        if not self.trust_code:
            raise CodeNotTrustedError(
                f"from_spec: {where}: layer {kind!r} is built by code, {builder}, which loading "
                "would import and run; if you trust this spec, pass trust_code=True (Python) "
                f"or --trust-code (command line), or pass layers={{{kind!r}: ...}}",
                builder,
                where,
            )
        try:
            return import_function(builder)
        except ValueError as err:
            raise SpecError(f"from_spec: {where}: cannot import {builder} ({err})") from err


def _call(ctor: Callable[..., Layer], fields: dict[str, Any], kind: str, where: str) -> Layer:
    """``ctor(**fields)``, its refusals as ``SpecError`` naming the layer."""
    try:
        layer = ctor(**fields)
    except (TypeError, ValueError) as err:
        raise SpecError(f"from_spec: {where}: cannot rebuild {kind} from {fields}: {err}") from err
    if not isinstance(layer, Layer):
        raise SpecError(f"from_spec: {where}: {kind}'s constructor returned a non-Layer")
    return layer


def _entries(spec: Mapping[str, Any], key: str, where: str) -> list[Any]:
    entries = spec.get(key)
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"from_spec: {where}: {spec['type']} needs a non-empty list {key!r}")
    return entries


def _sequential(b: _Builder, spec: Mapping[str, Any], path: str) -> Layer:
    entries = _entries(spec, "layers", path or "model")
    return sequential(*(b.child(e, path, "its layers") for e in entries))


def _residual(b: _Builder, spec: Mapping[str, Any], path: str) -> Layer:
    sub = f"{path}/" if path else ""
    block = b.build(spec.get("block"), f"{sub}block")
    short = spec.get("shortcut")
    return residual(block, None if short is None else b.build(short, f"{sub}shortcut"))


def _concat(b: _Builder, spec: Mapping[str, Any], path: str) -> Layer:
    entries = _entries(spec, "branches", path or "model")
    return concat(*(b.child(e, path, "its branches") for e in entries), axis=spec.get("axis", 1))


_CONTAINERS: dict[str, Callable[[_Builder, Mapping[str, Any], str], Layer]] = {
    "Sequential": _sequential,
    "Residual": _residual,
    "Concat": _concat,
}


# --- code named by a path: a user's layer builders, train.py --model module:function ------


def _import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with the current folder searched first, as
    ``python -m`` and ``python -c`` search it (``python script.py`` searches the script's
    folder instead), so a user's ``mynets.py`` beside the command is found by every command
    line. The folder is on ``sys.path`` only during the import."""
    here = os.getcwd()
    added = not any(os.path.abspath(p or os.curdir) == here for p in sys.path)
    if added:
        sys.path.insert(0, here)
    try:
        importlib.invalidate_caches()  # a file written since the last import is found
        return importlib.import_module(name)
    finally:
        if added and here in sys.path:
            sys.path.remove(here)


_FCNN = os.path.dirname(os.path.abspath(__file__))


def where_raised(err: BaseException) -> str:
    """`` (mynets.py, line 3)``: where a user's code raised ``err``, the innermost frame of
    its traceback outside fcnn (else the innermost), or ``""`` without a traceback."""
    if isinstance(err, SyntaxError) and err.filename:
        return f" ({os.path.basename(err.filename)}, line {err.lineno})"
    frames = list(traceback.extract_tb(err.__traceback__))
    outside = [f for f in frames if not os.path.abspath(f.filename).startswith(_FCNN + os.sep)]
    if not frames:
        return ""
    frame = (outside or frames)[-1]
    return f" ({os.path.basename(frame.filename)}, line {frame.lineno})"


def import_function(path: str) -> Callable[..., Any]:
    """The function at ``path``, ``"module:function"`` (``function`` may be dotted), imported
    from the current folder or ``sys.path``. It runs the module's code: call it only for a
    path the user gave or trusts.

    Raises ``ValueError`` with one line for a malformed path, a module that is not found,
    a module whose import raised (the exception and where), a missing name, or a name that
    is not callable.
    """
    module, _, qualname = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not module or not qualname:
        raise ValueError(f"must be 'module:function', got {path!r}")
    try:
        found: Any = _import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module + ".").startswith(err.name + "."):
            raise ValueError(
                f"no module named {err.name!r} in the current folder or on the Python path"
            ) from err
        raise ValueError(f"importing {module} failed: {err}{where_raised(err)}") from err
    except Exception as err:  # the module's own code raised: say what and where
        raise ValueError(
            f"importing {module} raised {type(err).__name__}: {err}{where_raised(err)}"
        ) from err
    where = getattr(found, "__file__", None) or module
    for part in qualname.split("."):
        if not hasattr(found, part):
            raise ValueError(f"module {module} ({where}) has no {qualname!r}")
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"{path} is not a function (it is {type(found).__name__})")
    return found  # type: ignore[no-any-return]


def _builders(spec: Any) -> list[str]:
    """Every ``"builder"`` path in a spec tree."""
    if isinstance(spec, Mapping):
        own = [spec["builder"]] if isinstance(spec.get("builder"), str) else []
        return own + [b for v in spec.values() for b in _builders(v)]
    return [b for v in spec for b in _builders(v)] if isinstance(spec, list) else []


def check_rebuildable(model: Layer) -> None:
    """``SpecError`` unless ``from_spec`` can rebuild ``model`` from its spec in another
    program: every layer is fcnn's own or built by an importable ``@fcnn.rebuildable``
    function (not one of the script being run, ``__main__``), and the rebuilt model has
    the same spec. Imports the builders the spec names, as building ``model`` did."""
    spec = dump_spec(model)
    for builder in _builders(spec):
        if builder.startswith("__main__:"):
            raise SpecError(
                f"a layer is built by {builder}, a function of the script being run, which "
                "no other program can import; move it into a module (a .py file) you import"
            )
    again = from_spec(spec, trust_code=True)
    if again.spec != model.spec:
        raise SpecError("the model rebuilt from its spec has another spec than the model")
