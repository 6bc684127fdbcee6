"""MkDocs hook: publish benchmarks/README.md and its plots as part of the site.

The benchmark report lives beside the benchmark scripts, where `make bench` writes
it; this hook adds it (and the files it links to) to the site under `benchmarks/`,
and copies its "Results" section into the Performance page where that page has the
marker `<!-- benchmark-results -->`. The docs thus never hold a second, stale copy
of the figures. Until the report exists, a short page says how to produce it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

_ROOT = Path(__file__).resolve().parent.parent
_BENCH = _ROOT / "benchmarks"
_MARKER = "<!-- benchmark-results -->"
_PLACEHOLDER = """# Benchmark report

The benchmark report has not been generated in this checkout yet. Run `make bench`
(or `make demo`), then rebuild the docs.
"""
_NO_RESULTS = "*No benchmark results in this checkout yet: run `make bench`.*"
_RELATIVE_LINK = re.compile(r"(\]\()(?![a-z]+:|/|#)")


def on_files(files: Files, config: Any) -> Files:
    report = _BENCH / "README.md"
    if not report.exists():
        placeholder = File.generated(
            config, "benchmarks/README.md", content=_PLACEHOLDER
        )
        files.append(placeholder)
        return files
    for path in sorted(_BENCH.iterdir()):
        if path.is_file() and path.suffix in {".md", ".png", ".svg", ".py"}:
            uri = f"benchmarks/{path.name}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if _MARKER not in markdown:
        return markdown
    return markdown.replace(_MARKER, benchmark_results())


def benchmark_results() -> str:
    """The body of the report's "Results" section, with its links made relative to
    the docs root (the report's files are published under `benchmarks/`)."""
    report = _BENCH / "README.md"
    if not report.exists():
        return _NO_RESULTS
    lines = report.read_text(encoding="utf-8").splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"#+ Results\s*$", line)),
        None,
    )
    if start is None:
        return _NO_RESULTS
    level = lines[start].split(" ", 1)[0]
    body: list[str] = []
    for line in lines[start + 1 :]:
        heading = re.match(r"(#+) ", line)
        if heading and len(heading.group(1)) <= len(level):
            break
        body.append(_RELATIVE_LINK.sub(r"\1benchmarks/", line))
    return "\n".join(body).strip()
