"""Exit statuses of every ``talbot`` command (docs/operating.md, "Exit statuses").

0 only for a complete success: a partial result is written and kept, but never passed off as a
good one.
"""

from __future__ import annotations

from typing import Final

#: Everything asked for was done, completely.
OK: Final = 0
#: A failure: nothing (or nothing usable) was produced.
FAILED: Final = 1
#: Bad input (an option, a file, an endpoint), refused before anything ran.
USAGE: Final = 2
#: A result was written, but from a partial scan (it says so in its attributes and figures).
PARTIAL: Final = 3
#: Stopped by a signal (Ctrl-C, SIGTERM) before all asked for was done.
INTERRUPTED: Final = 130
