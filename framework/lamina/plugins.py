"""Plugin discovery and registration with pluggy.

The built-in components register through the same hooks as installed plugins (found via
the entry-point group `lamina`). Each entry point is loaded on its own: one that fails to
import or to register is reported (`lamina plugins`) and the rest keep working. A
plugin's registrations from one hook land together or not at all.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

import pluggy

from . import hookspecs
from .errors import RegistrationError
from .registry import Registry, singular

ENTRY_POINT_GROUP = "lamina"
CORE_PLUGIN = "lamina"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or could not register something."""


@dataclass
class BackendEntry:
    factory: type
    plugin: str


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str
    registered: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


@dataclass
class PluginFailure:
    name: str
    distribution: str
    error: str


class LaminaPlugins:
    """Everything the plugins registered: backends, kernels, components, and who gave what."""

    def __init__(self, disabled: set[str] | None = None):
        self.pm = pluggy.PluginManager("lamina")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.backends: dict[str, BackendEntry] = {}
        self.kernels: dict[str, dict[str, Callable]] = {}
        self.kernel_owners: dict[tuple[str, str], str] = {}
        self.info: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.disabled = set(disabled or ())

    # ---- discovery ----------------------------------------------------------------------
    def load(self) -> None:
        from . import builtins

        self._add(builtins, CORE_PLUGIN, _version_of("lamina"), "lamina")
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in self.disabled:
                continue
            if ep.name in self.info:        # two distributions claim one plugin name: never shadow silently
                self._fail(ep.name, dist, f"not loaded: the plugin name {ep.name!r} is already taken by "
                                          f"distribution {self.info[ep.name].distribution!r}")
                continue
            try:
                module = ep.load()
            except Exception as err:  # a broken plugin must not take the others down
                self._fail(ep.name, dist, f"import failed: {type(err).__name__}: {err}")
                continue
            self._add(module, ep.name, ep.dist.version if ep.dist is not None else "?", dist)
        self._register_all()

    def add_plugin(self, module, name: str, version: str = "?", distribution: str = "?") -> None:
        """Register an object or module as a plugin now (for tests and embedding)."""
        self._add(module, name, version, distribution)
        self._register_all(only=name)
        for backend_name in self.kernels:
            from .backend import _instances

            if backend_name in _instances:
                for op_name, fn in self.kernels[backend_name].items():
                    _instances[backend_name].add_kernel(op_name, fn)

    def _add(self, module, name, version, distribution) -> None:
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except Exception as err:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            self._fail(name, distribution, f"registration failed: {err}")
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or ())
        self.info[name] = PluginInfo(name, version, distribution, hooks=hooks)

    def _fail(self, name: str, distribution: str, error: str) -> None:
        self.failures.append(PluginFailure(name, distribution, error))
        warnings.warn(f"lamina plugin {name!r} ({distribution}): {error}", PluginWarning, stacklevel=3)

    # ---- registration -------------------------------------------------------------------
    def _register_all(self, only: str | None = None) -> None:
        for hook_name, handler in (("lamina_register_ops", self._commit_ops),
                                   ("lamina_register_backends", self._commit_backends),
                                   ("lamina_register_kernels", self._commit_kernels),
                                   ("lamina_register_components", self._commit_components)):
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if only is not None and impl.plugin_name != only:
                    continue
                staged: list[tuple] = []
                try:
                    impl.function(**{arg: (lambda *a, **k: staged.append((a, k)))
                                     for arg in impl.argnames})
                    handler(impl.plugin_name, staged)
                except Exception as err:
                    info = self.info.get(impl.plugin_name)
                    self._fail(impl.plugin_name, info.distribution if info else "?",
                               f"{hook_name} failed: {type(err).__name__}: {err}")

    def _record(self, plugin: str, what: str) -> None:
        registered = self.info[plugin].registered
        if what not in registered:
            registered.append(what)

    def _commit_ops(self, plugin, staged):
        from .ops import registry as op_registry

        ops = [(args[0], kwargs.get("override", False)) for args, kwargs in staged]
        for op, override in ops:
            if op.name in op_registry._ops and not override:
                raise RegistrationError(f"op {op.name!r} is registered twice: by plugin "
                                        f"{op_registry.op_owner(op.name)!r} and by plugin {plugin!r}")
        for op, override in ops:
            op_registry.register_op(op, plugin, override=True)
            self._record(plugin, f"op:{op.name}")

    def _commit_backends(self, plugin, staged):
        entries = []
        for args, kwargs in staged:
            name, factory = args
            if name in self.backends and not kwargs.get("override", False):
                raise RegistrationError(f"backend {name!r} is registered twice: by plugin "
                                        f"{self.backends[name].plugin!r} and by plugin {plugin!r}")
            entries.append((name, factory))
        for name, factory in entries:
            self.backends[name] = BackendEntry(factory, plugin)
            self._record(plugin, f"backend:{name}")

    def _commit_kernels(self, plugin, staged):
        entries = []
        for args, kwargs in staged:
            backend, op_name, fn = args
            owner = self.kernel_owners.get((backend, op_name))
            if owner is not None and not kwargs.get("override", False):
                raise RegistrationError(f"kernel {op_name!r} for backend {backend!r} is registered twice: "
                                        f"by plugin {owner!r} and by plugin {plugin!r}")
            entries.append((backend, op_name, fn))
        for backend, op_name, fn in entries:
            self.kernels.setdefault(backend, {})[op_name] = fn
            self.kernel_owners[backend, op_name] = plugin
            self._record(plugin, f"kernel:{backend}/{op_name}")

    def _commit_components(self, plugin, staged):
        entries = []
        for args, kwargs in staged:
            kind, name, obj = args
            self.registry.check_kind(kind)
            message = self.registry.conflict(kind, name, plugin, kwargs.get("override", False))
            if message:
                raise RegistrationError(message)
            entries.append((kind, name, obj))
        for kind, name, obj in entries:
            self.registry.add(kind, name, obj, plugin)
            self._record(plugin, f"{singular(kind)}:{name}")

    def register_commands(self, cli) -> None:
        """Let every plugin add its click commands to `cli`."""
        for impl in self.pm.hook.lamina_register_commands.get_hookimpls():
            before = set(cli.commands)
            try:
                impl.function(**{arg: cli for arg in impl.argnames})
            except Exception as err:
                info = self.info.get(impl.plugin_name)
                self._fail(impl.plugin_name, info.distribution if info else "?",
                           f"lamina_register_commands failed: {type(err).__name__}: {err}")
                continue
            for name in sorted(set(cli.commands) - before):
                self._record(impl.plugin_name, f"command:{name}")


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "?"


_manager: LaminaPlugins | None = None


def get_manager() -> LaminaPlugins:
    """The plugin manager, loading every plugin on first use (never at import time)."""
    global _manager
    if _manager is None:
        from .config import resolve

        manager = LaminaPlugins(disabled=set(resolve().disabled_plugins.value))
        _manager = manager
        try:
            manager.load()
        except BaseException:
            _manager = None
            raise
    return _manager


def reset() -> None:
    """Forget every plugin and backend instance, so the next use rediscovers them (for tests)."""
    global _manager
    from . import backend
    from .ops import registry as op_registry

    _manager = None
    backend._instances.clear()
    op_registry._ops.clear()
    op_registry._owners.clear()


