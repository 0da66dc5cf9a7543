"""`fitrec ingest` under storage faults: a full disk, a read-only data folder, a missing
permission. Each is one line on stderr naming the day and the path (no traceback), exits with
the code the README lists, and leaves nothing half-written: a re-run after the fault is
byte-identical to a clean run.

The faults are real. A tiny tmpfs and a read-only bind mount live in a private mount
namespace (``unshare -rm``: no root needed, and the mounts vanish with the process). The
missing permission runs fitrec as ``nobody`` when the tests run as root (root ignores file
modes), else against folders made read-only for their owner with ``chmod``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import EX_IOERR, EX_NOPERM

PAGE = 4096
DAY = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FITREC_DEBUG"}
    env["FITREC_DATA_DIR"] = str(data_dir)
    return env


def _ingest(
    data_dir: Path, raw: Path, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "flows.cli", "ingest", "--raw", str(raw), *args]
    return subprocess.run(
        command, env=_env(data_dir), capture_output=True, text=True, timeout=300, check=False
    )


def _in_private_mounts(script: str, data_dir: Path, raw: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in its own mount namespace; $PY, $RAW and $DATA are set for it."""
    env = {**_env(data_dir), "PY": sys.executable, "RAW": str(raw), "DATA": str(data_dir)}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-ec", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def _one_line(stderr: str, what: str, data_dir: Path, days: list[str]) -> str:
    """The fault's line: the only ``fitrec:`` line, no traceback; returns the day it names."""
    assert "Traceback" not in stderr and "╭" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fitrec:")]
    assert len(lines) == 1, stderr
    (line,) = lines
    assert what in line and str(data_dir) in line and "run it again" in line, line
    found = DAY.search(line)
    assert found and found.group(1) in days, line
    return found.group(1)


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Path, Path, dict[str, bytes | None]]]:
    """Raw drops for two days and a clean ingest of them, in a folder others may read (the
    permission test runs fitrec as ``nobody``)."""
    from pipeline.data.generate import GeneratorConfig, write_drops

    root = Path(tempfile.mkdtemp(prefix="fitrec-faults-"))
    root.chmod(0o755)
    try:
        raw = root / "raw"
        write_drops(GeneratorConfig(customers=50, days=2, seed=7), raw)
        clean = root / "clean"
        done = _ingest(clean, raw)
        assert done.returncode == 0, done.stderr
        yield root, raw, _tree(clean)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _days(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.is_dir())


def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_is_a_clean_run(world):
    root, raw, clean = world
    # Half of what the clean run wrote (in tmpfs pages): the disk fills during ingest.
    pages = sum(-(-len(v) // PAGE) for v in clean.values() if v is not None)
    disk = root / "disk"
    disk.mkdir()
    out = root / "full-out"
    script = f"""
        mount -t tmpfs -o size={pages // 2 * PAGE} tmpfs {disk}
        set +e
        $PY -m flows.cli ingest --raw $RAW 2> {out}.err; echo $? > {out}.rc
        set -e
        cp -a $DATA {out}.fault
        mount -o remount,size=64m {disk}
        $PY -m flows.cli ingest --raw $RAW > /dev/null
        cp -a $DATA {out}.rerun
    """
    done = _in_private_mounts(script, disk / "data", raw)
    assert done.returncode == 0, done.stderr
    assert int(Path(f"{out}.rc").read_text()) == EX_IOERR
    stderr = Path(f"{out}.err").read_text()
    day = _one_line(stderr, "no space left on the device", disk / "data", _days(raw))
    # The day that hit the full disk is absent; the days before it are as a clean run has them.
    fault = _tree(Path(f"{out}.fault"))
    assert not [name for name, body in fault.items() if day in name and body is not None]
    assert all(clean[name] == body for name, body in fault.items() if body is not None)
    assert _tree(Path(f"{out}.rerun")) == clean


def test_a_read_only_data_folder_changes_nothing_and_a_rerun_is_a_clean_run(world):
    root, raw, clean = world
    first, second = _days(raw)
    data = root / "read-only" / "data"
    out = root / "read-only-out"
    script = f"""
        $PY -m flows.cli ingest --raw $RAW --date {first} > /dev/null
        cp -a $DATA {out}.before
        mount --bind $DATA $DATA
        mount -o remount,bind,ro $DATA
        set +e
        $PY -m flows.cli ingest --raw $RAW 2> {out}.err; echo $? > {out}.rc
        set -e
        umount $DATA
        $PY -m flows.cli ingest --raw $RAW > /dev/null
    """
    done = _in_private_mounts(script, data, raw)
    assert done.returncode == 0, done.stderr
    assert int(Path(f"{out}.rc").read_text()) == EX_NOPERM
    stderr = Path(f"{out}.err").read_text()
    assert _one_line(stderr, "the file system is read-only", data, [second]) == second
    assert _tree(data) == clean


def test_a_missing_permission_changes_nothing_and_a_rerun_with_it_is_a_clean_run(world):
    root, raw, clean = world
    first, second = _days(raw)
    data = root / "no-permission" / "data"
    assert _ingest(data, raw, "--date", first).returncode == 0
    before = _tree(data)
    folders = [data, *(p for p in data.rglob("*") if p.is_dir())]
    if os.geteuid() == 0:
        # Root writes through any file mode: the user without the permission is nobody.
        nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        refused = _ingest(data, raw, prefix=nobody)
    else:
        for folder in folders:
            folder.chmod(0o500)
        try:
            refused = _ingest(data, raw)
        finally:
            for folder in folders:
                folder.chmod(0o755)
    assert refused.returncode == EX_NOPERM, refused.stderr
    assert _one_line(refused.stderr, "permission denied", data, [second]) == second
    assert _tree(data) == before
    assert _ingest(data, raw).returncode == 0
    assert _tree(data) == clean


# build_features on a full disk: the StorageError names the day and the table's path, and
# no partial file is left; the re-run after freeing space writes what a clean build writes.
BUILD = """
import sys
from datetime import date
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.features.build import build_features

curated, features, day = Path(sys.argv[1]), Path(sys.argv[2]), date.fromisoformat(sys.argv[3])
try:
    build_features(curated, features, day)
except StorageError as error:
    print(error.exit_code, error)
else:
    print("built")
"""


def test_features_on_a_full_disk_name_the_day_and_a_rerun_is_a_clean_build(world):
    root, raw, _ = world
    day = _days(raw)[-1]
    curated = root / "clean" / "curated"
    clean = root / "features-clean"
    build = f'$PY -c "$BUILD" {curated}'
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(curated), str(clean), day], capture_output=True, text=True
    )
    assert done.stdout.strip() == "built", done.stderr
    disk = root / "features-disk"
    disk.mkdir()
    out = root / "features-out"
    script = f"""
        mount -t tmpfs -o size={PAGE} tmpfs {disk}
        {build} {disk}/features {day} > {out}.fault
        cp -a {disk} {out}.left
        mount -o remount,size=64m {disk}
        {build} {disk}/features {day} > {out}.rerun
        cp -a {disk}/features {out}.features
    """
    env = {**_env(root), "PY": sys.executable, "BUILD": BUILD}
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-ec", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    fault = Path(f"{out}.fault").read_text()
    assert fault.startswith(f"{EX_IOERR} build_features of {day} failed: no space left"), fault
    assert f"{disk}/features/" in fault
    assert not [p for p in Path(f"{out}.left").rglob("*") if p.is_file() and p.stat().st_size]
    assert Path(f"{out}.rerun").read_text().strip() == "built"
    assert _tree(Path(f"{out}.features")) == _tree(clean)
