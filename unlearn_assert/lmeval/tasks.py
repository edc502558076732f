"""lm-eval tasks, built (their data read) before any model loads.

Why first: a task whose data is not on this machine (a hub data set missing from the local
Hugging Face cache, offline) must fail in a second with one line that names the task and the fix,
not after minutes of loading and quantizing a model. lm-eval reads a task's data when it builds the
task, so :func:`load_tasks` builds every task through lm-eval's own ``TaskManager`` and keeps the
built objects; :func:`unlearn_assert.lmeval.evaluate.evaluate` hands those same objects to
``simple_evaluate`` (one read of the data for every model of a run).

A task is named as the user has it: an lm-eval task, group or tag name (``mmlu``, ``wmdp_bio``,
``arc_easy``), a task YAML path (with ``include_path`` for the folders its ``include:`` and names
refer to), an inline config dict, or a WMDP-form data file (:mod:`.wmdp`).

Building lm-eval's index of its ~15,000 built-in task files takes seconds to tens of seconds, so it
is built only for a spec that needs it (a built-in task name, or a group config that names other
tasks), once per process for the same include folders; a WMDP-form file, a task YAML and a name
in the user's include folders are built without it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..fs import user_path
from ..plain import Digest
from . import require_lm_eval
from .wmdp import SUFFIXES, WmdpForm, wmdp_task_config

__all__ = ["LoadedTasks", "TaskEntry", "TaskSpec", "hub_offline", "load_tasks", "task_manager"]

#: what names a task: an lm-eval name, a YAML path, a WMDP-form file, or an inline lm-eval config
TaskSpec = str | Path | WmdpForm | dict[str, Any]
_YAML = (".yaml", ".yml")
OFFLINE_FIX = (
    "run it once where the Hugging Face hub is reachable (lm-eval then reads it from the local cache; copy HF_HOME to "
    "an offline machine), or give the questions as a WMDP-form file (question, choices, answer)"
)


@dataclass
class TaskEntry:
    """One task spec, built: lm-eval's top-level objects for it (a Task, or a Group holding Tasks)."""

    #: the spec as the user gave it (a name, a path, or ``inline:<task>`` for a config dict)
    spec: str
    #: lm-eval's name of the task or group (the key of its aggregate in lm-eval's results)
    name: str
    #: the lm-eval ``Task`` / ``Group`` objects, as ``TaskManager.load`` built them
    objects: tuple[Any, ...]
    #: the leaf tasks' names (whose per-item samples make the items), sorted
    leaves: tuple[str, ...]
    #: the config dict when the spec was a WMDP-form file (to show or write as a YAML)
    config: dict[str, Any] | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    def leaf_tasks(self) -> dict[str, Any]:
        """Leaf task name -> lm-eval Task object."""
        out: dict[str, Any] = {}
        for obj in self.objects:
            for task in obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]:
                out[task.task_name] = task
        return out

    def fingerprint(self) -> str:
        """What this task's numbers depend on besides the model: lm-eval's version, every leaf task's
        config as lm-eval dumps it, and the content of its evaluated documents (never a path). For a
        row's cache key."""
        if self._fingerprint is None:
            import lm_eval

            digest = Digest().text(f"lm_eval {lm_eval.__version__}\n")
            for name, task in sorted(self.leaf_tasks().items()):
                config = task.dump_config()
                config.pop(
                    "metadata", None
                )  # run metadata (model args), and the data file's hash, which the docs below cover
                if isinstance(config.get("dataset_kwargs"), dict):
                    config["dataset_kwargs"] = {k: v for k, v in config["dataset_kwargs"].items() if k != "data_files"}
                digest.text(json.dumps({"task": name, "config": config}, sort_keys=True, default=str))
                for doc in task.eval_docs:
                    digest.text(json.dumps(doc, sort_keys=True, default=str)).data(b"\n")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


