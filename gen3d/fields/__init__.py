"""Neural fields: input encodings and the NeRF density/colour field."""

from gen3d.fields.encodings import (EncodingConfig, FrequencyConfig, HashGridConfig, TriplaneConfig,
                                    make_position_encoding)
from gen3d.fields.nerf import FieldConfig, NerfField, contract

__all__ = ["EncodingConfig", "FieldConfig", "FrequencyConfig", "HashGridConfig", "NerfField", "TriplaneConfig",
           "contract", "make_position_encoding"]
