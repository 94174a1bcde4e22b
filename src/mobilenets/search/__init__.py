"""Platform-aware architecture search: find a MobileNet for a device and a dataset.

- :mod:`.space`: :class:`SearchSpace` (data, like :class:`mobilenets.archs.spec.NetSpec`): the
  decisions, sampling, and the ordinary :class:`NetSpec` of each architecture in it;
  :mod:`.spaces`: the shipped spaces around MobileNetV4's models, and ``load_space``.
- :mod:`.controller`: the independent categorical controller (REINFORCE) and the :class:`Decision`
  it samples.
- :mod:`.rewards`: TuNAS's absolute reward, MnasNet's reward, the reachable-target check.
- :mod:`.schedule`: the RL delay, the controller's learning rate, the op / filter warm-up.
- :mod:`.supernet`: :class:`~.supernet.Supernet`, the weight-sharing network of a space (one
  sampled path per step, sliced weights, BatchNorm recalibration, the standalone model of a
  path); :mod:`.sliced`: its layers run on a slice of their weights.
- :mod:`.latency`: latency tables measured in a runtime (``LatencyTable.ensure`` adds the parts
  of an architecture outside the space); :mod:`.run`: the TuNAS search.
- :mod:`.netadapt`: NetAdapt, a trained model shrunk layer by layer to a latency target;
  :mod:`.prune`: its width groups, pruned specs and weight transfer.
- :mod:`.data`: the classification splits and batches both read; :mod:`.state`: their resume check.
"""
