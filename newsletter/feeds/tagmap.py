"""The `--tag-map` file: which tags a feed's categories become.

    Central Asia: [region/central-asia]   # a category to one or more tags
    Экономика: topic/economy              # one tag
    Promoted: null                        # dropped

Keys match categories whatever their case; a category not listed gets the default tag.
"""

from __future__ import annotations

from pathlib import Path

from newsletter import yamlfile
from newsletter.errors import ContentError


def load_tag_map(path: Path) -> dict[str, tuple[str, ...]]:
    doc = yamlfile.load(path)
    if not isinstance(doc.data, dict):
        raise ContentError(
            f"{path}: expected a mapping of feed category to tag(s), such as "
            "'Central Asia: region/central-asia'."
        )
    mapping: dict[str, tuple[str, ...]] = {}
    for category, tags in doc.data.items():
        line = doc.line(str(category))
        where = f"{path}:{line}" if line else str(path)
        if tags is None:
            tags = []
        elif isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise ContentError(
                f"{where} [{category}]: expected a tag, a list of tags or null; fix that entry."
            )
        mapping[str(category).casefold()] = tuple(t.strip() for t in tags)
    return mapping
