"""Neural fields: input encodings, the NeRF density/colour field and its space-time (4D) variant."""

from gen3d.fields.encodings import (EncodingConfig, FrequencyConfig, HashGridConfig, TriplaneConfig,
                                    make_position_encoding)
from gen3d.fields.nerf import FieldConfig, NerfField, contract
from gen3d.fields.spacetime import FieldAtTime, SpacetimeConfig, SpacetimeField, field_megabytes

__all__ = ["EncodingConfig", "FieldAtTime", "FieldConfig", "FrequencyConfig", "HashGridConfig", "NerfField",
           "SpacetimeConfig", "SpacetimeField", "TriplaneConfig", "contract", "field_megabytes",
           "make_position_encoding"]
