"""Reading the CLI's messages in tests."""

from __future__ import annotations

import re


def flat(output: str) -> str:
    """The CLI's message without rich's box and line wrapping."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", output).split())