@dataclass
class LoadedTasks:
    """Every task of a run, built; pass it to :func:`unlearn_assert.lmeval.evaluate.evaluate` once per model."""

    entries: tuple[TaskEntry, ...]
    #: the lm-eval ``TaskManager`` that built them (``simple_evaluate`` gets the same one)
    manager: Any

    @property
    def objects(self) -> list[Any]:
        return [obj for entry in self.entries for obj in entry.objects]


@contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face hub off for the block: ``datasets`` and ``huggingface_hub`` read their local caches only.
    They read HF_HUB_OFFLINE / HF_DATASETS_OFFLINE when imported, so their module constants (what they check at
    each call) are set, and restored afterwards."""
    import datasets.config
    import huggingface_hub.constants

    dc, hc = datasets.config, huggingface_hub.constants
    saved = (dc.HF_HUB_OFFLINE, dc.HF_DATASETS_OFFLINE, hc.HF_HUB_OFFLINE)
    dc.HF_HUB_OFFLINE = dc.HF_DATASETS_OFFLINE = hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dc.HF_HUB_OFFLINE, dc.HF_DATASETS_OFFLINE, hc.HF_HUB_OFFLINE = saved


@lru_cache(maxsize=8)
def _manager(include_defaults: bool, include: tuple[str, ...]) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include) or None, include_defaults=include_defaults)


def task_manager(
    include_path: str | Path | Sequence[str | Path] | None = None, *, include_defaults: bool = True
) -> Any:
    """lm-eval's ``TaskManager`` for the built-in tasks (when ``include_defaults``) and the task folders
    ``include_path`` (lm-eval's ``--include_path``), built once per process for the same folders."""
    require_lm_eval()
    return _manager(include_defaults, _include_dirs(include_path))


def _include_dirs(include_path: str | Path | Sequence[str | Path] | None) -> tuple[str, ...]:
    if include_path is None:
        return ()
    raw = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    dirs: list[str] = []
    for item in raw:
        path = user_path(item)
        if not path.is_dir():
            raise ConfigError(
                f"lm-eval include path '{item}' is not a directory; pass the folder that holds your task YAMLs"
            )
        dirs.append(str(path.resolve()))
    return tuple(dirs)


#: which task index a spec needs: none (a config of its own), the user's folders, or lm-eval's built-in tasks too
_OWN, _NAME, _BUILTIN = "own", "name", "builtin"


def _is_group_yaml(path: Path) -> bool:
    """A group YAML names other tasks, which only lm-eval's index resolves."""
    try:
        from lm_eval.tasks._index import Kind, TaskIndex

        entry = TaskIndex.entry_from_path(path)
        return entry is None or entry.kind is Kind.GROUP
    except Exception:  # an lm-eval without this helper, or a YAML it cannot read: let the full index build it
        return True


def _classify(spec: TaskSpec) -> tuple[str, str | dict[str, Any], dict[str, Any] | None, str]:
    """(label, what TaskManager.load takes, the WMDP-form config or None, the index it needs)."""
    if isinstance(spec, WmdpForm):
        config = wmdp_task_config(spec)
        return spec.path, config, config, _OWN
    if isinstance(spec, dict):
        if "task" not in spec and "group" not in spec:
            raise ConfigError(f"an inline lm-eval config needs a 'task' (or 'group') key; got keys {sorted(spec)}")
        return (
            f"inline:{spec.get('task') or spec.get('group')}",
            dict(spec),
            None,
            _BUILTIN if "group" in spec else _OWN,
        )
    text = str(spec).strip()
    if not text:
        raise ConfigError(
            "an lm-eval task spec is empty; give a task name (e.g. mmlu), a task YAML or a WMDP-form file"
        )
    suffix = Path(text).suffix.lower()
    if suffix in SUFFIXES:
        config = wmdp_task_config(WmdpForm(text))
        return text, config, config, _OWN
    if suffix in _YAML:
        path = user_path(text)
        if not path.is_file():
            raise ConfigError(f"lm-eval task YAML '{text}' does not exist; pass the path of a task config file")
        return text, str(path.resolve()), None, _BUILTIN if _is_group_yaml(path) else _OWN
    return text, text, None, _NAME


def _unknown(name: str, manager: Any) -> ConfigError:
    import lm_eval

    close = difflib.get_close_matches(name, manager.all_tasks, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(
        f"'{name}' is not an lm-eval {lm_eval.__version__} task, group or tag{hint}, nor a task YAML; list them with "
        "`lm-eval ls tasks`, or pass the folder of your own task YAMLs as the include path"
    )


def _is_missing_data(exc: BaseException) -> bool:
    """A data set that cannot be read on this machine: offline and not in the local cache, or not found."""
    while exc is not None:
        if isinstance(exc, (ConnectionError, FileNotFoundError, TimeoutError)):
            return True
        if type(exc).__name__ in (
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "DatasetNotFoundError",
            "DataFilesNotFoundError",
        ):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _roots(loaded: dict[str, Any]) -> tuple[Any, ...]:
    """The top-level objects of one ``TaskManager.load`` result: groups and tasks no group holds."""
    children = {c for kids in (loaded.get("group_map") or {}).values() for c in kids}
    groups = [g for name, g in (loaded.get("groups") or {}).items() if name not in children]
    tasks = [t for name, t in loaded["tasks"].items() if name not in children and not any(name in g for g in groups)]
    return (*groups, *tasks)


def load_tasks(
    specs: Sequence[TaskSpec] | TaskSpec,
    include_path: str | Path | Sequence[str | Path] | None = None,
    *,
    offline: bool = False,
) -> LoadedTasks:
    """Build every task of ``specs`` through lm-eval's ``TaskManager`` (reading its data), before any
    model is loaded. An unknown name, a broken YAML or data that is not on this machine is one line
    (:class:`ConfigError` / :class:`DataError`) naming the task and the fix. ``offline``: read the data from the
    local Hugging Face cache only, even where the hub is reachable (:func:`hub_offline`; what a gate does)."""
    if offline:
        with hub_offline():
            return load_tasks(specs, include_path)
    require_lm_eval()
    items = [specs] if isinstance(specs, (str, Path, WmdpForm, dict)) else list(specs)
    if not items:
        raise ConfigError("no lm-eval task given; name one (e.g. mmlu), a task YAML or a WMDP-form file")
    include = _include_dirs(include_path)
    classified = [_classify(s) for s in items]
    own = _manager(False, include)  # the user's folders alone: milliseconds; lm-eval's index only when a spec needs it
    entries: list[TaskEntry] = []
    for label, spec, config, needs in classified:
        found = needs == _OWN or (needs == _NAME and bool(include) and str(spec) in own.all_tasks)
        manager = own if found else _manager(True, include)
        try:
            loaded = manager.load(spec)
        except KeyError:
            raise _unknown(str(spec), manager) from None
        except Exception as exc:
            if _is_missing_data(exc):
                raise DataError(
                    f"lm-eval task '{label}': its data is not available on this machine ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); {OFFLINE_FIX}"
                ) from None
            raise ConfigError(
                f"lm-eval cannot build task '{label}' ({type(exc).__name__}: {exc}); check the task config"
            ) from None
        roots = _roots(loaded)
        name = (
            roots[0].name
            if len(roots) == 1 and hasattr(roots[0], "get_all_tasks")
            else roots[0].task_name
            if len(roots) == 1
            else label
        )
        entries.append(
            TaskEntry(spec=label, name=name, objects=roots, leaves=tuple(sorted(loaded["tasks"])), config=config)
        )
    seen: dict[str, str] = {}
    for entry in entries:
        for leaf in entry.leaves:
            if leaf in seen:
                raise ConfigError(
                    f"lm-eval task '{leaf}' is part of both '{seen[leaf]}' and '{entry.spec}'; name each task once"
                )
            seen[leaf] = entry.spec
    return LoadedTasks(entries=tuple(entries), manager=own)
