"""Which variables of a TF-slim checkpoint are the network's: not the step counter, the
optimizer's slots or the EMA shadows that train_image_classifier saves beside them."""

from __future__ import annotations

import re

import numpy as np

from classzoo.errors import UserError

# Saved next to the model variables but not part of the network: the step counter, the slots
# of the optimizers train_image_classifier offers (<var>/Adadelta and _1, /Adagrad, /Adam and _1
# with Adam's beta powers, /Ftrl and _1, /Momentum, /RMSProp and _1; TF1's slot names), and the
# EMA shadows of --moving_average_decay (<var>/ExponentialMovingAverage).
NOT_MODEL = re.compile(
    r"(^|/)(global_step|beta1_power|beta2_power|_CHECKPOINTABLE_OBJECT_GRAPH)$"
    r"|/(ExponentialMovingAverage|(Adadelta|Adagrad|Adam|Ftrl|Momentum|RMSProp)(_\d+)?)$"
)
_EMA = "/ExponentialMovingAverage"


def model_variables(variables, table, use_ema: bool, source: str) -> dict[str, np.ndarray]:
    """The network's variables (no step counter, optimizer slots or EMA shadows); with
    ``use_ema`` each replaced by its ExponentialMovingAverage shadow where there is one."""
    model_vars = {n: v for n, v in variables.items() if not NOT_MODEL.search(n)}
    if use_ema:
        shadows = {n[: -len(_EMA)]: v for n, v in variables.items() if n.endswith(_EMA)}
        if not shadows:
            raise UserError(f"{source} has no ExponentialMovingAverage variables (use_ema=True)")
        model_vars.update((n, v) for n, v in shadows.items() if n in model_vars or n in table)
    return model_vars
