"""torch -> Flax weight conversion: the rule engine and one mapping table per source layout."""
