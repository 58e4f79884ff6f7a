"""What reaches the console: this toolkit's own lines; the converters' and runtimes' chatter goes to a log file.

Why: a default ``egeunet deploy`` printed about a hundred lines from third-party libraries that read like failures
(torchao's ``Failed to load ..._C_mxfp8.so``, ``Detected no triton``, ``FutureWarning: isinstance(treespec,
LeafSpec)``, coremltools' ``Torch version ... has not been tested`` and ``Failed to load _MLModelProxy``, LiteRT's
absl logs). None of them is ours to act on, and they buried the lines that are.

How (:func:`third_party_to_log`, used by ``egeunet`` for every command unless ``--verbose``):

- file descriptors 1 and 2 point at a log file for the whole command (``os.dup2``), so native writes (C++ absl and
  glog logs, ONNX Runtime, TFLite's converter, subprocesses) land there, not only Python's;
- ``sys.stdout``/``sys.stderr`` become routers onto copies of the original streams: a write goes to the console when
  the code that made it is this toolkit's (``egeunet_deploy.*``; also our progress bars, warnings we raise and
  errors we print), and to the log when it is a third-party module's (a ``print``, a ``logging`` record or a
  ``warnings.warn`` made by another package). Stdlib plumbing (``warnings``, ``logging``, ``tqdm``) is looked
  through to the module that asked for the write.
- at the end the log is moved next to the command's output (``deploy``: ``OUT/deploy.log``, ``export``:
  ``OUT/export.log``, ``drift``: ``REPORT_DIR.log``, ``bench --json F``: ``F.log``; other commands:
  ``<tmp>/egeunet-<command>.log``, the last run's), named in one line, or deleted when nothing was written.

:class:`ExportLog` folds the export's per-block ``int8 blame: quantizing only <block>`` lines into one progress bar
(a terminal) or one summary line (a file or pipe).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

OURS = ("egeunet_deploy", "__main__")
"""Module name prefixes whose writes are ours: they always reach the console."""

PLUMBING = ("warnings", "logging", "tqdm", "threading", "io", "_io", "codecs", "contextlib", "traceback",
            "egeunet_deploy.console")
"""Modules that write on someone else's behalf: the frame walk looks through them to the module that asked."""


def _module_of(frame) -> str:
    return frame.f_globals.get("__name__") or ""


