"""The leaderboard's output formats, named where nothing heavy is imported: the command line
offers them as choices before any table library loads. ``render`` implements each one."""

from __future__ import annotations

FORMATS = ("markdown", "csv", "html", "latex", "json")
