"""The catalog: optimizer rules written with the rule core, each verified.

Every public factory here has an entry in :data:`REGISTRY`.
"""

from jaxopt_rules.rules._adagrad import adagrad as adagrad
from jaxopt_rules.rules._adam import adam as adam
from jaxopt_rules.rules._adamw import adamw as adamw
from jaxopt_rules.rules._lamb import lamb as lamb
from jaxopt_rules.rules._lion import lion as lion
from jaxopt_rules.rules._normalized_sgd import normalized_sgd as normalized_sgd
from jaxopt_rules.rules._registry import REGISTRY as REGISTRY
from jaxopt_rules.rules._rmsprop import rmsprop as rmsprop
from jaxopt_rules.rules._sgd import sgd as sgd
from jaxopt_rules.rules._spec import RuleSpec as RuleSpec
