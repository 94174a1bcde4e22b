"""Platform-aware architecture search (issue: TuNAS-style UIB supernet, MnasNet reward, NetAdapt).

- :mod:`.space`: :class:`SearchSpace` (data, like :class:`mobilenets.archs.spec.NetSpec`): the
  decisions, sampling, and the :class:`NetSpec` of each sampled architecture.
- :mod:`.controller`: the independent categorical controller (REINFORCE) and the :class:`Decision`
  it samples.
- :mod:`.rewards`: TuNAS's absolute reward, MnasNet's reward, the reachable-target check.
- :mod:`.schedule`: the RL delay, the controller's learning rate, the op / filter warm-up.
"""
