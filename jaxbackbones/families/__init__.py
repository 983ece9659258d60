"""One file per family: its `FAMILY` registry entry (see `jaxbackbones.registry`) and its offline catalog rows.

Plain data only: these files import nothing of jaxbackbones but the registry's dataclasses and each other's
preprocessing.
"""
