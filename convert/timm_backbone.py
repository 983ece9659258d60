"""The mapping table of a `timm_backbone` checkpoint: its timm family's (`registry.TimmLayout.table`)."""

from __future__ import annotations

from .. import registry
from .rules import Table


def table_for(config) -> Table:
    return registry.resolve(registry.timm_layouts()[config.timm_spec.family].table)(config)
