"""Where Jinja keeps the compiled templates between runs: compiling them is most of a render's cost
(about 17 ms of every `up`, `render` and `status`), and they change only with nachos-deploy itself.

Jinja's own per-user cache is used (``$TMPDIR/_jinja2-cache-<uid>``, made 0700 and refused when
another user owns it); Jinja checks each entry against its template's source, so a changed template
is compiled again. A cache that cannot be made or written is no cache: a render never fails over it.
"""

from __future__ import annotations

import contextlib
import functools

import jinja2


class _QuietCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache, but a folder that cannot be read or written (full, read-only, not a
    folder) costs a compile, never the command."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


@functools.cache  # one per process, so that the renders of one process share their environments
def bytecode_cache() -> jinja2.BytecodeCache | None:
    """The per-user cache, or None where none can be had (an unsafe or unwritable temp folder)."""
    try:
        return _QuietCache()
    except (OSError, RuntimeError):  # RuntimeError: the folder exists and is not this user's alone
        return None
