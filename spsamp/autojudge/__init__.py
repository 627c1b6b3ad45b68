"""AutoJudge (Garipov et al. 2025, "AutoJudge: Judge Decoding Without Manual Annotation").

A lossy speculative method: a small classifier (the *judge*) reads the hidden states of the draft p
and the target q at a draft token that differs from the target's greedy choice, and predicts
whether accepting it would change the answer. Labels are mined without annotation
(:mod:`~spsamp.autojudge.mining`): swap the draft's token into the target's greedy answer, let the
target continue, and ask an importance check (:mod:`~spsamp.autojudge.checks`) whether the outcome
changed. Modules: ``checks``, ``mining``,
``features``, ``judge`` (standardised logistic regression / small MLP), ``checkpoint``
(safetensors + JSON sidecar). The decoder is :mod:`spsamp.decoders.autojudge`.
"""
