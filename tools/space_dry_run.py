"""What `hf upload` would send to the Hugging Face Space, checked before anything is sent.

    python -m tools.space_dry_run            # the file set: what goes, what stays, sizes; the command to run
    python -m tools.space_dry_run --start    # then copy exactly that set to a fresh folder and start the app there

`hf upload <user>/<space> . . --exclude ...` sends every file on disk under the folder (it reads no
.gitignore locally) minus its --exclude patterns and huggingface_hub's own DEFAULT_IGNORE_PATTERNS (.git).
This module holds those patterns (SPACE_EXCLUDE), prints the command built from them, and lists the files
with huggingface_hub's own filter (`filter_repo_objects`, as `upload_folder` calls it). It fails when:
- a file the Space needs is left out (the app, its packages, every architecture's weights and config, the
  examples, and every file the README links to);
- a file git ignores would be sent: clutter (virtual environments, caches, runs, data), and the Hub applies
  the top-level .gitignore it receives on its side, so it may drop the file or not: either way the Space
  would not hold this list;
- the dev harness would be sent (tests/, .ci/, requirements-dev.txt: they need pytest and a browser, which
  a Space does not install, so they cannot run there);
- a file is over 10 MB, the Hub's limit for a file committed without LFS/Xet (the hf CLI routes binary files
  through Xet whatever their size, but a `git push` of the same tree would be refused).
What git knows about (tracked, or untracked and not ignored) is what a clean clone plus work in progress
holds; anything else on disk is what this working copy accumulated.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, FORBIDDEN_FOLDERS, filter_repo_objects

from tools.app_http import AppDidNotStart, free_port, read_events, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent

# The one list of --exclude patterns; the README's upload command is printed from it. huggingface_hub
# matches with fnmatch, where `*` crosses `/`: "*__pycache__/*" catches the top-level one too, which
# "**/__pycache__/*" does not.
SPACE_EXCLUDE = (
    ".venv*/*",            # virtual environments (.venv, and .venv-ci from .ci/run)
    "*__pycache__/*",      # byte code, at every depth
    ".*_cache/*",          # tool caches: .pytest_cache, .ruff_cache, .mypy_cache (each ignored by its own .gitignore)
    "*.egg-info/*",
    "data/*",              # the data sets the training and calibration scripts read
    "runs/*",              # training runs
    ".gradio/*",           # what a local Gradio server writes (flagging, certificates)
    "flagged/*",
    "w/*",                 # the scratch folder for local notes and logs
    "tests/*",             # the dev harness: pytest and Chromium are not installed on a Space
    ".ci/*",
    "requirements-dev.txt",
)
SPACE_ID_PLACEHOLDER = "<user>/<space>"

# Files over this size need LFS/Xet on the Hub: hub-docs repositories-getting-started.md ("files larger than
# 10MB ... should be tracked with git-lfs"); the Hub's git refuses them otherwise. Counted in MB, the stricter.
MAX_PLAIN_FILE_BYTES = 10 * 1000 * 1000

REQUIRED_FILES = ("app.py", "preprocess.py", "requirements.txt", "README.md", "LICENSE")
# Every file git knows under these goes: the app imports the three packages, reads the other two. train/ goes
# too, unrequired: the app imports none of it, but the README's commands and the offline tools beside the app
# (serve.calibrate, explain.select, explain.profiles) do, and a 136 KB saving is not worth a Space whose
# files import a package it lacks.
REQUIRED_DIRS = ("architectures", "serve", "explain", "checkpoints", "examples")
# What a working copy accumulates, present or not right now: the patterns must leave each of them out.
TYPICAL_CLUTTER = (
    ".git", ".git/HEAD", ".venv/bin/python", ".venv-ci/lib/python3.11/site-packages/torch/__init__.py",
    "__pycache__/app.cpython-311.pyc", "serve/__pycache__/store.cpython-311.pyc",
    "tests/__pycache__/conftest.cpython-311-pytest-9.2.0.pyc", ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/CACHEDIR.TAG",
    "runs/resnet/log.jsonl", "data/cifar10-jpeg/train.tar.gz", ".gradio/flagged/dataset1.csv",
    "flagged/log.csv", "cifar_zoo.egg-info/PKG-INFO", "w/notes.md", "tests/test_app.py", ".ci/run",
)
# Never on a Space, whatever .gitignore says: a path with one of these parts (any depth), or starting with one.
NEVER_ANY_DEPTH = (".git", "__pycache__", ".pytest_cache")
NEVER_AT_TOP = (".venv*", "runs", "data", "tests", ".ci")  # top-level folders

_LINK = re.compile(r"\]\(([^)\s]+)\)|<img[^>]*\ssrc=\"([^\"]+)\"")


def upload_command(space_id: str = SPACE_ID_PLACEHOLDER) -> str:
    """The `hf upload` command line that sends what this module checks (each pattern after its own
    --exclude: the hf CLI takes one value per option, and a second bare pattern is an extra argument)."""
    excludes = " ".join(f"--exclude {shlex.quote(pattern)}" for pattern in SPACE_EXCLUDE)
    return f"hf upload {space_id} . . --repo-type space {excludes}"


@dataclass
class Plan:
    """The files `hf upload` would send from ``root`` (path in the Space -> size in bytes) and what it leaves."""
    root: Path
    upload: dict[str, int]
    known: set[str]        # what git knows: tracked, or untracked and not ignored
    left_out: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.upload.values())

    @property
    def largest(self) -> tuple[str, int]:
        return max(self.upload.items(), key=lambda item: (item[1], item[0]))


def git_known_files(root: Path) -> set[str]:
    """Tracked files plus untracked ones that .gitignore does not exclude, relative to ``root``."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                             check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise SystemExit(f"space dry run: {root} is not a git checkout that git can list "
                         f"({error}; {detail.decode(errors='replace').strip()})") from error
    return {path for path in out.decode().split("\0") if path and (root / path).is_file()}


