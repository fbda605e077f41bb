"""Optimizer state stored block-wise quantized in 8 or 4 bits."""

from jaxopt_rules.quantized._blocks import (
    QuantizedArray as QuantizedArray,
    is_quantized as is_quantized,
    quantize as quantize,
)
from jaxopt_rules.quantized._maps import QuantMap as QuantMap
from jaxopt_rules.quantized._wrapper import (
    FULL_PRECISION_SLOTS as FULL_PRECISION_SLOTS,
    NON_NEGATIVE_SLOTS as NON_NEGATIVE_SLOTS,
    QuantizedState as QuantizedState,
    default_full_precision as default_full_precision,
    default_non_negative as default_non_negative,
    quantized_state as quantized_state,
)
