"""spsamp: an experiment system for speculative decoding research.

Config groups in ``conf/`` are composed by ``run.py``; decoders live in :mod:`spsamp.decoders`
(one module per ``method=`` option), models in :mod:`spsamp.models`, prompt sets in
:mod:`spsamp.data`, and every run's rows in :mod:`spsamp.records`.
"""

__version__ = "0.1.0"
