"""Build the python-ESL 1.4.18 wheel from its PyPI sdist, with one upstream bug fixed.

libesl's ``esl_buffer_read_packet``/``esl_buffer_packet_count`` look for the blank line
that ends a header block with ``pe <= e && *pe == '\\n'``: when a socket read ends right
after a header line's ``\\n``, that reads one byte past the data in the buffer, and a stale
``\\n`` left there by an earlier frame ends the header block early. The frame is then
parsed from the wrong offset and events are lost (seen with ``bench/bench_events.py``:
1-2 events per 150 MiB, always at the same stream offset). The fix is ``pe < e``. The
event service also detects a slipped frame and reconnects + reconciles, so an unpatched
build stays correct, only noisier.

Run with the venv's python (SWIG 3.x, setuptools and wheel installed, ``swig`` on PATH):
``python tools/build_python_esl.py WHEEL_DIR``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.4.18"
BUGGY = "if (pe <= e && *pe == '\\n') {"
FIXED = "if (pe < e && *pe == '\\n') {"


def main(wheel_dir: str) -> None:
    with tempfile.TemporaryDirectory(prefix="python-esl-") as work:
        pip = [sys.executable, "-m", "pip"]
        subprocess.run(
            [
                *pip,
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                work,
                f"python-ESL=={VERSION}",
            ],
            check=True,
        )
        (sdist,) = Path(work).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = Path(work) / f"python-ESL-{VERSION}"
        buffer_c = source / "esl_buffer.c"
        text = buffer_c.read_text()
        if text.count(BUGGY) != 2:
            sys.exit(f"{buffer_c}: expected the buggy check twice; upstream changed?")
        buffer_c.write_text(text.replace(BUGGY, FIXED))
        subprocess.run(
            [
                *pip,
                "wheel",
                "-q",
                "--no-build-isolation",
                "--no-deps",
                "-w",
                wheel_dir,
                str(source),
            ],
            check=True,
        )


if __name__ == "__main__":
    main(sys.argv[1])
