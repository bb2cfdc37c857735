"""The packaging inputs: the PyInstaller spec, the desktop entry, the agent unit, the icons, the smoke script, and
the agent installed without the GUI stack (slow: a fresh venv)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from console.cli.main import COMMANDS
from console.sources import SOURCE_FACTORIES
from tests.helpers.builders import free_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "resources" / "packaging"
SPEC = PACKAGING / "gpu-console.spec"
AGENT_COMMAND = "/usr/bin/gpu-console agent --listen 127.0.0.1:9400 --token-file /etc/gpu-console/agent.token"


class _Recorder:
    """Stands in for PyInstaller's build classes: records each call's arguments."""

    def __init__(self, calls: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]], name: str) -> None:
        self._calls = calls
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._calls.setdefault(self._name, []).append((args, kwargs))
        return _Built(kwargs)


class _Built:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.binaries: list[tuple[str, str, str]] = []
        self.datas: list[tuple[str, str, str]] = []
        self.pure: list[Any] = []
        self.scripts: list[Any] = []
        self.kwargs = kwargs


def exec_spec(platform: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, Any]:
    calls: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
    namespace: dict[str, Any] = {"SPECPATH": str(PACKAGING), "__file__": str(SPEC)}
    for name in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE"):
        namespace[name] = _Recorder(calls, name)
    if platform is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "platform", platform)
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    namespace["calls"] = calls
    return namespace


def analysis_kwargs(namespace: dict[str, Any]) -> dict[str, Any]:
    (_args, kwargs), *_ = namespace["calls"]["Analysis"]
    return kwargs


def test_spec_hidden_imports_cover_every_source_command_and_pyqtgraph_gl_module() -> None:
    hidden = set(analysis_kwargs(exec_spec())["hiddenimports"])
    source_modules = {target.partition(":")[0] for target in SOURCE_FACTORIES.values()}
    assert source_modules <= hidden, f"sources missing from the bundle: {source_modules - hidden}"
    assert set(COMMANDS.values()) <= hidden, f"commands missing from the bundle: {set(COMMANDS.values()) - hidden}"
    assert {"PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets"} <= hidden


def test_spec_bundles_the_rules_and_catalogs_where_the_code_looks_for_them() -> None:
    datas = analysis_kwargs(exec_spec())["datas"]
    placed = {Path(dest) / Path(src).name for src, dest in datas}
    # console/incidents/rules.py and xid.py read them relative to resources/__init__.py.
    for expected in ("resources/rules/default.toml", "resources/catalogs/xid.toml"):
        assert Path(expected) in placed
    assert all(Path(src).is_file() for src, _dest in datas)
    assert not [dest for _src, dest in datas if "packaging" in Path(dest).parts], "packaging files are build inputs"


def test_spec_keeps_binaries_unstripped_and_excludes_heavy_unused_modules() -> None:
    namespace = exec_spec()
    (_args, exe), *_ = namespace["calls"]["EXE"]
    (_args, coll), *_ = namespace["calls"]["COLLECT"]
    assert exe["strip"] is False and exe["upx"] is False
    assert coll["strip"] is False and coll["upx"] is False
    assert exe["name"] == "gpu-console" and coll["name"] == "gpu-console"
    excludes = set(analysis_kwargs(namespace)["excludes"])
    assert {"tkinter", "matplotlib", "IPython", "PySide6.QtWebEngineCore", "PySide6.QtMultimedia"} <= excludes
    # pyqtgraph really imports these: excluding them would break charts or SVG icons at run time.
    assert not excludes & {"PySide6.QtSvg", "PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets", "numpy", "pyqtgraph"}


@pytest.mark.parametrize(
    ("dest", "dropped"),
    [
        ("PySide6/Qt/translations/qtbase_de.qm", True),
        ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", True),
        ("PySide6/Qt/plugins/platforms/libqeglfs.so", True),
        ("PySide6/Qt/plugins/egldeviceintegrations/libqeglfs-x11-integration.so", True),
        ("PySide6/plugins/imageformats/qtiff.dll", True),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", False),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", False),
        ("PySide6/Qt/plugins/platforms/libqwayland.so", False),
        ("PySide6/Qt/plugins/imageformats/libqsvg.so", False),
        ("PySide6/plugins/platforms/qwindows.dll", False),
        ("resources/rules/default.toml", False),
    ],
)
def test_spec_drops_embedded_qt_plugins_and_translations_but_keeps_desktop_platforms(dest: str, dropped: bool) -> None:
    assert exec_spec()["_is_unused"]((dest, "/nowhere/" + Path(dest).name, "BINARY")) is dropped


@pytest.mark.parametrize("name", ["libnvidia-ml.so.1", "libnvidia-ml.so.550.54.15", "nvml.dll"])
def test_spec_never_bundles_the_drivers_nvml(name: str) -> None:
    is_never_bundled = exec_spec()["_is_never_bundled"]
    assert is_never_bundled((name, f"/usr/lib/x86_64-linux-gnu/{name}", "BINARY"))
    assert not is_never_bundled(("libQt6Core.so.6", "/venv/PySide6/Qt/lib/libQt6Core.so.6", "BINARY"))


@pytest.mark.parametrize(("platform", "icon_suffix"), [("win32", ".ico"), ("darwin", ".icns"), ("linux", None)])
def test_spec_picks_an_existing_icon_per_platform(
    platform: str, icon_suffix: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = exec_spec(platform, monkeypatch)
    (_args, exe), *_ = namespace["calls"]["EXE"]
    if icon_suffix is None:
        assert exe["icon"] is None
    else:
        assert Path(exe["icon"]).suffix == icon_suffix and Path(exe["icon"]).is_file()
    assert ("BUNDLE" in namespace["calls"]) is (platform == "darwin")


def test_spec_names_no_platform_specific_library_or_path() -> None:
    text = SPEC.read_text(encoding="utf-8")
    for needle in ('.so"', ".so.", "/usr/", "/opt/", "x86_64", "linux-gnu", '.dylib"', "C:\\"):
        assert needle not in text, f"the spec must build on Windows and macOS too; found {needle!r}"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_icons_are_one_256px_png_wrapped_for_windows_and_macos() -> None:
    png = (PACKAGING / "gpu-ops-console.png").read_bytes()
    assert _png_size(png) == (256, 256)
    assert (PACKAGING / "gpu-ops-console.ico").read_bytes().endswith(png)
    assert (PACKAGING / "gpu-ops-console.icns").read_bytes().endswith(png)
    svg = (PACKAGING / "gpu-ops-console.svg").read_text(encoding="utf-8")
    assert 'viewBox="0 0 256 256"' in svg


def _desktop_entry() -> dict[str, str]:
    lines = (PACKAGING / "gpu-ops-console.desktop").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_desktop_entry_starts_the_console_with_the_installed_icon() -> None:
    entry = _desktop_entry()
    assert entry["Exec"] == "gpu-console"
    assert entry["Icon"] == "gpu-ops-console"  # the hicolor name build_package.sh installs
    assert entry["Type"] == "Application" and entry["Terminal"] == "false"


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="apt package desktop-file-utils")
def test_desktop_entry_passes_desktop_file_validate() -> None:
    done = subprocess.run(
        ["desktop-file-validate", str(PACKAGING / "gpu-ops-console.desktop")], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_agent_unit_runs_the_agent_on_loopback_and_install_scripts_never_enable_it() -> None:
    unit = (PACKAGING / "gpu-console-agent.service").read_text(encoding="utf-8")
    assert f"ExecStart={AGENT_COMMAND}\n" in unit
    assert "ConditionPathExists=/etc/gpu-console/agent.token" in unit
    assert "User=gpu-console" in unit
    for script in ("postinst", "prerm", "postrm"):
        path = PACKAGING / script
        assert path.stat().st_mode & stat.S_IXUSR, f"{script} must be executable"
        text = path.read_text(encoding="utf-8")
        assert "systemctl enable" not in text and "systemctl start" not in text
        assert "deb-systemd-helper enable" not in text


GUI_STACK = ("pyside6", "pyqtgraph", "shiboken6")


def test_a_plain_install_depends_on_the_gui_and_the_agent_requirements_on_the_core_only() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    gui = [dep for dep in declared if dep.lower().startswith(GUI_STACK)]
    assert sorted(dep.split(">")[0].lower() for dep in gui) == ["pyqtgraph", "pyside6-essentials"]
    lines = (PACKAGING / "agent-requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert sorted(listed) == sorted(dep for dep in declared if dep not in gui)


# --- the smoke script judges a build correctly (a stand-in bundle: a real one takes minutes to build) ---


def _load_smoke_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_package", ROOT / "scripts" / "dev" / "smoke_package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


GOOD_SUMMARY = '{"nodes": 32, "gpus": 256, "samples": 64, "incidents": 0, "db": "x"}'
HARMLESS = "2026-01-01 00:00:00,000 WARNING qt: This plugin does not support propagateSizeHints()"


FAKE_BINARY = """\
import functools, http.server, os, signal, sys, threading
args = sys.argv[1:]
if args == ["--version"]:
    print("gpu-console " + VERSION)
    sys.exit(0)
