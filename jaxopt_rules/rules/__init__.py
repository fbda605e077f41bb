"""The catalog: optimizer rules written with the rule core, each verified.

Every public factory here has an entry in :data:`REGISTRY`.
"""

from jaxopt_rules.rules._acprop import acprop as acprop
from jaxopt_rules.rules._adabelief import adabelief as adabelief
from jaxopt_rules.rules._adadelta import adadelta as adadelta
from jaxopt_rules.rules._adafactor import adafactor as adafactor
from jaxopt_rules.rules._adagrad import adagrad as adagrad
from jaxopt_rules.rules._adam import adam as adam
from jaxopt_rules.rules._adam_mini import adam_mini as adam_mini
from jaxopt_rules.rules._adamax import adamax as adamax
from jaxopt_rules.rules._adamaxw import adamaxw as adamaxw
from jaxopt_rules.rules._adamw import adamw as adamw
from jaxopt_rules.rules._adan import adan as adan
from jaxopt_rules.rules._ademamix import ademamix as ademamix
from jaxopt_rules.rules._adopt import adopt as adopt
from jaxopt_rules.rules._amsgrad import amsgrad as amsgrad
from jaxopt_rules.rules._came import came as came
from jaxopt_rules.rules._cautious_adamw import cautious_adamw as cautious_adamw
from jaxopt_rules.rules._cocob import cocob as cocob
from jaxopt_rules.rules._dadapt_adamw import dadapt_adamw as dadapt_adamw
from jaxopt_rules.rules._dog import dog as dog
from jaxopt_rules.rules._dowg import dowg as dowg
from jaxopt_rules.rules._dpsgd import dpsgd as dpsgd
from jaxopt_rules.rules._fromage import fromage as fromage
from jaxopt_rules.rules._galore import galore as galore
from jaxopt_rules.rules._grams import grams as grams
from jaxopt_rules.rules._lamb import lamb as lamb
from jaxopt_rules.rules._laprop import laprop as laprop
from jaxopt_rules.rules._lars import lars as lars
from jaxopt_rules.rules._lbfgs import lbfgs as lbfgs
from jaxopt_rules.rules._lion import lion as lion
from jaxopt_rules.rules._madgrad import madgrad as madgrad
from jaxopt_rules.rules._mars import mars as mars
from jaxopt_rules.rules._momo import momo as momo
from jaxopt_rules.rules._momo_adam import momo_adam as momo_adam
from jaxopt_rules.rules._muon import muon as muon
from jaxopt_rules.rules._nadam import nadam as nadam
from jaxopt_rules.rules._nadamw import nadamw as nadamw
from jaxopt_rules.rules._noisy_sgd import noisy_sgd as noisy_sgd
from jaxopt_rules.rules._normalized_sgd import normalized_sgd as normalized_sgd
from jaxopt_rules.rules._novograd import novograd as novograd
from jaxopt_rules.rules._optimistic_adam import optimistic_adam as optimistic_adam
from jaxopt_rules.rules._optimistic_adam_v2 import (
    optimistic_adam_v2 as optimistic_adam_v2,
)
from jaxopt_rules.rules._optimistic_gradient_descent import (
    optimistic_gradient_descent as optimistic_gradient_descent,
)
from jaxopt_rules.rules._polyak_sgd import polyak_sgd as polyak_sgd
from jaxopt_rules.rules._prodigy import prodigy as prodigy
from jaxopt_rules.rules._psgd_kron import psgd_kron as psgd_kron
from jaxopt_rules.rules._radam import radam as radam
from jaxopt_rules.rules._registry import REGISTRY as REGISTRY
from jaxopt_rules.rules._rmsprop import rmsprop as rmsprop
from jaxopt_rules.rules._rprop import rprop as rprop
from jaxopt_rules.rules._schedule_free_adamw import (
    schedule_free_adamw as schedule_free_adamw,
)
from jaxopt_rules.rules._schedule_free_radam import (
    schedule_free_radam as schedule_free_radam,
)
from jaxopt_rules.rules._schedule_free_sgd import schedule_free_sgd as schedule_free_sgd
from jaxopt_rules.rules._sgd import sgd as sgd
from jaxopt_rules.rules._shampoo import shampoo as shampoo
from jaxopt_rules.rules._sign_sgd import sign_sgd as sign_sgd
from jaxopt_rules.rules._signum import signum as signum
from jaxopt_rules.rules._simplified_ademamix import (
    simplified_ademamix as simplified_ademamix,
)
from jaxopt_rules.rules._sm3 import sm3 as sm3
from jaxopt_rules.rules._soap import soap as soap
from jaxopt_rules.rules._sophia import sophia as sophia
from jaxopt_rules.rules._sophia_g import sophia_g as sophia_g
from jaxopt_rules.rules._spam import spam as spam
from jaxopt_rules.rules._spec import (
    AuthorsReference as AuthorsReference,
    RuleSpec as RuleSpec,
)
from jaxopt_rules.rules._tiger import tiger as tiger
from jaxopt_rules.rules._yogi import yogi as yogi
