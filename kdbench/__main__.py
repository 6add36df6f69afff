"""``python -m kdbench``: the same as the ``kdbench`` command."""

from __future__ import annotations

import sys

from kdbench.cli import main

sys.exit(main())
