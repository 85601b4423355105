"""A real terminal for tests: one tmux pane whose screen ``capture-pane`` reads back, and whose
keyboard ``type`` drives (progress bars, password prompts)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .tools import require


class Pane:
    """One tmux pane on a private server (its own socket): only this test's server is ever killed."""

    def __init__(self, tmp_path: Path, width: int) -> None:
        self.tmux = require("tmux", "tmux")
        self.socket = tmp_path / "tmux.sock"
        self.width = width

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-S", str(self.socket), *args], capture_output=True, text=True, check=True
        ).stdout

    def start(self, command: str) -> None:
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", str(self.width), "-y", "30", command)

    def type(self, text: str) -> None:
        """Type ``text`` and Enter, as a user would."""
        self._tmux("send-keys", "-l", text)
        self._tmux("send-keys", "Enter")

    def screen(self) -> list[str]:
        """The visible lines, wrapped lines joined (-J), trailing blank lines dropped."""
        lines = self._tmux("capture-pane", "-p", "-J").rstrip("\n").splitlines()
        return [line.rstrip() for line in lines]

    def stop(self) -> None:
        subprocess.run([self.tmux, "-S", str(self.socket), "kill-server"], capture_output=True)
