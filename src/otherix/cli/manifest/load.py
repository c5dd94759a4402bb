"""Read ``-f`` inputs and split them into YAML documents (docs/pool-contract.md §12).

Owns the raw side of manifests: reading files, directories (their
``*.yaml``/``*.yml`` files in name order) and stdin (``-``), and loading a
multi-document stream into (node, value) pairs so ``.parse`` can name the
line of every problem; YAML syntax errors are reported with their line.
Aliases are resolved. Called by ``.parse`` and
``otherix.cli.commands.manifests``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ManifestError", "Source", "load_documents", "read_sources"]


class ManifestError(Exception):
    """One or more manifest problems; ``problems`` holds one message each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Source:
    """One ``-f`` input: its display name and its text."""

    name: str
    text: str


def read_sources(paths: Sequence[str], read_stdin: Callable[[], str]) -> list[Source]:
    """Read every ``-f`` argument (file, directory or ``-``) in order."""
    sources: list[Source] = []
    for arg in paths:
        if arg == "-":
            sources.append(Source("<stdin>", read_stdin()))
            continue
        path = Path(arg)
        try:
            if path.is_dir():
                files = sorted(
                    (p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
                    key=lambda p: p.name,
                )
                sources.extend(Source(str(p), p.read_text(encoding="utf-8")) for p in files)
            else:
                sources.append(Source(arg, path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ManifestError([f"manifest: cannot read {arg}: {exc.strerror or exc}"]) from exc
        except UnicodeDecodeError as exc:
            raise ManifestError([f"manifest: {arg} is not UTF-8 text"]) from exc
    return sources


def load_documents(source: Source) -> list[tuple[yaml.Node, Any]]:
    """Each non-empty document of ``source`` as (node, value); aliases resolved."""
    loader = yaml.SafeLoader(source.text)
    docs: list[tuple[yaml.Node, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            value = loader.construct_document(node)
            if value is not None:
                docs.append((node, value))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(
            [f"manifest: {source.name}{where}: YAML syntax error: {problem}"]
        ) from exc
    finally:
        loader.dispose()
    return docs
