"""One running ``app.py`` per checkpoint layout for the whole test session, shared by the modules that ask for the
same layout (test_app_http.py and test_browser.py ask for the same one once every architecture is trained).

Starting the app costs half a minute on a busy 2-core machine; a module-scoped server paid it in each module.
``shared_app`` starts the server the first time a layout is asked for and stops it when the session ends
(``config.add_cleanup``). A layout is {architecture: "trained" | "random" | "corrupt" | "missing"}.
"""
from __future__ import annotations

from conftest import CHECKPOINTS, random_checkpoint, running_app

_RUNNING: dict[tuple, tuple] = {}  # layout -> (checkpoint folder, running server)


def trained(name: str) -> bool:
    """Whether the repository ships a checkpoint of ``name``."""
    return (CHECKPOINTS / name / "config.json").is_file() and (CHECKPOINTS / name / "model.safetensors").is_file()


def _build(folder, layout: dict[str, str]) -> None:
    for name, kind in layout.items():
        if kind == "trained":
            (folder / name).symlink_to(CHECKPOINTS / name, target_is_directory=True)
        elif kind == "random":
            random_checkpoint(folder, name)
        elif kind == "corrupt":
            (folder / name).mkdir()
            (folder / name / "config.json").write_text(f'{{"arch": "{name}", "class_names": ')
            (folder / name / "model.safetensors").write_bytes(b"not a safetensors file")
        elif kind != "missing":
            raise ValueError(f"unknown kind {kind!r} for {name}")


def shared_app(request, tmp_path_factory, layout: dict[str, str]):
    """(checkpoint folder, {url, process, log}) of the session's server for ``layout``, started on first use."""
    key = tuple(sorted(layout.items()))
    if key not in _RUNNING:
        folder = tmp_path_factory.mktemp("served_checkpoints")
        _build(folder, layout)
        context = running_app(folder, tmp_path_factory.mktemp("server"))
        _RUNNING[key] = folder, context.__enter__()
        request.config.add_cleanup(lambda: (_RUNNING.pop(key, None), context.__exit__(None, None, None)))
    return _RUNNING[key]