if "agent" in args:
    host, port = args[args.index("--listen") + 1].rsplit(":", 1)
    files = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.dirname(__file__))
    server = http.server.HTTPServer((host, int(port)), files)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()
    sys.exit(0)
if "--db" in args:
    open(args[args.index("--db") + 1], "w").close()
print("starting")
print(STDOUT)
print(STDERR, file=sys.stderr)
sys.exit(EXIT)
"""


def _fake_dist(tmp_path: Path, version: str, smoke_stdout: str, smoke_stderr: str, smoke_exit: int = 0) -> Path:
    """A stand-in bundle whose smoke run prints what the case says; its agent serves files over HTTP."""
    dist = tmp_path / "dist"
    bundle = dist / "gpu-console"
    bundle.mkdir(parents=True)
    (bundle / "healthz").write_text("ok", encoding="utf-8")
    binary = bundle / "gpu-console"
    settings = f"VERSION = {version!r}\nSTDOUT = {smoke_stdout!r}\nSTDERR = {smoke_stderr!r}\nEXIT = {smoke_exit}\n"
    binary.write_text(f"#!{sys.executable}\n{settings}{FAKE_BINARY}", encoding="utf-8")
    binary.chmod(0o755)
    with tarfile.open(dist / f"gpu-ops-console-{version}-linux-x86_64.tar.gz", "w:gz") as archive:
        archive.add(bundle, arcname="gpu-console")
    return dist


def test_smoke_script_passes_a_clean_run_and_allows_only_harmless_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = _load_smoke_script()
    dist = _fake_dist(tmp_path, smoke.project_version(), GOOD_SUMMARY, HARMLESS)
    code = smoke.main([str(dist), "--skip-deb", "--runs", "0", "--report", str(tmp_path / "figures.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "smoke test passed" in out.out
    assert json.loads((tmp_path / "figures.json").read_text())["bundle_bytes"] > 0


@pytest.mark.parametrize(
    "case",
    [
        (GOOD_SUMMARY, HARMLESS + "\nTraceback (most recent call last):", 0, "unexpected stderr line: Traceback"),
        (GOOD_SUMMARY, "qt.qpa.plugin: Could not load the Qt platform plugin", 0, "Could not load the Qt platform"),
        (GOOD_SUMMARY.replace('"samples": 64', '"samples": 0'), "", 0, "samples = 0"),
        ("no summary here", "", 0, "last stdout line is not JSON"),
        (GOOD_SUMMARY, "boom", 3, "--smoke-test exited 3"),
    ],
    ids=["traceback-on-stderr", "qt-plugin-error", "no-samples", "no-json", "nonzero-exit"],
)
def test_smoke_script_fails_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[str, str, int, str]
) -> None:
    stdout, stderr, exit_code, reason = case
    smoke = _load_smoke_script()
    dist = _fake_dist(tmp_path, smoke.project_version(), stdout, stderr, exit_code)
    assert smoke.main([str(dist), "--skip-deb", "--runs", "0"]) == 1
    assert reason in capsys.readouterr().err


def test_smoke_script_fails_on_a_wrong_version_and_a_missing_deb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = _load_smoke_script()
    dist = _fake_dist(tmp_path, "0.0.0-other", GOOD_SUMMARY, "")
    assert smoke.main([str(dist), "--runs", "0"]) == 1
    err = capsys.readouterr().err
    assert f"expected version {smoke.project_version()}" in err
    assert "no gpu-ops-console_" in err and ".deb" in err


# --- the node agent installs and runs without the GUI stack ---


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


@pytest.mark.slow
def test_agent_installs_and_serves_without_pyside6_or_pyqtgraph(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so pip's build/ and egg-info never land in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "packaging")
    for name in ("console", "widgets", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    requirements = PACKAGING / "agent-requirements.txt"
    for step in ([*pip, "-r", str(requirements)], [*pip, "--no-deps", str(source)]):
        done = subprocess.run(step, timeout=480, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(step[3:])} failed:\n{done.stderr[-2000:]}"

    python = str(venv / "bin" / "python")
    for gui_module in ("PySide6", "pyqtgraph", "shiboken6"):
        probe = subprocess.run([python, "-c", f"import {gui_module}"], capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, f"{gui_module} is importable"
    # Asked for the GUI there, it says in one sentence what is missing instead of a traceback.
    gui = subprocess.run(
        [str(venv / "bin" / "gpu-console"), "--demo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert gui.returncode == 2
    assert "Traceback" not in gui.stderr and len(gui.stderr.strip().splitlines()) == 1
    assert "needs PySide6, which is not installed" in gui.stderr

    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("PYTHONPATH", None)
    agent = subprocess.Popen(
        [str(venv / "bin" / "gpu-console"), "agent", "--listen", f"127.0.0.1:{port}", "--interval", "0.2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        health: tuple[int, str, str] | None = None
        while health is None and time.monotonic() < deadline and agent.poll() is None:
            try:
                health = _get(f"http://127.0.0.1:{port}/healthz")
            except OSError:
                time.sleep(0.2)
        assert health is not None, f"agent never answered (exit {agent.poll()}): {agent.stderr}"
        assert health[0] == 200
        status, content_type, _metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        status, _type, body = _get(f"http://127.0.0.1:{port}/api/v1/sample")
        assert status == 200 and json.loads(body)["gpus"] == []  # no driver here: an empty GPU list, no crash
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            _out, err = agent.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            _out, err = agent.communicate()
    assert agent.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_plain_pip_install_is_the_desktop_app(tmp_path: Path) -> None:
    """`pip install .` into a fresh venv, then the smoke test offscreen: the default install runs the GUI."""
    source = tmp_path / "src"  # a copy, so pip's build/ and egg-info never land in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "packaging", "screenshots")
    for name in ("console", "widgets", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, str(source)], timeout=900, capture_output=True, text=True)
    assert done.returncode == 0, f"pip install . failed:\n{done.stderr[-2000:]}"

    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "QT_QPA_PLATFORM": "offscreen",
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env.pop("PYTHONPATH", None)
    smoke = subprocess.run(
        [str(venv / "bin" / "gpu-console"), "--smoke-test", "3", "--db", str(tmp_path / "smoke.sqlite3")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stderr[-2000:]
    summary = json.loads(smoke.stdout.strip().splitlines()[-1])
    assert summary["gpus"] > 0 and summary["samples"] > 0
    assert "Traceback" not in smoke.stderr
