"""Imported by every tool: `python tools/X.py | head` ends quietly, as `cat` does, instead of with a BrokenPipeError
traceback (the reader closed the pipe; nothing is wrong). Standard output is pointed at /dev/null, so that the
interpreter's last flush at exit does not raise again; any other error still shows its traceback."""

import atexit
import os
import sys


def _to_devnull():
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _excepthook(kind, value, traceback):
    if issubclass(kind, BrokenPipeError):
        _to_devnull()  # exit status stays 1, as for any uncaught exception
        return
    sys.__excepthook__(kind, value, traceback)


def _flush_quietly():  # output still buffered at exit, when the reader is already gone
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _to_devnull()


sys.excepthook = _excepthook
atexit.register(_flush_quietly)