def plan_upload(root: Path = ROOT) -> Plan:
    """The file set of ``upload_command()`` run in ``root``, listed and filtered as huggingface_hub does."""
    root = root.resolve()
    # As HfApi._prepare_upload_folder_additions lists a folder: every file, hidden ones included; symbolic
    # links to files are followed, links to folders are not entered.
    on_disk = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
    ignore = list(SPACE_EXCLUDE) + DEFAULT_IGNORE_PATTERNS  # what upload_folder passes on
    upload = {path: (root / path).stat().st_size for path in filter_repo_objects(on_disk, ignore_patterns=ignore)}
    return Plan(root, upload, git_known_files(root), [path for path in on_disk if path not in upload])


def readme_links(readme: str) -> list[str]:
    """Relative links and images in the README (outside the front matter), without anchors."""
    links = []
    for match in _LINK.finditer(readme):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("/"):
            links.append(target.removeprefix("./"))
    return links


def check(plan: Plan, architectures: list[str] | None = None) -> list[str]:
    """Every reason the Space built from ``plan`` would be wrong, in words; empty when it is right."""
    problems = []
    upload, known = plan.upload, plan.known
    if architectures is None:
        from architectures import list_models
        architectures = list_models()

    needed = set(REQUIRED_FILES)
    for folder in REQUIRED_DIRS:
        inside = {path for path in known if path.startswith(folder + "/")}
        if not inside:
            problems.append(f"{folder}/ has no file git knows of")
        needed |= inside
    for name in architectures:
        needed |= {f"checkpoints/{name}/model.safetensors", f"checkpoints/{name}/config.json"}
    readme = plan.root / "README.md"
    if readme.is_file():
        needed |= set(readme_links(readme.read_text(encoding="utf-8")))
    for path in sorted(needed - set(upload)):
        why = "not on disk" if not (plan.root / path).is_file() else "left out by the exclude patterns"
        problems.append(f"{path} is needed on the Space but {why}")

    for path in sorted(set(upload) - known):
        problems.append(f"{path} would be uploaded but git ignores it: add an exclude pattern")
    for path in sorted(upload):
        parts = path.split("/")
        if any(part in NEVER_ANY_DEPTH for part in parts) or (
                len(parts) > 1 and any(fnmatchcase(parts[0], pattern) for pattern in NEVER_AT_TOP)):
            problems.append(f"{path} must not go to a Space")
        if any(part in FORBIDDEN_FOLDERS for part in parts):
            problems.append(f"{path}: huggingface_hub refuses paths under {FORBIDDEN_FOLDERS}")
        if upload[path] > MAX_PLAIN_FILE_BYTES:
            problems.append(f"{path} is {upload[path] / 1e6:.1f} MB, over the {MAX_PLAIN_FILE_BYTES / 1e6:.0f} MB "
                            "a file may have without LFS/Xet")
    ignore = list(SPACE_EXCLUDE) + DEFAULT_IGNORE_PATTERNS
    for path in TYPICAL_CLUTTER:
        if list(filter_repo_objects([path], ignore_patterns=ignore)):
            problems.append(f"the exclude patterns would send {path} (when it exists)")
    return problems


def summary(plan: Plan) -> str:
    largest, size = plan.largest
    dropped_known = sorted(path for path in plan.left_out if path in plan.known)
    lines = [
        upload_command(),
        f"would upload {len(plan.upload)} files, {plan.total_bytes / 1e6:.1f} MB; largest {largest} "
        f"({size / 1e6:.2f} MB; {MAX_PLAIN_FILE_BYTES / 1e6:.0f} MB is the limit without LFS/Xet)",
        f"left out: {len(dropped_known)} files git knows ({', '.join(_by_folder(dropped_known)) or 'none'}), "
        f"{len(plan.left_out) - len(dropped_known)} that git ignores or that are .git",
    ]
    return "\n".join(lines)


