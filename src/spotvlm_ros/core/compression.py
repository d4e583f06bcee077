"""Compression of the context history into the SVLM's prompt budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spotvlm_ros.core.context import ContextReplacement, HistoryEntry
from spotvlm_ros.core.types import Source, Stamp, seconds_between

CountTokens = Callable[[str], int]


def count_words(text: str) -> int:
    """A tokenizer-free stand-in for ``count_tokens``: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class PromptTemplate:
    """How history turns are written into the SVLM's prompt.

    ``entry`` is formatted with ``source`` (a name from ``source_names``), ``age`` (seconds
    before the current frame), ``question`` and ``answer``.
    """

    header: str = "Earlier observations of this scene (oldest first):"
    entry: str = "- from the {source}, {age:.1f} s ago: {answer}"
    footer: str = "Use them as hints; answer for the current image."
    lvlm_name: str = "cloud model"
    svlm_name: str = "on-board model"

    def source_name(self, source: Source) -> str:
        """The name under which turns of ``source`` are shown."""
        return self.lvlm_name if source is Source.LVLM else self.svlm_name

    def render_entry(self, entry: HistoryEntry, now: Stamp, answer: str | None = None) -> str:
        """One history line for ``entry`` seen from the frame at ``now``."""
        return self.entry.format(
            source=self.source_name(entry.source),
            age=max(0.0, seconds_between(entry.stamp, now)),
            question=entry.question,
            answer=entry.answer if answer is None else answer,
        )

    def render(self, lines: Sequence[str]) -> str:
        """The whole context text for the given entry lines (empty when there are none)."""
        if not lines:
            return ""
        parts = [self.header, *lines, self.footer] if self.footer else [self.header, *lines]
        return "\n".join(p for p in parts if p)


@dataclass(frozen=True)
class CompressedContext:
    """The context text and what it holds."""

    text: str
    entries: tuple[HistoryEntry, ...]  # the turns shown (possibly with a shortened answer)
    dropped: tuple[HistoryEntry, ...]  # the turns left out to fit the budget
    truncated: bool  # whether an answer had to be shortened
    tokens: int


class ContextCompressor:
    """Fits the history into ``budget`` tokens: drops the oldest SVLM turns first and the
    cloud turn last, then shortens the remaining answer word by word."""

    def __init__(
        self,
        budget: int,
        count_tokens: CountTokens = count_words,
        template: PromptTemplate | None = None,
    ) -> None:
        if budget < 0:
            raise ValueError(f"budget must be >= 0 tokens, got {budget}")
        self.budget = budget
        self.count_tokens = count_tokens
        self.template = template or PromptTemplate()

    def compress(self, history: Sequence[HistoryEntry], now: Stamp) -> CompressedContext:
        """The context text for ``history`` (oldest first) seen from the frame at ``now``."""
        kept = list(history)
        dropped: list[HistoryEntry] = []
        while kept:
            text = self.template.render([self.template.render_entry(e, now) for e in kept])
            tokens = self.count_tokens(text)
            if tokens <= self.budget:
                return CompressedContext(text, tuple(kept), tuple(dropped), False, tokens)
            if len(kept) == 1:
                break
            dropped.append(kept.pop(self._drop_index(kept)))
        if kept:
            shortened = self._shorten(kept[0], now)
            if shortened is not None:
                text, tokens = shortened
                return CompressedContext(text, tuple(kept), tuple(dropped), True, tokens)
            dropped.append(kept.pop())
        return CompressedContext("", (), tuple(dropped), False, 0)

    def for_frame(self, history: ContextReplacement, stamp: Stamp) -> CompressedContext:
        """The context of the frame at ``stamp``: the history as shown to that frame (turns
        of earlier frames only, never its own cloud answer that may already have arrived;
        the cloud turn within ``delta`` of it), compressed as seen from it. The live SVLM and
        the offline replay both build it here."""
        return self.compress(history.entries(before=stamp), stamp)

    @staticmethod
    def _drop_index(kept: Sequence[HistoryEntry]) -> int:
        # Oldest SVLM turn first; the cloud turn only when nothing else is left to drop.
        for i, entry in enumerate(kept):
            if entry.source is not Source.LVLM:
                return i
        return 0

    def _shorten(self, entry: HistoryEntry, now: Stamp) -> tuple[str, int] | None:
        words = entry.answer.split()
        # Binary search for the longest prefix of the answer that fits.
        lo, hi, best = 1, len(words) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            answer = " ".join(words[:mid]) + " ..."
            text = self.template.render([self.template.render_entry(entry, now, answer)])
            tokens = self.count_tokens(text)
            if tokens <= self.budget:
                best, lo = (text, tokens), mid + 1
            else:
                hi = mid - 1
        return best

    def chat_messages(self, history: Sequence[HistoryEntry], now: Stamp) -> list[dict[str, str]]:
        """The kept turns as previous chat turns (Qwen chat structure), oldest first.

        Each turn is a user message (its age, source and question) and the assistant's
        answer; the same turns as :meth:`compress` keeps.
        """
        compressed = self.compress(history, now)
        messages: list[dict[str, str]] = []
        for entry in compressed.entries:
            age = max(0.0, seconds_between(entry.stamp, now))
            source = self.template.source_name(entry.source)
            messages.append(
                {
                    "role": "user",
                    "content": f"[{age:.1f} s ago, answered by the {source}] "
                    f"{entry.question}".strip(),
                }
            )
            messages.append({"role": "assistant", "content": entry.answer})
        return messages
