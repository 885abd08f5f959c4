"""The Hugging Face Space: the README's front matter a Space build reads, pins that install on the Python it
declares, and the upload dry run (tools/space_dry_run.py), offline."""
from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO_ROOT
from tools import space_dry_run
from tools.space_dry_run import SPACE_EXCLUDE, check, plan_upload, upload_command

# From hub-docs docs/hub/spaces-config-reference.md (python_version: "Any valid Python 3.x or 3.x.x version",
# and the thumbnail colours); the 60 characters are what the Hub's README validation enforces.
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
SHORT_DESCRIPTION_MAX = 60


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must open with its YAML front matter between two '---' lines"
    return yaml.safe_load(match.group(1))


def pins(path=REPO_ROOT / "requirements.txt") -> dict[str, Requirement]:
    requirements = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            requirements[requirement.name] = requirement
    return requirements


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned to one version"
    return specifier.version


def test_front_matter_has_what_a_gradio_space_needs():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    # The Space installs gradio==sdk_version itself: a different pin in requirements.txt would fight it.
    assert str(meta["sdk_version"]) == pinned_version(pins()["gradio"])
    assert (REPO_ROOT / meta["app_file"]).is_file()
    # Quoted in YAML: a bare 3.10 would be read as the number 3.1.
    assert isinstance(meta["python_version"], str) and re.fullmatch(r"3\.\d+(\.\d+)?", meta["python_version"])
    assert len(meta["short_description"]) <= SHORT_DESCRIPTION_MAX, meta["short_description"]
    assert {meta["colorFrom"], meta["colorTo"]} <= SPACE_COLOURS


def test_the_space_runs_the_python_the_tests_run():
    declared = tuple(int(part) for part in front_matter()["python_version"].split(".")[:2])
    assert declared == sys.version_info[:2], f"the Space runs Python {declared}, the tests {sys.version_info[:2]}"


@pytest.mark.parametrize("name", sorted(pins()))
def test_every_pin_installs_on_the_space_python(name):
    requirement = pins()[name]
    installed = importlib.metadata.metadata(name)
    assert installed["Version"] == pinned_version(requirement), \
        f"{name} {installed['Version']} is installed, {requirement} pinned: this metadata is not the pin's"
    requires_python = SpecifierSet(installed["Requires-Python"] or "")
    python = front_matter()["python_version"]
    assert requires_python.contains(python), f"{requirement} requires Python {requires_python}, the Space has {python}"


def _parse_with_the_hf_cli(command: str) -> dict:
    """The arguments `hf` itself reads from ``command``, without running it."""
    from huggingface_hub.cli.hf import app

    words = shlex.split(command)
    assert words[:2] == ["hf", "upload"], command
    context = app.make_context("hf", [], resilient_parsing=True)
    name, upload, rest = app.resolve_command(context, words[1:])
    return upload.make_context(name, rest, parent=context).params


def test_the_printed_upload_command_is_one_the_hf_cli_accepts():
    params = _parse_with_the_hf_cli(upload_command("someone/cifar-zoo"))
    assert params["repo_id"] == "someone/cifar-zoo" and params["repo_type"] == "space"
    assert (params["local_path"], params["path_in_repo"]) == (".", ".")
    assert tuple(params["exclude"]) == SPACE_EXCLUDE
    # Several patterns after one --exclude are not a list to this CLI but extra arguments.
    with pytest.raises(click.UsageError):
        _parse_with_the_hf_cli("hf upload someone/cifar-zoo . . --repo-type space --exclude 'data/*' 'runs/*'")


def test_the_upload_set_of_this_checkout_is_what_the_space_needs():
    plan = plan_upload(REPO_ROOT)
    assert check(plan) == []
    for path in ("app.py", "requirements.txt", "README.md", "serve/store.py", "checkpoints/resnet/model.safetensors"):
        assert path in plan.upload
    assert not [path for path in plan.upload
                if path == ".git" or path.startswith(("tests/", ".venv", ".git/")) or "__pycache__" in path]


def _git_checkout(root):
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("venv/\n*.log\n")
    for path in ("app.py", "requirements.txt", "README.md", "LICENSE", "architectures/a.py", "serve/s.py",
                 "explain/e.py", "train/t.py", "examples/cat.png", "checkpoints/tiny/config.json",
                 "checkpoints/tiny/model.safetensors", "venv/lib/site.py", "run.log", "tests/test_x.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    return root


def test_the_dry_run_names_what_would_break_the_space(tmp_path):
    root = _git_checkout(tmp_path / "checkout")
    assert check(plan_upload(root), ["tiny"]) == [
        "run.log would be uploaded but git ignores it: add an exclude pattern",
        "venv/lib/site.py would be uploaded but git ignores it: add an exclude pattern"]

    (root / "README.md").write_text("See ![curves](checkpoints/tiny/curves.png) and [tests](tests/test_x.py).")
    (root / "run.log").unlink()
    with (root / "checkpoints/tiny/model.safetensors").open("wb") as big:
        big.truncate(space_dry_run.MAX_PLAIN_FILE_BYTES + 1)  # sparse: no 10 MB written
    problems = "\n".join(check(plan_upload(root), ["tiny", "other"]))
    assert "checkpoints/other/model.safetensors is needed on the Space but not on disk" in problems
    assert "checkpoints/tiny/curves.png is needed on the Space but not on disk" in problems
    assert "tests/test_x.py is needed on the Space but left out by the exclude patterns" in problems
    assert "checkpoints/tiny/model.safetensors is 10.0 MB, over the 10 MB" in problems


def test_the_dry_run_starts_the_app_from_the_upload_copy():
    """`python -m tools.space_dry_run --start`: the upload set alone, in a fresh folder, serves /predict."""
    done = subprocess.run([sys.executable, "-m", "tools.space_dry_run", "--start", "--timeout", "120"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    match = re.search(r"started from the copy in ([\d.]+) s; /predict answered for (\d+) architectures", done.stdout)
    assert match, done.stdout
    assert int(match.group(2)) >= 1