def _by_folder(paths: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for path in paths:
        top = path.split("/")[0] + ("/" if "/" in path else "")
        counts[top] = counts.get(top, 0) + 1
    return [f"{top} {n}" if n > 1 else top for top, n in counts.items()]


def _predict(url: str, image: Path, architecture: str, defaults: list) -> str:
    """The label /predict gives ``image`` with ``architecture``, over plain HTTP (upload, call, event stream)."""
    import httpx

    with httpx.Client(timeout=120) as client:
        uploaded = client.post(f"{url}gradio_api/upload", files=[("files", (image.name, image.read_bytes()))])
        uploaded.raise_for_status()
        inputs = [{"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}, architecture, *defaults[2:]]
        started = client.post(f"{url}gradio_api/call/predict", json={"data": inputs})
        started.raise_for_status()
        stream = client.get(f"{url}gradio_api/call/predict/{started.json()['event_id']}")
    for kind, body in read_events(stream.text):
        if kind == "complete":
            label = json.loads(body)[0].get("label")
            if not isinstance(label, str):
                raise RuntimeError(f"/predict with {architecture} answered without a label: {body[:200]}")
            return label
        if kind == "error":
            raise RuntimeError(f"/predict with {architecture} failed: {body[:300]}")
    raise RuntimeError(f"/predict with {architecture}: no answer in the stream ({stream.status_code}): "
                       f"{stream.text[:200]}")


def start(plan: Plan, timeout_s: float = 120, keep: bool = False) -> dict:
    """Copy exactly the upload set to a fresh folder and run its app.py as a Space does; once the page answers,
    /predict every architecture that has weights there. {"startup_s", "predict": {arch: label}, "folder"}."""
    import httpx

    base = Path(tempfile.mkdtemp(prefix="space-dry-run-"))
    space = base / "space"  # nothing beside it: ../shared (the data and model caches of a checkout) is absent
    for path in plan.upload:
        (space / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plan.root / path, space / path)  # the content, as the upload sends it
    env = {name: value for name, value in os.environ.items()
           if name not in ("CHECKPOINT_DIR", "CHECKPOINT_REPO", "CHECKPOINT_REVISION", "PYTHONPATH")}
    port = free_port()
    env.update({"SYSTEM": "spaces", "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
                "HF_HUB_OFFLINE": "1",  # nothing here may reach the network; a Space could, the app must not need to
                "GRADIO_TEMP_DIR": str(base / "gradio_tmp")})
    log_path = base / "app.log"
    url = f"http://127.0.0.1:{port}/"
    began = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until_answering(process, url, timeout_s)
        except AppDidNotStart as error:
            raise RuntimeError(f"{error}:\n{_tail(log_path)}") from None
        startup_s = time.monotonic() - began
        info = httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"]
        if "/predict" not in info:
            raise RuntimeError(f"the app has no /predict endpoint: {sorted(info)}")
        defaults = [p.get("parameter_default") for p in info["/predict"]["parameters"]]
        images = sorted(p for p in (space / "examples").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise RuntimeError("no example image in the copy's examples/")
        trained = sorted(p.parent.name for p in (space / "checkpoints").glob("*/model.safetensors"))
        labels = {arch: _predict(url, images[0], arch, defaults) for arch in trained}
        if not labels:
            raise RuntimeError("no checkpoint in the copy to call /predict with")
        return {"startup_s": startup_s, "predict": labels, "image": images[0].name,
                "folder": str(space) if keep else None}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server this function started, in its own session
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", action="store_true",
                        help="also copy the upload set to a fresh folder and start the app from it as a Space does")
    parser.add_argument("--timeout", type=float, default=120, help="seconds the app may take to answer (--start)")
    parser.add_argument("--keep", action="store_true", help="keep the copy (--start), for a look at it")
    args = parser.parse_args(argv)

    plan = plan_upload(ROOT)
    print(summary(plan))
    problems = check(plan)
    if problems:
        raise SystemExit("space dry run: the upload would be wrong:\n  " + "\n  ".join(problems))
    print("file set: ok")
    if args.start:
        try:
            result = start(plan, timeout_s=args.timeout, keep=args.keep)
        except (RuntimeError, OSError, ValueError) as error:
            raise SystemExit(f"space dry run: the app did not serve from the upload copy: {error}") from error
        print(f"started from the copy in {result['startup_s']:.1f} s; /predict answered for "
              f"{len(result['predict'])} architectures on {result['image']}: "
              + ", ".join(f"{arch}={label}" for arch, label in result["predict"].items()))
        if result["folder"]:
            print(f"copy kept at {result['folder']}")


if __name__ == "__main__":
    main()