def _is(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def written_by_us(frame) -> bool:
    """Whether the write made from ``frame`` (the caller of ``write``) is this toolkit's: the first frame outside
    :data:`PLUMBING` decides; a write with no Python caller (the interpreter's own) counts as ours."""
    while frame is not None:
        name = _module_of(frame)
        if not _is(name, PLUMBING) or _is(name, OURS):
            return _is(name, OURS)
        frame = frame.f_back
    return True


class Router(io.TextIOBase):
    """A text stream that sends our writes to ``console`` and everyone else's to ``log``."""

    def __init__(self, console, log, console_fd: int | None) -> None:
        super().__init__()
        self.console, self.log, self.console_fd = console, log, console_fd
        self.third_party_writes = 0

    def write(self, s: str) -> int:
        if written_by_us(sys._getframe(1)):
            self.console.write(s)
            self.console.flush()  # progress bars write '\r' lines without a newline
        else:
            self.third_party_writes += 1
            self.log.write(s)
            self.log.flush()
        return len(s)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        for stream in (self.console, self.log):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def isatty(self) -> bool:
        return bool(getattr(self.console, "isatty", lambda: False)())

    def fileno(self) -> int:
        if self.console_fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.console_fd  # tqdm asks it for the terminal's width

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:
        return getattr(self.console, "errors", None)


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _uses_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return False


@contextmanager
def third_party_to_log(command: str, destination: Callable[[], Path | None] | None = None,
                       verbose: bool = False) -> Iterator[Path | None]:
    """Run the body with third-party output in a log file (see the module docstring); yields the temporary log's
    path (None with ``verbose``: nothing is redirected). At the end the log is moved to ``destination()`` when its
    folder exists (else it stays in the temporary folder) and named in one line on stderr; an empty log is deleted
    (and a previous run's log at ``destination()`` with it)."""
    if verbose:
        yield None
        return
    old_out, old_err = sys.stdout, sys.stderr
    for stream in (old_out, old_err):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    fd, tmp = tempfile.mkstemp(prefix=f"egeunet-{command}-", suffix=".log")
    os.close(fd)
    opened, fds = [], []
    try:
        log_fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
        fds.append(log_fd)
        saved = {1: os.dup(1), 2: os.dup(2)}
        fds += saved.values()

        def console_for(stream, fd: int):
            """The stream our writes go to: the original object, or a new one on a copy of its descriptor when
            it writes to the descriptor about to point at the log."""
            if stream is None or not _uses_fd(stream, fd):
                return (stream if stream is not None else io.StringIO()), None
            copy = os.fdopen(os.dup(saved[fd]), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                             errors=getattr(stream, "errors", None) or "backslashreplace", buffering=1)
            opened.append(copy)
            return copy, copy.fileno()

        log_text = os.fdopen(os.dup(log_fd), "w", encoding="utf-8", errors="backslashreplace")
        opened.append(log_text)
        out_console, out_fd = console_for(old_out, 1)
        err_console, err_fd = console_for(old_err, 2)
    except BaseException:
        for f in opened:
            f.close()
        for d in fds:
            os.close(d)
        Path(tmp).unlink(missing_ok=True)
        raise
    sys.stdout = Router(out_console, log_text, out_fd)
    sys.stderr = Router(err_console, log_text, err_fd)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    monitor = _pause_tqdm_monitor()
    try:
        yield Path(tmp)
    finally:
        _restore_tqdm_monitor(monitor)
        for router in (sys.stdout, sys.stderr):
            try:
                router.flush()
            except (AttributeError, ValueError, OSError):
                pass
        sys.stdout, sys.stderr = old_out, old_err
        os.dup2(saved[1], 1)
        os.dup2(saved[2], 2)
        for f in opened:
            f.close()
        for d in fds:
            os.close(d)
        _file_the_log(Path(tmp), destination, command)


def _pause_tqdm_monitor():
    """tqdm's monitor thread writes without a caller of ours on its stack; it is not needed for a CLI run."""
    try:
        import tqdm
    except ImportError:  # pragma: no cover
        return None
    before = tqdm.tqdm.monitor_interval
    tqdm.tqdm.monitor_interval = 0
    return before


def _restore_tqdm_monitor(before) -> None:
    if before is not None:
        import tqdm

        tqdm.tqdm.monitor_interval = before


def _file_the_log(tmp: Path, destination: Callable[[], Path | None] | None, command: str) -> None:
    """Move a non-empty log to its destination (a command without an output folder: ``<tmp>/egeunet-<command>.log``,
    the last run's, so runs do not pile up) and say where; delete an empty one."""
    try:
        final = destination() if destination else None
    except Exception:  # a destination that cannot be worked out must not turn a finished run into a crash
        final = None
    if final is None or not final.parent.is_dir():
        final = Path(tempfile.gettempdir()) / f"egeunet-{command}.log"
    if tmp.stat().st_size == 0:
        tmp.unlink()
        if final is not None and final.is_file():
            final.unlink()  # a previous run's log; this run had nothing to say
        return
    where = tmp
    os.chmod(tmp, 0o644)  # mkstemp made it private; it is a plain log beside the artifacts
    if final is not None and final.parent.is_dir():
        try:
            shutil.move(tmp, final)
            where = final
        except OSError:
            pass
    with open(where, "rb") as f:
        lines = sum(1 for _ in f)
    print(f"note: {lines} line(s) of converter and runtime output (third-party libraries, not errors of this run) "
          f"are in {where}; --verbose shows them as they come", file=sys.stderr, flush=True)


def log_destination(args) -> Path | None:
    """Where a command's third-party log goes: next to what it writes (None: it stays in the temporary folder)."""
    command = getattr(args, "command", None)
    out = getattr(args, "out", None)
    if command in ("deploy", "export") and out is not None:
        return Path(out) / f"{command}.log"
    if command == "drift":
        report = out or (args.artifacts if args.artifacts.is_dir() else args.artifacts.parent) / "drift"
        return Path(str(report) + ".log")
    if command == "bench" and getattr(args, "json", None) is not None:
        return Path(args.json).with_suffix(".log")
    return None


class ExportLog:
    """The export's log function: lines pass through, except the per-block ``int8 blame: quantizing only <block>``
    lines (one per block of the network, 18 per int8 artifact), which become one progress bar on a terminal and
    one summary line either way."""

    PREFIX = "int8 blame: quantizing only "

    def __init__(self, progress: bool = True, write: Callable[[str], None] | None = None) -> None:
        self.progress = progress
        self.write = write or (lambda line: print(line, flush=True))
        self.bar = None
        self.count = 0
        self.t0 = 0.0

    def __call__(self, message: str) -> None:
        if message.startswith(self.PREFIX):
            self._block(message[len(self.PREFIX):])
            return
        self.finish()
        self.write(message)

    def _block(self, block: str) -> None:
        if self.count == 0:
            self.t0 = time.perf_counter()
            if self.progress:
                from tqdm import tqdm

                from egeunet_deploy.export.rewrite import BLOCKS

                self.bar = tqdm(total=len(BLOCKS), desc="int8 blame", unit="block", leave=False)
        elif self.bar is not None:
            self.bar.update(1)  # the message names the block about to be quantized: the previous one is done
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"quantizing only {block}")

    def finish(self) -> None:
        """Close the bar and print the one line (called before the next message and at the end)."""
        if not self.count:
            return
        if self.bar is not None:
            self.bar.total = self.count
            self.bar.update(self.count - self.bar.n)
            self.bar.close()
            self.bar = None
        self.write(f"int8 blame: {self.count} blocks quantized one at a time and ranked "
                   f"({time.perf_counter() - self.t0:.0f} s)")
        self.count = 0
