"""Ctrl-C that sticks: once the user interrupts a command, nothing it was writing may still be committed.

Why: a library can swallow the KeyboardInterrupt (coremltools wraps its optional imports in a bare ``except:``; a
garbage-collector callback of the TFLite converter reports it as "Exception ignored"), and an export then ran to the
end and wrote its artifact after the user had asked it to stop. The CLI installs :func:`remember_interrupts`; every
atomic write (``checkpoint.atomic_write_bytes`` and ``atomic_replace_folder``, ``split``) calls
:func:`raise_if_interrupted` just before its rename. Kept free of torch so the CLI can install it before any heavy
import.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

_interrupted = False


def remember_interrupts() -> Callable[[], None]:
    """Install a SIGINT handler that raises KeyboardInterrupt as usual and also records it (see the module's
    docstring). Returns a function that puts the previous handler back. Only the main thread can set a handler;
    elsewhere this does nothing.
    """
    global _interrupted
    _interrupted = False
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigint(signum, frame):
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came earlier in this command, even if a library swallowed it."""
    if _interrupted:
        raise KeyboardInterrupt
