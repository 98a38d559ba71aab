"""The street↔shop domain mapping: which catalogue values match a street photo's category and colour labels.

Street photos (Clothing Attributes) and shop photos (Fashion Product Images) are labelled in different
vocabularies: 7 garment categories and 11 colour tags on one side, ~75 articleTypes and ~45 baseColours on the
other. A :class:`DomainMapping` (YAML; the shipped one is ``street2shop.yaml`` beside this module) maps each street
label to the *set* of catalogue values a shopper would accept for it. It defines relevance in the real
street-to-shop evaluation, the shared label space of cross-domain training and the attribute-aware re-ranking of
search hits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fashionlens.data.records import CLASS_PREFIX, TAG_PREFIX, Manifest
from fashionlens.errors import ConfigError, DataError

DEFAULT_MAPPING = Path(__file__).with_name("street2shop.yaml")
"""The shipped Clothing Attributes → Fashion Product Images mapping."""


@dataclass(frozen=True)
class DomainMapping:
    """Street labels → sets of catalogue values.

    Attributes:
        street_category: The street manifest's class head holding the garment category (``category``).
        catalogue_category: The catalogue field a street category maps to (``articleType``).
        catalogue_colour: The catalogue field a street colour tag maps to (``baseColour``).
        categories: Street category → catalogue categories that count as the same kind of garment.
        colours: Street colour tag → catalogue colours that count as that colour.
        source: Where the mapping was read from (named in errors).
    """

    street_category: str
    catalogue_category: str
    catalogue_colour: str
    categories: Mapping[str, frozenset[str]]
    colours: Mapping[str, frozenset[str]]
    source: str = "<mapping>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<mapping>") -> DomainMapping:
        """Build and structurally check a mapping from its YAML document.

        Raises:
            ConfigError: A missing section, or a label mapped to something other than a non-empty list of names.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"domain mapping {source} must be a YAML mapping with street, catalogue, categories "
                              f"and colours sections")
        street, catalogue = data.get("street") or {}, data.get("catalogue") or {}
        missing = [name for name, value in (("street.category", street.get("category")),
                                            ("catalogue.category", catalogue.get("category")),
                                            ("catalogue.colour", catalogue.get("colour"))) if not value]
        if missing:
            raise ConfigError(f"domain mapping {source} lacks {', '.join(missing)}")
        return cls(str(street["category"]), str(catalogue["category"]), str(catalogue["colour"]),
                   _label_sets(data.get("categories"), "categories", source),
                   _label_sets(data.get("colours"), "colours", source), source)

    def check_catalogue(self, values: Mapping[str, Iterable[Any]]) -> None:
        """Check every mapped catalogue name exists in the catalogue it is used with.

        Args:
            values: The catalogue's values by field (at least the category and colour fields).

        Raises:
            DataError: A catalogue field is absent, or the mapping names a value the catalogue lacks (named, with
                the mapping file).
        """
        for field, table in ((self.catalogue_category, self.categories), (self.catalogue_colour, self.colours)):
            if field not in values:
                raise DataError(f"the catalogue has no '{field}' field, which domain mapping {self.source} maps to")
            known = {str(value) for value in values[field] if value is not None and str(value) not in ("", "nan")}
            unknown = sorted({name for names in table.values() for name in names} - known)
            if unknown:
                raise DataError(f"domain mapping {self.source} names {field} value(s) the catalogue lacks: "
                                f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}")

    def catalogue_categories(self, street_category: str) -> frozenset[str]:
        """Catalogue categories matching a street category (empty when it is not mapped)."""
        return self.categories.get(street_category, frozenset())

    def catalogue_colours(self, colour_tags: Iterable[str]) -> frozenset[str]:
        """Catalogue colours matching any of the street colour tags (empty when none is mapped)."""
        return frozenset().union(*(self.colours.get(tag, frozenset()) for tag in colour_tags))

    def street_labels(self, manifest: Manifest) -> tuple[list[str | None], list[frozenset[str]]]:
        """Each street row's mapped category (``None`` when unlabelled or unmapped) and its positive colour tags.

        Raises:
            DataError: The manifest has no ``street_category`` head.
        """
        frame = manifest.frame
        column = CLASS_PREFIX + self.street_category
        if column not in frame.columns:
            raise DataError(f"manifest '{manifest.name}' has no '{self.street_category}' class head, which domain "
                            f"mapping {self.source} reads street categories from")
        categories = [str(value) if isinstance(value, str) and value in self.categories else None
                      for value in frame[column].tolist()]
        tags = [tag for tag in self.colours if TAG_PREFIX + tag in frame.columns]
        positive = (frame[[TAG_PREFIX + tag for tag in tags]].to_numpy(dtype=float) == 1.0 if tags
                    else np.zeros((len(frame), 0), dtype=bool))
        colours = [frozenset(tag for tag, on in zip(tags, row, strict=True) if on) for row in positive]
        return categories, colours


def _label_sets(section: Any, name: str, source: str) -> dict[str, frozenset[str]]:
    if not isinstance(section, Mapping) or not section:
        raise ConfigError(f"domain mapping {source}: '{name}' must map each street label to a list of names")
    out = {}
    for label, names in section.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"domain mapping {source}: {name}.{label} must be a non-empty list of names, "
                              f"got {names!r}")
        out[str(label)] = frozenset(names)
    return out


def load_domain_mapping(path: str | Path | None = None) -> DomainMapping:
    """Read a domain mapping YAML (``None``: the shipped Clothing Attributes → Fashion Product Images one).

    Raises:
        ConfigError: Unreadable file, invalid YAML, or a malformed mapping (see :meth:`DomainMapping.from_dict`).
    """
    file = Path(path) if path is not None else DEFAULT_MAPPING
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read domain mapping {file}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"domain mapping {file} is not valid YAML: {str(error).splitlines()[0]}") from error
    return DomainMapping.from_dict(data, str(file))
